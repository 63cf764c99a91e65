#!/usr/bin/env python3
"""Run the gdh-index search benchmark against FAISS and our engine in one go.

For every configuration (database size n x code width bits x data kind) this

1. generates the database codes (seed 1) and the queries (seed 2; clustered
   data shares its centres between the two) with ``gen_codes.py``, reusing
   files in ``--data-dir`` that already exist with the right size;
2. runs ``bench_faiss.py --json --truth-out TRUTH`` on them in a subprocess
   (FAISS IndexBinaryFlat, IndexBinaryMultiHash, Flat range search);
3. runs our engine::

       GDH bench search --codes DB --queries Q --bits B -k K --radius R \\
           --json --truth TRUTH

   which must print one JSON object on stdout::

       {"n": int, "bits": int, "m": int, "build_s": float,
        "knn_ms":   {"median": float, "mean": float, "p90": float, "p99": float},
        "paths":    {"mih": int, "scan": int},
        "range_ms": {"median": float, "mean": float, "p90": float, "p99": float},
        "mismatches": int}

   ``TRUTH`` holds FAISS Flat's k-NN distances, uint16 little-endian, shape
   (queries, k).  The radius is inclusive (distance <= R).

A failing step (missing binary, non-zero exit, bad JSON, timeout) is reported
and the run carries on with the next configuration.

At the end a Markdown report is printed (and appended to ``--out`` if given):
a header with machine information, date (UTC), the command line and
``OPENBLAS_CORETYPE`` if set, then one table row per configuration.

Examples (from the repository root)::

    python3 Tools/bench_search.py --quick
    python3 Tools/bench_search.py --sizes 1M --bits 64 --kinds clustered \\
        --out Docs/bench-results.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TOOLS_DIR.parent
sys.path.insert(0, str(TOOLS_DIR))

import gen_codes  # noqa: E402  (needs the sys.path entry above)

DEFAULT_SIZES = [1_000_000, 10_000_000]
DEFAULT_BITS = [64, 128]
DEFAULT_KINDS = ["random", "clustered"]
QUICK_SIZE = 100_000
DB_SEED = 1
QUERY_SEED = 2


def log(msg: str) -> None:
    """Print a progress message on stderr."""
    print(f"bench_search: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- parsing

def parse_count(text: str) -> int:
    """Parse '100000', '100_000', '100k' or '10M' into an int."""
    t = text.strip().lower().replace("_", "")
    scale = 1
    if t.endswith("k"):
        scale, t = 1_000, t[:-1]
    elif t.endswith("m"):
        scale, t = 1_000_000, t[:-1]
    value = float(t) * scale
    if value <= 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"bad count {text!r}")
    return int(value)


def parse_list(conv):
    """argparse type: comma-separated list converted element-wise."""
    def parse(text: str) -> list:
        try:
            return [conv(part) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
    return parse


def parse_kind(text: str) -> str:
    kind = text.strip()
    if kind not in gen_codes.KINDS:
        raise ValueError(f"unknown kind {kind!r} (choose from {', '.join(gen_codes.KINDS)})")
    return kind


def parse_radius(text: str) -> dict | int:
    """Parse '12' (all widths) or '64:8,128:16' (per width)."""
    try:
        if ":" not in text:
            return int(text)
        out = {}
        for part in text.split(","):
            bits, radius = part.split(":")
            out[int(bits)] = int(radius)
        return out
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad radius {text!r}") from exc


def radius_for(bits: int, override: dict | int | None) -> int:
    """Range-search radius: override if given, else bits / 8 (8 for 64, 16 for 128)."""
    if isinstance(override, int):
        return override
    if isinstance(override, dict) and bits in override:
        return override[bits]
    return bits // 8


# ---------------------------------------------------------------- data files

def data_name(kind: str, bits: int, n: int, seed: int, centres: int, flip: float) -> str:
    """File name describing every parameter that affects the file's content."""
    name = f"{kind}-b{bits}-n{n}-s{seed}"
    if kind == "clustered":
        name += f"-c{centres}-f{flip:g}"
    return name + ".codes"


def ensure_codes(path: Path, n: int, bits: int, kind: str, seed: int,
                 centres: int, flip: float) -> None:
    """Create ``path`` with gen_codes unless it already has the right size."""
    want = n * bits // 8
    if path.exists() and path.stat().st_size == want:
        log(f"reusing {path}")
        return
    log(f"generating {path} ({n} x {bits}-bit {kind})")
    t0 = time.perf_counter()
    gen_codes.write_codes(str(path), n, bits, kind, seed, centres, flip)
    log(f"  done in {time.perf_counter() - t0:.1f} s")


# ---------------------------------------------------------------- subprocesses

def run_json(cmd: list[str], timeout: float | None, what: str) -> tuple[dict | None, str | None]:
    """Run ``cmd``; return (parsed JSON object, None) or (None, error text)."""
    log(f"running {what}: {shlex.join(cmd)}")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=timeout)
    except FileNotFoundError as exc:
        return None, f"{what}: cannot run {cmd[0]}: {exc.strerror or exc}"
    except PermissionError as exc:
        return None, f"{what}: cannot execute {cmd[0]}: {exc.strerror or exc}"
    except subprocess.TimeoutExpired:
        return None, f"{what}: timed out after {timeout:g} s"
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
        return None, f"{what}: exit status {proc.returncode}\n{tail}"
    obj = extract_json(proc.stdout)
    if obj is None:
        head = proc.stdout.strip()[:500]
        return None, f"{what}: no JSON object on stdout (got: {head!r})"
    log(f"  {what} finished in {elapsed:.1f} s")
    return obj, None


def extract_json(stdout: str) -> dict | None:
    """The JSON object on stdout: the whole text, else the last line that parses."""
    text = stdout.strip()
    try:
        obj = json.loads(text)
        return obj if isinstance(obj, dict) else None
    except json.JSONDecodeError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


# ---------------------------------------------------------------- report

def machine_info() -> dict:
    """Architecture, CPU model and logical core count."""
    model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            fields = {}
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() not in fields:
                    fields[key.strip()] = value.strip()
        for key in ("model name", "Model", "Hardware", "cpu model", "uarch", "cpu"):
            if fields.get(key):
                model = fields[key]
                break
    except OSError:
        pass
    return {
        "arch": platform.machine() or "unknown",
        "cpu": model or platform.processor() or "unknown",
        "cores": os.cpu_count() or 0,
    }


def get(d: dict | None, *keys, default=None):
    """Nested dictionary lookup that tolerates missing levels."""
    cur = d
    for key in keys:
        if not isinstance(cur, dict) or key not in cur:
            return default
        cur = cur[key]
    return cur


def fmt_ms(value) -> str:
    if isinstance(value, (int, float)):
        if value >= 100:
            return f"{value:.0f}"
        if value >= 1:
            return f"{value:.2f}"
        return f"{value:.4f}"
    return "n/a"


def fmt_ratio(num, den, digits: int = 1) -> str:
    if isinstance(num, (int, float)) and isinstance(den, (int, float)) and den > 0:
        return f"{num / den:.{digits}f}x"
    return "n/a"


def fmt_paths(paths) -> str:
    if not isinstance(paths, dict) or not paths:
        return "n/a"
    return " / ".join(f"{k} {v}" for k, v in paths.items())


def markdown(results: list[dict], header: dict) -> str:
    """Build the Markdown report."""
    m = header["machine"]
    lines = [
        f"### gdh search benchmark, {header['date']}",
        "",
        f"Machine: `{m['arch']}`, {m['cpu']}, {m['cores']} cores"
        + (f"; OPENBLAS_CORETYPE={header['openblas']}" if header["openblas"] else "")
        + f"; FAISS {header['faiss_version']}, {header['threads']} thread(s)",
        "",
        f"Command: `{header['command']}`",
        "",
        f"k={header['k']}, {header['queries']} queries, one query at a time; "
        "times are medians in ms. Flat/ours and MH/ours are how many times "
        "faster we are. Range radius is inclusive.",
        "",
        "| n | bits | kind | FAISS Flat | FAISS MH (nhash x b, nflip) | MH exact "
        "| ours | our paths | Flat/ours | MH/ours | r | Flat range | our range "
        "| mismatches |",
        "|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        fa, us = r.get("faiss"), r.get("ours")
        flat_med = get(fa, "flat", "knn_ms", "median")
        mh_med = get(fa, "multihash", "knn_ms", "median")
        our_med = get(us, "knn_ms", "median")
        mh = get(fa, "multihash")
        mh_cell = fmt_ms(mh_med)
        if mh:
            mh_cell += f" ({mh['nhash']}x{mh['b']}, {mh['nflip']})"
        exact = get(fa, "multihash", "exact_fraction")
        exact_cell = f"{100 * exact:.1f}%" if isinstance(exact, (int, float)) else "n/a"
        mism = get(us, "mismatches")
        lines.append(
            f"| {r['n']:,} | {r['bits']} | {r['kind']} "
            f"| {fmt_ms(flat_med)} | {mh_cell} | {exact_cell} "
            f"| {fmt_ms(our_med)} | {fmt_paths(get(us, 'paths'))} "
            f"| {fmt_ratio(flat_med, our_med)} | {fmt_ratio(mh_med, our_med)} "
            f"| {r['radius']} | {fmt_ms(get(fa, 'flat_range', 'ms', 'median'))} "
            f"| {fmt_ms(get(us, 'range_ms', 'median'))} "
            f"| {mism if mism is not None else 'n/a'} |"
        )
    errors = [(r, e) for r in results for e in r.get("errors", [])]
    if errors:
        lines += ["", "Errors:", ""]
        for r, e in errors:
            first = e.splitlines()[0] if e else "?"
            lines.append(f"- n={r['n']:,} bits={r['bits']} {r['kind']}: {first}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Benchmark FAISS and gdh search on generated codes; print a Markdown table.",
    )
    p.add_argument("--sizes", type=parse_list(parse_count), default=None,
                   help="comma-separated database sizes, e.g. 1M,10M "
                        "(default: 1000000,10000000)")
    p.add_argument("--bits", type=parse_list(int), default=None,
                   help="comma-separated code widths (default: 64,128)")
    p.add_argument("--kinds", type=parse_list(parse_kind), default=None,
                   help="comma-separated data kinds: random, clustered (default: both)")
    p.add_argument("--quick", action="store_true",
                   help=f"use n={QUICK_SIZE} only (overrides --sizes)")
    p.add_argument("--queries", type=parse_count, default=1000,
                   help="number of queries per configuration (default: %(default)s)")
    p.add_argument("-k", "--k", type=int, default=10,
                   help="neighbours per query (default: %(default)s)")
    p.add_argument("--radius", type=parse_radius, default=None,
                   help="inclusive range-search radius: one value for every width, or "
                        "per width as 64:8,128:16 (default: bits/8, i.e. 8 and 16)")
    p.add_argument("--data-dir", default=None,
                   help="where generated codes and truth files live "
                        "(default: <repo>/bench-data, which is git-ignored)")
    p.add_argument("--gdh", default=None,
                   help="path to our gdh binary (default: <repo>/.build/release/gdh)")
    p.add_argument("--threads", type=int, default=1,
                   help="FAISS OpenMP threads passed to bench_faiss.py (default: %(default)s)")
    p.add_argument("--nflip", type=int, default=2,
                   help="IndexBinaryMultiHash.nflip passed to bench_faiss.py "
                        "(default: %(default)s)")
    p.add_argument("--centres", type=int, default=1000,
                   help="clustered data: number of centres (default: %(default)s)")
    p.add_argument("--flip", type=float, default=0.08,
                   help="clustered data: per-bit flip probability (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=3600,
                   help="seconds allowed for each FAISS or gdh run (default: %(default)s)")
    p.add_argument("--out", default=None,
                   help="also append the Markdown report to this file")
    p.add_argument("--jsonl", default=None,
                   help="also append one JSON line per configuration (raw FAISS and gdh "
                        "results) to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None:
        command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    else:
        command = shlex.join([sys.executable, __file__, *argv])

    sizes = [QUICK_SIZE] if args.quick else (args.sizes or DEFAULT_SIZES)
    bit_list = args.bits or DEFAULT_BITS
    kinds = args.kinds or DEFAULT_KINDS
    for bits in bit_list:
        if bits <= 0 or bits % 8:
            parser.error(f"--bits: {bits} is not a positive multiple of 8")

    data_dir = Path(args.data_dir) if args.data_dir else REPO_ROOT / "bench-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    gdh = args.gdh or str(REPO_ROOT / ".build" / "release" / "gdh")
    if not os.access(gdh, os.X_OK):
        log(f"warning: {gdh} is not an executable file; our runs will fail")

    try:
        import faiss  # only for the version string in the header
        faiss_version = faiss.__version__
    except ImportError:
        faiss_version = "missing"

    header = {
        "machine": machine_info(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "openblas": os.environ.get("OPENBLAS_CORETYPE"),
        "faiss_version": faiss_version,
        "threads": args.threads,
        "k": args.k,
        "queries": args.queries,
    }

    results: list[dict] = []
    try:
        for n in sizes:
            for bits in bit_list:
                for kind in kinds:
                    results.append(run_config(args, data_dir, gdh, n, bits, kind))
    except KeyboardInterrupt:
        log("interrupted; reporting the configurations finished so far")

    emit_report(markdown(results, header), results, header, args.out, args.jsonl, log)
    return 0


def emit_report(report: str, results: list, header: dict, out, jsonl, log) -> None:
    """Prints the Markdown report; appends it to `out` and one JSON line per result to
    `jsonl` when given (shared by the benchmark scripts)."""
    print(report)
    if out:
        with open(out, "a", encoding="utf-8") as fh:
            fh.write(report + "\n")
        log(f"appended the report to {out}")
    if jsonl:
        with open(jsonl, "a", encoding="utf-8") as fh:
            for r in results:
                fh.write(json.dumps({"header": header, **r}) + "\n")
        log(f"appended {len(results)} JSON lines to {jsonl}")


def run_config(args: argparse.Namespace, data_dir: Path, gdh: str,
               n: int, bits: int, kind: str) -> dict:
    """Generate data for one configuration and run both peers on it."""
    log(f"=== n={n} bits={bits} kind={kind} ===")
    radius = radius_for(bits, args.radius)
    result: dict = {"n": n, "bits": bits, "kind": kind, "radius": radius,
                    "faiss": None, "ours": None, "errors": []}

    db = data_dir / data_name(kind, bits, n, DB_SEED, args.centres, args.flip)
    qs = data_dir / data_name(kind, bits, args.queries, QUERY_SEED, args.centres, args.flip)
    truth = data_dir / f"{db.stem}__{qs.stem}-k{args.k}.truth"
    try:
        ensure_codes(db, n, bits, kind, DB_SEED, args.centres, args.flip)
        ensure_codes(qs, args.queries, bits, kind, QUERY_SEED, args.centres, args.flip)
    except (OSError, ValueError) as exc:
        msg = f"data generation failed: {exc}"
        log(msg)
        result["errors"].append(msg)
        return result

    # A stale truth file must never be passed to gdh if FAISS fails this time.
    truth.unlink(missing_ok=True)
    faiss_cmd = [
        sys.executable, str(TOOLS_DIR / "bench_faiss.py"),
        "--codes", str(db), "--queries", str(qs), "--bits", str(bits),
        "--k", str(args.k), "--radius", str(radius),
        "--threads", str(args.threads), "--nflip", str(args.nflip),
        "--json", "--truth-out", str(truth),
    ]
    result["faiss"], err = run_json(faiss_cmd, args.timeout, "FAISS")
    if err:
        log(f"error: {err}")
        result["errors"].append(err)

    gdh_cmd = [
        gdh, "bench", "search", "--codes", str(db), "--queries", str(qs),
        "--bits", str(bits), "-k", str(args.k), "--radius", str(radius), "--json",
    ]
    if truth.exists():
        gdh_cmd += ["--truth", str(truth)]
    else:
        log("no truth file (FAISS failed); running gdh without --truth")
    ours, err = run_json(gdh_cmd, args.timeout, "gdh")
    if err:
        log(f"error: {err}")
        result["errors"].append(err)
    else:
        for key in ("n", "bits"):
            want = n if key == "n" else bits
            if ours.get(key) != want:
                msg = f"gdh reported {key}={ours.get(key)!r}, expected {want}"
                log(f"warning: {msg}")
                result["errors"].append(msg)
        result["ours"] = ours
    return result


if __name__ == "__main__":
    sys.exit(main())
