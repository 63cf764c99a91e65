#!/usr/bin/env python3
"""Generate binary hash codes for benchmarking gdh-index.

Output file format (shared with the Swift side; it must stay exact):

    raw bytes, no header, N codes laid end to end, each code B/8 bytes,
    most significant byte first.

The bytes of a code are therefore exactly the bytes of its hexadecimal form
(``bytes.fromhex(hex_code)``).  For FAISS the same bytes are used unchanged as
a ``uint8`` row; Hamming distance does not depend on byte order.

Two kinds of data set are supported:

``random``
    Every bit is an independent fair coin.

``clustered``
    ``--centres`` centre codes are drawn uniformly at random from a generator
    whose seed depends only on ``(bits, centres)``.  A database file and a
    query file generated with different ``--seed`` values therefore share the
    same centres, so queries land near database codes.  Each output code picks
    a centre uniformly at random (using the ``--seed`` generator) and flips
    each of its bits independently with probability ``--flip``.

Codes are produced in fixed-size chunks, so memory use is bounded whatever
``N`` is, and :func:`generate` and :func:`write_codes` yield byte-identical
output for the same parameters.

Examples::

    python3 Tools/gen_codes.py --n 10000000 --bits 64 --kind clustered \\
        --seed 1 --out bench-data/db.u8
    python3 Tools/gen_codes.py --n 1000 --bits 64 --kind clustered \\
        --seed 2 --out bench-data/queries.u8

The module can also be imported; see :func:`generate` (in-memory, for small
sizes) and :func:`write_codes` (streams to a file).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Iterator

import numpy as np

KINDS = ("random", "clustered")

#: Number of random draws per chunk (codes per chunk x bits).  Keeps the
#: temporary float32 flip-probability array at about 64 MiB.
_CHUNK_BITS = 1 << 24

#: Domain-separation constant mixed into the centre seed ("gdhC").
_CENTRE_SEED_TAG = 0x67646843


def _check_params(n: int, bits: int, kind: str, centres: int, flip: float) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if bits <= 0 or bits % 8 != 0:
        raise ValueError(f"bits must be a positive multiple of 8, got {bits}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "clustered":
        if centres <= 0:
            raise ValueError(f"centres must be > 0, got {centres}")
        if not 0.0 <= flip <= 1.0:
            raise ValueError(f"flip must be in [0, 1], got {flip}")


def chunk_rows(bits: int) -> int:
    """Number of codes generated per chunk for codes of ``bits`` bits."""
    return max(1, _CHUNK_BITS // bits)


def centre_codes(bits: int, centres: int) -> np.ndarray:
    """Return the ``(centres, bits // 8)`` uint8 centre codes.

    The generator is seeded from ``(bits, centres)`` only, never from the
    per-file seed, so every file with the same ``bits`` and ``centres`` uses
    the same centres.
    """
    rng = np.random.default_rng([_CENTRE_SEED_TAG, bits, centres])
    return rng.integers(0, 256, size=(centres, bits // 8), dtype=np.uint8)


def iter_chunks(
    n: int,
    bits: int,
    kind: str,
    seed: int,
    centres: int = 1000,
    flip: float = 0.08,
) -> Iterator[np.ndarray]:
    """Yield successive ``(rows, bits // 8)`` uint8 arrays totalling ``n`` codes."""
    _check_params(n, bits, kind, centres, flip)
    nbytes = bits // 8
    rng = np.random.default_rng(seed)
    centre_table = centre_codes(bits, centres) if kind == "clustered" else None
    step = chunk_rows(bits)
    done = 0
    while done < n:
        rows = min(step, n - done)
        if kind == "random":
            chunk = np.frombuffer(rng.bytes(rows * nbytes), dtype=np.uint8)
            chunk = chunk.reshape(rows, nbytes)
        else:
            which = rng.integers(0, centres, size=rows)
            chunk = centre_table[which]
            if flip > 0.0:
                # float32 draws: half the memory and time of float64, and
                # 24 bits of resolution is ample for a flip probability.
                mask = rng.random((rows, bits), dtype=np.float32) < flip
                chunk ^= np.packbits(mask, axis=1)
        yield chunk
        done += rows


def generate(
    n: int,
    bits: int,
    kind: str,
    seed: int,
    centres: int = 1000,
    flip: float = 0.08,
) -> np.ndarray:
    """Return ``n`` codes as an ``(n, bits // 8)`` uint8 array (MSB first).

    Intended for small ``n``; the result is byte-identical to what
    :func:`write_codes` writes for the same parameters.
    """
    out = np.empty((n, bits // 8), dtype=np.uint8)
    pos = 0
    for chunk in iter_chunks(n, bits, kind, seed, centres, flip):
        out[pos:pos + len(chunk)] = chunk
        pos += len(chunk)
    return out


def write_codes(
    path: str,
    n: int,
    bits: int,
    kind: str,
    seed: int,
    centres: int = 1000,
    flip: float = 0.08,
) -> int:
    """Stream ``n`` codes to ``path`` in bounded memory; return bytes written.

    The data is written to ``path + ".tmp"`` and renamed into place at the
    end, so an interrupted run never leaves a truncated file under ``path``.
    """
    tmp = path + ".tmp"
    written = 0
    with open(tmp, "wb") as fh:
        for chunk in iter_chunks(n, bits, kind, seed, centres, flip):
            fh.write(chunk.tobytes())
            written += chunk.nbytes
    os.replace(tmp, path)
    return written


def read_codes(path: str, bits: int) -> np.ndarray:
    """Read a codes file into an ``(N, bits // 8)`` uint8 array."""
    nbytes = bits // 8
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % nbytes != 0:
        raise ValueError(
            f"{path}: size {raw.size} is not a multiple of {nbytes} bytes"
        )
    return raw.reshape(-1, nbytes)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Generate binary hash codes (raw bytes, MSB first, no header).",
    )
    p.add_argument("--n", type=int, required=True, help="number of codes to generate")
    p.add_argument("--bits", type=int, required=True,
                   help="bits per code (positive multiple of 8, e.g. 64 or 128)")
    p.add_argument("--kind", choices=KINDS, default="random",
                   help="random: uniform bits; clustered: noisy copies of shared "
                        "centres (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1,
                   help="seed for the per-file generator (default: %(default)s)")
    p.add_argument("--out", required=True, help="output file path")
    p.add_argument("--centres", type=int, default=1000,
                   help="clustered only: number of centre codes; centres depend "
                        "only on (bits, centres) (default: %(default)s)")
    p.add_argument("--flip", type=float, default=0.08,
                   help="clustered only: per-bit flip probability "
                        "(default: %(default)s)")
    p.add_argument("--quiet", action="store_true",
                   help="do not print the timing summary on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_params(args.n, args.bits, args.kind, args.centres, args.flip)
    except ValueError as exc:
        print(f"gen_codes: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    written = write_codes(args.out, args.n, args.bits, args.kind, args.seed,
                          args.centres, args.flip)
    elapsed = time.perf_counter() - start
    if not args.quiet:
        print(f"gen_codes: wrote {args.n} x {args.bits}-bit {args.kind} codes "
              f"({written} bytes) to {args.out} in {elapsed:.2f} s",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
