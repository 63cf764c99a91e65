#!/usr/bin/env python3
"""Socket benchmark of gdhd against FAISS IndexBinaryFlat in process, in one run.

Steps (all on the same generated codes):

1. generate N clustered (or random) codes and 1,000 queries (Tools/gen_codes.py);
2. FAISS IndexBinaryFlat in process, one thread, one query at a time: median 10-NN latency;
3. start a release gdhd on a fresh temporary database; ingest the N codes over the socket
   with pipelined ADDs (``gdh bench ingest``: every ADD is acknowledged only once its
   transaction is synced) and report codes/s and the daemon's CPU per code; then the peer, a
   plain LMDB loader (Tools/lmdb_loader.c, built with cc) doing the same puts with the same
   commit sizes and syncs, and the ratio. ``--pairs P`` alternates the two P times (each
   ingest into a fresh daemon and database, each load into a fresh file: daemon, loader,
   daemon, loader, ...) and reports every pair and the medians, so that the ratio holds on
   a machine whose speed drifts; the last pair's daemon serves the steps below. ``--windows
   W1,W2,...`` repeats this step for each number of requests kept in flight by the client
   (default 4000, its largest): the daemon's commits, and with them the peer's, are larger
   the more requests wait while a commit syncs;
4. 10-NN latency percentiles and queries/s over the socket with 1 and with 8 clients
   (``gdh bench socket``), one query in flight per client;
5. the database file size after COMPACT against the raw bytes of codes + keys + table ids;
6. REBUILD time of the tables (``gdh rebuild``) on the ingested database.

Prints a Markdown report with machine, date and command line (``--out`` appends it to a file).

Example::

    python3 Tools/bench_socket.py --n 1M
    python3 Tools/bench_socket.py --n 10M --skip-queries --out Docs/benchmarks.md   # REBUILD at 10M
    python3 Tools/bench_socket.py --n 1M --skip-queries --windows 250,500,1000,2000,4000
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))
import bench_search  # noqa: E402
import gen_codes  # noqa: E402


def log(msg: str) -> None:
    print(f"bench_socket: {msg}", file=sys.stderr, flush=True)


def run_json(cmd: list[str]) -> dict:
    log("running " + " ".join(cmd))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return bench_search.extract_json(out) or {}


def gdh(binary: str, sock: str, *args: str) -> str:
    return subprocess.run([binary, *args, "--socket", sock], check=True, capture_output=True, text=True).stdout.strip()


def faiss_flat_median(codes: Path, queries: Path, bits: int, k: int) -> float:
    import faiss
    import numpy as np
    faiss.omp_set_num_threads(1)
    db = np.fromfile(codes, dtype=np.uint8).reshape(-1, bits // 8)
    q = np.fromfile(queries, dtype=np.uint8).reshape(-1, bits // 8)
    index = faiss.IndexBinaryFlat(bits)
    index.add(db)
    for i in range(20):
        index.search(q[i:i + 1], k)
    times = []
    for i in range(len(q)):
        t = time.perf_counter_ns()
        index.search(q[i:i + 1], k)
        times.append(time.perf_counter_ns() - t)
    times.sort()
    return times[len(times) // 2] / 1e6


def daemon_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=bench_search.parse_count, default=1_000_000, help="database size (default 1M)")
    ap.add_argument("--bits", type=int, default=64, help="code width (default 64)")
    ap.add_argument("--kind", default="clustered", choices=["clustered", "random"], help="data kind")
    ap.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    ap.add_argument("--count", type=int, default=5000, help="queries per client (default 5000)")
    ap.add_argument("--gdh", default=str(ROOT / ".build/release/gdh"), help="gdh binary")
    ap.add_argument("--gdhd", default=str(ROOT / ".build/release/gdhd"), help="gdhd binary")
    ap.add_argument("--data-dir", default=str(ROOT / "bench-data"), help="where codes are kept")
    ap.add_argument("--skip-queries", action="store_true", help="only ingest, compact and rebuild")
    ap.add_argument("--pairs", type=int, default=3, help="ingest / loader pairs, alternated (default 3)")
    ap.add_argument("--windows", default="4000",
                    help="requests kept in flight by the ingest client, a comma-separated list for a sweep "
                         "(default 4000, the client's largest and fastest); the peer loader commits as many "
                         "codes at once as the daemon did at each window")
    ap.add_argument("--out", help="append the Markdown report to this file")
    args = ap.parse_args()

    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    codes = data / bench_search.data_name(args.kind, args.bits, args.n, 1, 1000, 0.08)
    queries = data / bench_search.data_name(args.kind, args.bits, 1000, 2, 1000, 0.08)
    bench_search.ensure_codes(codes, args.n, args.bits, args.kind, 1, 1000, 0.08)
    bench_search.ensure_codes(queries, 1000, args.bits, args.kind, 2, 1000, 0.08)

    rows = []
    faiss_median = None
    if not args.skip_queries:
        faiss_median = faiss_flat_median(codes, queries, args.bits, args.k)
        log(f"FAISS IndexBinaryFlat median {faiss_median:.4f} ms")

    if args.pairs < 1:
        ap.error("--pairs must be at least 1")
    try:
        windows = [int(w) for w in args.windows.split(",")]
    except ValueError:
        ap.error("--windows must be a comma-separated list of integers")
    if not windows or any(not 1 <= w <= 4000 for w in windows):
        ap.error("--windows: each window must be 1 to 4000")
    work = Path(tempfile.mkdtemp(prefix="gdh-bench-"))
    loader = work / "lmdb_loader"
    subprocess.run(["cc", "-O2", "-o", str(loader), str(TOOLS / "lmdb_loader.c"), "-llmdb"], check=True)
    daemon = None
    try:
        def med(xs: list[float]) -> float:
            return statistics.median(xs)

        def each(xs: list[float], fmt: str) -> str:
            return "" if len(xs) == 1 else " (" + ", ".join(fmt.format(x) for x in xs) + ")"

        run = 0
        for window in windows:
            pairs = []
            for p in range(args.pairs):
                if daemon is not None:
                    daemon.send_signal(signal.SIGTERM)
                    daemon.wait(timeout=120)
                    shutil.rmtree(work / f"db{run - 1}", ignore_errors=True)
                sock = str(work / f"gdh{run}.sock")
                daemon = subprocess.Popen([args.gdhd, "--db", str(work / f"db{run}"), "--socket", sock,
                                           "--bits", str(args.bits), "--log-level", "warning"])
                run += 1
                for _ in range(200):
                    if os.path.exists(sock):
                        try:
                            gdh(args.gdh, sock, "ping")
                            break
                        except subprocess.CalledProcessError:
                            pass
                    time.sleep(0.05)
                cpu_before = daemon_cpu_seconds(daemon.pid)
                ingest = run_json([args.gdh, "bench", "ingest", "--codes", str(codes), "--bits", str(args.bits),
                                   "--window", str(window), "--socket", sock, "--json"])
                cpu = daemon_cpu_seconds(daemon.pid) - cpu_before
                # The peer: a plain LMDB loader with the same puts, the same commit sizes (the
                # daemon's mean batch in this run) and a sync per commit (Tools/lmdb_loader.c).
                commits = int(dict(line.split(" ", 1) for line in gdh(args.gdh, sock, "stats").splitlines())["commits"])
                batch = max(1, round(ingest["codes"] / max(1, commits)))
                plain_db = work / "plain.mdb"
                plain = json.loads(subprocess.run([str(loader), str(codes), str(args.bits), str(batch), str(plain_db)],
                                                  check=True, capture_output=True, text=True).stdout)
                for f in (plain_db, Path(str(plain_db) + "-lock")):
                    if f.is_dir():
                        shutil.rmtree(f, ignore_errors=True)
                    elif f.exists():
                        f.unlink()
                pairs.append((ingest["codes_per_second"], cpu * 1e6 / ingest["codes"], plain["codes_per_second"], batch))
                log(f"window {window}, pair {p + 1}: {pairs[-1][0]:,.0f} codes/s, {pairs[-1][1]:.2f} µs/code, "
                    f"commits of {batch:,}; loader {pairs[-1][2]:,.0f} codes/s; "
                    f"ratio {pairs[-1][0] / pairs[-1][2]:.2f}x")

            rates, cpus, plains = [x[0] for x in pairs], [x[1] for x in pairs], [x[2] for x in pairs]
            batches = [x[3] for x in pairs]
            ratios = [x[0] / x[2] for x in pairs]
            which = "" if len(pairs) == 1 else f", median of {len(pairs)} alternated pairs"
            at = f"{window:,} in flight"
            rows.append((f"ingest over the socket (pipelined ADD, durable acks, {at}{which})",
                         f"{med(rates):,.0f} codes/s{each(rates, '{:,.0f}')}", "≥ 300,000 codes/s"))
            rows.append((f"daemon CPU (user + system) per ingested code, {at}",
                         f"{med(cpus):.2f} µs{each(cpus, '{:.2f}')}", "< 2 µs"))
            rows.append((f"plain LMDB loader, same puts, the daemon's commit sizes at {at} (one sync each)",
                         f"{med(plains):,.0f} codes/s{each(plains, '{:,.0f}')}; commits of "
                         f"{med(batches):,.0f}{each(batches, '{:,}')}", ""))
            rows.append((f"ratio socket ingest / plain LMDB loader, {at} (median of the pairs' ratios)",
                         f"{med(ratios):.2f}x{each(ratios, '{:.2f}x')}", "≥ 0.5x"))
        if not args.skip_queries:
            for clients in (1, 8):
                r = run_json([args.gdh, "bench", "socket", "--queries", str(queries), "--bits", str(args.bits),
                              "-k", str(args.k), "--clients", str(clients), "--count", str(args.count),
                              "--socket", sock, "--json"])
                lat = r["latency_ms"]
                rows.append((f"10-NN over the socket, {clients} client(s): median / p90 / p99 latency",
                             f"{lat['median']:.4f} / {lat['p90']:.4f} / {lat['p99']:.4f} ms", ""))
                rows.append((f"10-NN over the socket, {clients} client(s): throughput", f"{r['qps']:,.0f} q/s",
                             "≥ 20,000 q/s" if clients == 8 else ""))
                if clients == 1:
                    rows.append(("FAISS IndexBinaryFlat in process: median latency", f"{faiss_median:.4f} ms", ""))
                    rows.append(("ratio FAISS Flat median / our socket median", f"{faiss_median / lat['median']:.1f}x",
                                 "≥ 2x"))
        stats = dict(line.split(" ", 1) for line in gdh(args.gdh, sock, "stats").splitlines())
        t = time.time()
        before_after = gdh(args.gdh, sock, "compact").split()
        compact_s = time.time() - t
        stats = dict(line.split(" ", 1) for line in gdh(args.gdh, sock, "stats").splitlines())
        m = int(stats["substrings"])
        n = int(stats["items"])
        key_bytes = sum(len(f"b{i}") for i in range(n))
        raw = n * (args.bits // 8) + key_bytes + n * m * 4
        after = int(before_after[1])
        rows.append(("file after COMPACT / raw bytes (codes + keys + table ids)",
                     f"{after:,} / {raw:,} = {after / raw:.2f}x", "≤ 2x"))
        rows.append(("COMPACT time", f"{compact_s:.2f} s", ""))
        t = time.time()
        gdh(args.gdh, sock, "rebuild")
        rows.append((f"REBUILD of {n:,} codes (m={m})", f"{time.time() - t:.2f} s", "< 60 s at 10M"))
        verify = gdh(args.gdh, sock, "verify")
        rows.append(("VERIFY after the run (items, stale entries)", verify, ""))
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=120)
        shutil.rmtree(work, ignore_errors=True)

    info = bench_search.machine_info()
    lines = [f"### gdhd over the socket, {args.n:,} {args.kind} {args.bits}-bit codes, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"Machine: {info.get('arch', '')}, {info.get('cpu', '')}, {info.get('cores', '')} cores. "
             f"Command: `{' '.join([Path(sys.executable).name] + sys.argv)}`", "",
             "| measure | result | target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
