#!/usr/bin/env python3
"""Large KNN/RANGE answers over the socket: time, and the daemon's memory while it sends.

For each gdhd binary given (``--gdhd``, and optionally ``--baseline`` for another build,
for example the commit before streamed answers), in one run:

1. ingest N random codes over the socket (``gdh bench ingest``) into a fresh database;
2. restart the daemon, then a fast client sends ``RANGE <bits> CODE 0…0`` (every item
   matches) and reads the whole answer as fast as it can: seconds, MB/s, and the largest
   rise of the daemon's resident memory (VmRSS, sampled every 5 ms) over its level before;
3. restart the daemon, then a slow client sends the same RANGE, reads only the first
   64 KiB and waits 3 s: the daemon's rise of resident memory while the client does not
   read (a daemon that builds answers whole holds all of it), then reads the rest;
4. the same as 2 for ``KNN <k>`` with k = min(N, 1,000,000) (the protocol's limit).

Each daemon is restarted before each measurement so that memory freed by an earlier one
does not hide the next one's. Prints a Markdown report (``--out`` appends it to a file).

Example::

    python3 Tools/bench_answers.py --n 2M --baseline /tmp/gdh-old/.build/release/gdhd
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))
import bench_search  # noqa: E402


def log(msg: str) -> None:
    print(f"bench_answers: {msg}", file=sys.stderr, flush=True)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Sampler:
    """Largest VmRSS of a process while running."""

    def __init__(self, pid: int):
        self.pid, self.peak, self.stop = pid, 0, False
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop:
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.005)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()
        self.peak = max(self.peak, rss_kib(self.pid))


class Daemon:
    def __init__(self, binary: str, gdh: str, db: Path, sock: str, bits: int):
        self.binary, self.gdh, self.db, self.sock, self.bits = binary, gdh, db, sock, bits
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "--db", str(self.db), "--socket", self.sock,
                                      "--bits", str(self.bits), "--log-level", "warning"])
        for _ in range(1200):
            if os.path.exists(self.sock):
                r = subprocess.run([self.gdh, "ping", "--socket", self.sock], capture_output=True)
                if r.returncode == 0:
                    return
            time.sleep(0.05)
        raise SystemExit("gdhd did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def answer(sock: str, request: str, expect_lines: int, slow_wait: float = 0.0) -> tuple[float, int]:
    """Sends one request and reads its answer (count line + expect_lines lines)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    t = time.perf_counter()
    s.sendall(request.encode() + b"\n")
    want, got, total = expect_lines + 1, 0, 0
    if slow_wait:
        first = s.recv(65536)
        got += first.count(b"\n")
        total += len(first)
        time.sleep(slow_wait)
    while got < want:
        b = s.recv(1 << 20)
        if not b:
            raise SystemExit(f"connection closed after {got} of {want} lines")
        got += b.count(b"\n")
        total += len(b)
    s.close()
    return time.perf_counter() - t, total


def measure(binary: str, gdh: str, codes: Path, n: int, bits: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="gdh-answers-"))
    d = Daemon(binary, gdh, work / "db", str(work / "gdh.sock"), bits)
    out = {}
    try:
        d.start()
        subprocess.run([gdh, "bench", "ingest", "--codes", str(codes), "--bits", str(bits),
                        "--socket", d.sock, "--json"], check=True, capture_output=True)
        zero = "0" * (bits // 4)
        k = min(n, 1_000_000)
        for name, request, lines, wait in [("range", f"RANGE {bits} CODE {zero}", n, 0.0),
                                           ("range_slow", f"RANGE {bits} CODE {zero}", n, 3.0),
                                           ("knn", f"KNN {k} CODE {zero}", k, 0.0)]:
            d.stop()
            d.start()
            time.sleep(0.5)
            before = rss_kib(d.proc.pid)
            if wait:
                holder = {}
                th = threading.Thread(target=lambda: holder.update(r=answer(d.sock, request, lines, wait)))
                th.start()
                time.sleep(wait * 0.8)
                waiting = rss_kib(d.proc.pid)
                with Sampler(d.proc.pid) as sm:
                    th.join()
                seconds, size = holder["r"]
                out[name] = dict(seconds=seconds, bytes=size, rise_mib=(max(waiting, sm.peak) - before) / 1024,
                                 rise_waiting_mib=(waiting - before) / 1024, before_mib=before / 1024)
            else:
                with Sampler(d.proc.pid) as sm:
                    seconds, size = answer(d.sock, request, lines)
                out[name] = dict(seconds=seconds, bytes=size, rise_mib=(sm.peak - before) / 1024, before_mib=before / 1024)
            log(f"{binary}: {name} {out[name]}")
    finally:
        if d.proc and d.proc.poll() is None:
            d.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=bench_search.parse_count, default=2_000_000, help="items (default 2M)")
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--gdh", default=str(ROOT / ".build/release/gdh"))
    ap.add_argument("--gdhd", default=str(ROOT / ".build/release/gdhd"))
    ap.add_argument("--baseline", help="a second gdhd build to measure in the same run")
    ap.add_argument("--data-dir", default=str(ROOT / "bench-data"))
    ap.add_argument("--out", help="append the Markdown report to this file")
    args = ap.parse_args()
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    codes = data / bench_search.data_name("random", args.bits, args.n, 1, 1000, 0.08)
    bench_search.ensure_codes(codes, args.n, args.bits, "random", 1, 1000, 0.08)
    runs = [("this build", args.gdhd)] + ([("baseline", args.baseline)] if args.baseline else [])
    results = [(label, binary, measure(binary, args.gdh, codes, args.n, args.bits)) for label, binary in runs]

    k = min(args.n, 1_000_000)
    lines = [f"### Large answers over the socket, {args.n:,} random {args.bits}-bit codes, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"Machine: `{platform.machine()}`, {os.cpu_count()} cores. Command: `python3 Tools/bench_answers.py "
             + " ".join(sys.argv[1:]) + "`", "",
             "Rise = the daemon's largest resident memory (VmRSS, sampled every 5 ms) during the answer "
             "minus its level before the request, on a freshly restarted daemon.", "",
             "| build | answer | lines | MB | seconds | MB/s | RSS rise MiB | RSS rise while the client does not read, MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for label, binary, r in results:
        for name, what, count in [("range", f"RANGE {args.bits} (all items), fast reader", args.n),
                                  ("range_slow", f"RANGE {args.bits}, reader waits 3 s after 64 KiB", args.n),
                                  ("knn", f"KNN {k:,}, fast reader", k)]:
            m = r[name]
            waiting = f"{m['rise_waiting_mib']:.1f}" if "rise_waiting_mib" in m else ""
            lines.append(f"| {label} (`{binary}`) | {what} | {count:,} | {m['bytes'] / 1e6:.1f} | {m['seconds']:.2f} | "
                         f"{m['bytes'] / 1e6 / m['seconds']:.0f} | {m['rise_mib']:.1f} | {waiting} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
