#!/usr/bin/env python3
"""Time FAISS binary indexes on a codes file and a queries file.

Both files use the gdh-index benchmark format written by ``gen_codes.py``:
raw bytes, no header, ``bits / 8`` bytes per code.  The bytes are used
unchanged as FAISS ``uint8`` rows (Hamming distance is byte-order independent).

Three things are measured, one query at a time (a Python loop calling
``index.search(q[i:i+1], k)``, each call timed with ``time.perf_counter_ns``):

* ``IndexBinaryFlat`` k-NN: exhaustive and exact; also the ground truth.
* ``IndexBinaryMultiHash`` k-NN: FAISS's multi-index hashing.  It splits
  each code into ``nhash`` substrings of ``b`` bits and only checks database
  codes whose substring lies within ``nflip`` bit flips of the query's
  substring in at least one table.  That probe radius is fixed, so results
  can be inexact or short (fewer than k hits); ``exact_fraction`` says how
  often its k distances equal Flat's.
* ``IndexBinaryFlat`` range search (only with ``--radius``).

Radius semantics: ``--radius R`` is inclusive (distance <= R), the usual
Hamming-ball convention.  FAISS binary range search keeps ``distance <
radius`` (strict), so ``R + 1`` is passed to FAISS.

Timings include the Python-to-FAISS call overhead (some microseconds per
query), which is small next to a flat scan of a million codes but matters
for sub-millisecond results; ``call_overhead_us`` estimates it.

``--truth-out FILE`` writes the Flat k-NN distances as a little-endian
``uint16`` array of shape ``(Q, k)`` (row-major, no header) so that another
program can check its answers.  Missing results (only when N < k) are
written as 65535.

With ``--json`` a single JSON object is printed on stdout::

    {"n", "bits", "k", "nqueries", "threads", "faiss_version",
     "call_overhead_us",
     "flat": {"build_s", "knn_ms": {"median", "mean", "p90", "p99"}},
     "multihash": {"nhash", "b", "nflip", "build_s", "knn_ms": {...},
                   "exact_fraction", "short_fraction"},
     "flat_range": {"radius", "faiss_radius", "ms": {...},
                    "mean_results"}}          # only with --radius

Otherwise a readable table is printed.  Progress messages go to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

try:
    import faiss
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("bench_faiss: the faiss module is missing; pip install faiss-cpu numpy")

#: Largest substring FAISS-style multi-index hashing is allowed to use here.
MAX_SUBSTRING_BITS = 24

#: Distance FAISS reports for an empty k-NN slot (INT32_MAX).
FAISS_MISSING = np.iinfo(np.int32).max


def log(msg: str) -> None:
    """Print a progress message on stderr."""
    print(f"bench_faiss: {msg}", file=sys.stderr, flush=True)


#: Zero bytes kept after the last code of every array handed to FAISS.
#: IndexBinaryMultiHash extracts each substring with an unaligned 8-byte load
#: starting at the substring's first byte, which for the last code of an
#: array reads up to 7 bytes past its end; the padding keeps that in bounds.
_TAIL_PAD = 8


def load_codes(path: str, bits: int, limit: int | None = None) -> np.ndarray:
    """Load a codes file as a C-contiguous ``(N, bits // 8)`` uint8 array.

    The array is a view on a buffer with ``_TAIL_PAD`` extra zero bytes.
    """
    nbytes = bits // 8
    size = os.path.getsize(path)
    if size % nbytes != 0:
        raise ValueError(f"{path}: size {size} is not a multiple of {nbytes} bytes")
    count = size // nbytes
    if limit is not None:
        count = min(count, limit)
    buf = np.zeros(count * nbytes + _TAIL_PAD, dtype=np.uint8)
    with open(path, "rb") as fh:
        got = fh.readinto(memoryview(buf)[:count * nbytes])
    if got != count * nbytes:
        raise ValueError(f"{path}: short read ({got} of {count * nbytes} bytes)")
    return buf[:count * nbytes].reshape(count, nbytes)


def choose_substrings(bits: int, n: int) -> tuple[int, int]:
    """Return ``(nhash, b)`` for multi-index hashing of ``n`` codes.

    ``m = round(bits / log2(n))`` substrings (the classic MIH choice), raised
    if needed so that no substring exceeds ``MAX_SUBSTRING_BITS`` bits, and
    kept within ``[1, bits]``.  FAISS requires ``nhash * b <= d``, so
    ``b = bits // m`` (the remaining ``bits % m`` bits are not hashed).
    """
    log2n = math.log2(max(n, 2))
    m = max(1, round(bits / log2n))
    m = max(m, math.ceil(bits / MAX_SUBSTRING_BITS))
    m = min(m, bits)
    return m, bits // m


def summarise_ns(samples_ns: list[int] | np.ndarray) -> dict[str, float]:
    """Median, mean, p90 and p99 of nanosecond samples, in milliseconds."""
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    if ms.size == 0:
        return {"median": float("nan"), "mean": float("nan"),
                "p90": float("nan"), "p99": float("nan")}
    return {
        "median": float(np.median(ms)),
        "mean": float(ms.mean()),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
    }


def time_knn(index, queries: np.ndarray, k: int, warmup: int
             ) -> tuple[list[int], np.ndarray]:
    """Run k-NN one query at a time; return per-query ns and (Q, k) distances."""
    for i in range(min(warmup, len(queries))):
        index.search(queries[i:i + 1], k)
    times = []
    dists = np.empty((len(queries), k), dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(len(queries)):
        q = queries[i:i + 1]
        t0 = clock()
        d, _ = index.search(q, k)
        t1 = clock()
        times.append(t1 - t0)
        dists[i] = d[0]
    return times, dists


def time_range(index, queries: np.ndarray, faiss_radius: int, warmup: int
               ) -> tuple[list[int], int]:
    """Run range search one query at a time; return per-query ns and hit total."""
    for i in range(min(warmup, len(queries))):
        index.range_search(queries[i:i + 1], faiss_radius)
    times = []
    total = 0
    clock = time.perf_counter_ns
    for i in range(len(queries)):
        q = queries[i:i + 1]
        t0 = clock()
        lims, _, _ = index.range_search(q, faiss_radius)
        t1 = clock()
        times.append(t1 - t0)
        total += int(lims[-1])
    return times, total


def call_overhead_us(bits: int, reps: int = 2000) -> float:
    """Median cost of a k=1 search on a one-code Flat index, in microseconds.

    This approximates the fixed Python/SWIG cost included in every timing.
    """
    nbytes = bits // 8
    tiny = faiss.IndexBinaryFlat(bits)
    tiny.add(np.zeros((1, nbytes), dtype=np.uint8))
    q = np.zeros((1, nbytes), dtype=np.uint8)
    times = []
    clock = time.perf_counter_ns
    for _ in range(reps):
        t0 = clock()
        tiny.search(q, 1)
        times.append(clock() - t0)
    return float(np.median(times)) / 1e3


def exact_fraction(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of rows whose sorted distance lists are identical."""
    if len(reference) == 0:
        return float("nan")
    same = np.all(np.sort(reference, axis=1) == np.sort(candidate, axis=1), axis=1)
    return float(same.mean())


def write_truth(path: str, dists: np.ndarray) -> None:
    """Write ``(Q, k)`` distances as little-endian uint16, row-major, no header."""
    out = np.where(dists >= FAISS_MISSING, 65535, dists)
    out = np.clip(out, 0, 65535).astype("<u2")
    tmp = path + ".tmp"
    out.tofile(tmp)
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> dict:
    """Run the whole benchmark and return the result dictionary."""
    if args.bits <= 0 or args.bits % 8 != 0:
        raise ValueError(f"--bits must be a positive multiple of 8, got {args.bits}")
    if args.k <= 0:
        raise ValueError(f"--k must be > 0, got {args.k}")
    faiss.omp_set_num_threads(args.threads)

    codes = load_codes(args.codes, args.bits)
    queries = load_codes(args.queries, args.bits, args.nqueries)
    n, nq = len(codes), len(queries)
    if n == 0 or nq == 0:
        raise ValueError(f"need at least one code and one query (got {n}, {nq})")
    log(f"{n} codes, {nq} queries, {args.bits} bits, k={args.k}, "
        f"threads={args.threads}")

    result: dict = {
        "n": n, "bits": args.bits, "k": args.k, "nqueries": nq,
        "threads": args.threads, "faiss_version": faiss.__version__,
        "call_overhead_us": call_overhead_us(args.bits),
    }

    # --- IndexBinaryFlat -------------------------------------------------
    t0 = time.perf_counter()
    flat = faiss.IndexBinaryFlat(args.bits)
    flat.add(codes)
    flat_build = time.perf_counter() - t0
    log(f"flat built in {flat_build:.3f} s; timing k-NN")
    flat_times, flat_d = time_knn(flat, queries, args.k, args.warmup)
    result["flat"] = {"build_s": flat_build, "knn_ms": summarise_ns(flat_times)}
    if args.truth_out:
        write_truth(args.truth_out, flat_d)
        log(f"wrote truth distances ({nq} x {args.k} uint16 LE) to {args.truth_out}")

    # --- IndexBinaryFlat range search --------------------------------------
    if args.radius is not None:
        if not hasattr(flat, "range_search"):
            log("this FAISS build has no IndexBinaryFlat.range_search; skipping range")
        else:
            faiss_radius = args.radius + 1  # FAISS keeps distance < radius
            log(f"timing flat range search, radius {args.radius} (inclusive)")
            try:
                r_times, hits = time_range(flat, queries, faiss_radius, args.warmup)
            except RuntimeError as exc:
                log(f"flat range_search failed ({exc}); skipping range")
            else:
                result["flat_range"] = {
                    "radius": args.radius,
                    "faiss_radius": faiss_radius,
                    "ms": summarise_ns(r_times),
                    "mean_results": hits / nq,
                }

    # --- IndexBinaryMultiHash --------------------------------------------
    if args.nhash is not None:
        nhash = args.nhash
        b = args.hash_bits if args.hash_bits is not None else args.bits // nhash
    else:
        nhash, b = choose_substrings(args.bits, n)
        if args.hash_bits is not None:
            b = args.hash_bits
    # Build and time the hash index only after Flat so the two never hold
    # their memory at the same moment longer than necessary.
    del flat
    t0 = time.perf_counter()
    mh = faiss.IndexBinaryMultiHash(args.bits, nhash, b)
    mh.nflip = args.nflip
    mh.add(codes)
    mh_build = time.perf_counter() - t0
    log(f"multihash (nhash={nhash}, b={b}, nflip={args.nflip}) built in "
        f"{mh_build:.3f} s; timing k-NN")
    mh_times, mh_d = time_knn(mh, queries, args.k, args.warmup)
    result["multihash"] = {
        "nhash": nhash,
        "b": b,
        "nflip": args.nflip,
        "build_s": mh_build,
        "knn_ms": summarise_ns(mh_times),
        "exact_fraction": exact_fraction(flat_d, mh_d),
        "short_fraction": float(np.any(mh_d >= FAISS_MISSING, axis=1).mean()),
    }
    return result


def fmt_ms(stats: dict[str, float]) -> str:
    return (f"{stats['median']:9.3f} {stats['mean']:9.3f} "
            f"{stats['p90']:9.3f} {stats['p99']:9.3f}")


def print_table(res: dict) -> None:
    """Print the result dictionary as a human-readable table."""
    print(f"n={res['n']}  bits={res['bits']}  k={res['k']}  "
          f"queries={res['nqueries']}  threads={res['threads']}  "
          f"faiss={res['faiss_version']}  "
          f"call overhead ~{res['call_overhead_us']:.1f} us")
    print(f"{'':28} {'build s':>8} {'median':>9} {'mean':>9} {'p90':>9} {'p99':>9}  (ms)")
    flat = res["flat"]
    print(f"{'Flat k-NN':28} {flat['build_s']:8.3f} {fmt_ms(flat['knn_ms'])}")
    mh = res["multihash"]
    label = f"MultiHash {mh['nhash']}x{mh['b']} nflip={mh['nflip']}"
    print(f"{label:28} {mh['build_s']:8.3f} {fmt_ms(mh['knn_ms'])}")
    if "flat_range" in res:
        fr = res["flat_range"]
        print(f"{'Flat range r<=' + str(fr['radius']):28} {'':8} {fmt_ms(fr['ms'])}")
    print(f"MultiHash exact fraction: {mh['exact_fraction']:.4f}  "
          f"(short result lists: {mh['short_fraction']:.4f})")
    if "flat_range" in res:
        print(f"Flat range mean results per query: {res['flat_range']['mean_results']:.2f}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Time FAISS IndexBinaryFlat and IndexBinaryMultiHash, one query at a time.",
    )
    p.add_argument("--codes", required=True, help="database codes file (raw bytes, bits/8 per code)")
    p.add_argument("--queries", required=True, help="query codes file (same format)")
    p.add_argument("--bits", type=int, required=True, help="bits per code (multiple of 8)")
    p.add_argument("--k", "-k", type=int, default=10, help="neighbours per query (default: %(default)s)")
    p.add_argument("--radius", type=int, default=None,
                   help="also time Flat range search with this inclusive Hamming radius")
    p.add_argument("--threads", type=int, default=1,
                   help="FAISS OpenMP threads (faiss.omp_set_num_threads; default: %(default)s)")
    p.add_argument("--nqueries", type=int, default=None,
                   help="use only the first Q queries of the queries file (default: all)")
    p.add_argument("--nflip", type=int, default=2,
                   help="IndexBinaryMultiHash.nflip, bit flips probed per substring "
                        "(FAISS default 0; default here: %(default)s)")
    p.add_argument("--nhash", type=int, default=None,
                   help="override the number of MultiHash substrings "
                        "(default: round(bits/log2(N)), at most 24 bits each)")
    p.add_argument("--hash-bits", type=int, default=None,
                   help="override MultiHash bits per substring (default: bits // nhash)")
    p.add_argument("--warmup", type=int, default=5,
                   help="untimed warm-up queries before each timed loop (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--truth-out", default=None,
                   help="write Flat k-NN distances here as uint16 LE, shape (Q, k)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        res = run(args)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"bench_faiss: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(res, sys.stdout)
        sys.stdout.write("\n")
    else:
        print_table(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
