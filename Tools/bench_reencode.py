#!/usr/bin/env python3
"""Writes during REENCODE of a large database (issue 9 item 3, REENCODE part).

Steps:

1. generate N clustered 64-bit codes (Tools/gen_codes.py, as bench_socket.py) and a
   synthetic photo set (``gdh synth``) of ``--images`` photos;
2. start a release gdhd with the default model on a fresh temporary database; ingest the
   N codes over the socket (``gdh bench ingest``), then the photos through the image branch
   (``gdh add-images``), then ``REBUILD`` so that no fold of the bulk load's delta falls
   into the measurement;
3. run ``gdh bench soak`` with ADDs only (``--mix 100,0,0,0``, new keys beside the
   database's, every ADD durable before its answer) for ``--seconds``; after ``--delay``
   seconds ``gdh reencode`` re-encodes every stored photo through the model, in batches of
   conditional writes queued beside the clients' writes;
4. report the REENCODE duration and the soak's ADD latency percentiles and longest wait,
   which cover the whole soak: REENCODE and the time around it.

Prints a Markdown report with machine, date and command line (``--out`` appends it).

Example::

    python3 Tools/bench_reencode.py --n 10M --images 2000
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
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
    print(f"bench_reencode: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> str:
    log("running " + " ".join(cmd))
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=bench_search.parse_count, default=10_000_000, help="codes in the database before the photos (e.g. 1M, 10M)")
    ap.add_argument("--images", type=int, default=2000, help="photos added through the image branch")
    ap.add_argument("--clients", type=int, default=8, help="soak clients writing during REENCODE")
    ap.add_argument("--seconds", type=float, default=0, help="soak length (default: long enough to cover REENCODE)")
    ap.add_argument("--delay", type=float, default=5, help="seconds of soak before REENCODE starts")
    ap.add_argument("--model", default=str(ROOT / "Tools/models/gdh-lite0-96-64.safetensors"))
    ap.add_argument("--bin", default=str(ROOT / ".build/release"), help="directory of gdhd, gdh, gdh-train, gdh-bench")
    ap.add_argument("--data-dir", default=str(ROOT / "bench-data"), help="where codes are kept")
    ap.add_argument("--out", help="append the Markdown report to this file")
    args = ap.parse_args()

    n = args.n
    binary = Path(args.bin)
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    codes = data / bench_search.data_name("clustered", 64, n, 1, 1000, 0.08)
    bench_search.ensure_codes(codes, n, 64, "clustered", 1, 1000, 0.08)

    work = Path(tempfile.mkdtemp(prefix="gdh-reencode-"))
    sock = str(work / "gdh.sock")
    per_class = max(1, args.images // 40)
    run([str(binary / "gdh-train"), "synth", "--out", str(work / "photos"), "--classes", "40",
         "--per-class", str(per_class), "--sketches-per-class", "1", "--seed", "7", "--size", "96"])
    daemon = subprocess.Popen([str(binary / "gdhd"), "--db", str(work / "db"), "--socket", sock, "--bits", "64",
                               "--model", args.model, "--allow-root", str(work), "--log-level", "warning"])
    gdh = [str(binary / "gdh")]
    try:
        for _ in range(200):
            if os.path.exists(sock) and subprocess.run(gdh + ["ping", "--socket", sock], capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        t = time.time()
        run(gdh + ["bench", "ingest", "--codes", str(codes), "--bits", "64", "--socket", sock, "--json"])
        log(f"ingested {n} codes in {time.time() - t:.1f} s")
        t = time.time()
        run(gdh + ["add-images", str(work / "photos" / "images"), "--socket", sock])
        log(f"added {per_class * 40} photos in {time.time() - t:.1f} s")
        run(gdh + ["rebuild", "--socket", sock])

        # How long REENCODE takes alone tells the soak's length when not given.
        seconds = args.seconds or 0
        result: dict[str, object] = {}

        def reencode() -> None:
            time.sleep(args.delay)
            t0 = time.time()
            result["answer"] = run(gdh + ["reencode", "--socket", sock]).strip()
            result["seconds"] = time.time() - t0

        if seconds == 0:
            # A first REENCODE alone, to size the soak: delay + its time + 5 s.
            t0 = time.time()
            run(gdh + ["reencode", "--socket", sock])
            alone = time.time() - t0
            seconds = args.delay + 1.5 * alone + 5
            log(f"REENCODE alone took {alone:.1f} s; soak of {seconds:.0f} s")
        thread = threading.Thread(target=reencode)
        thread.start()
        soak = run([str(binary / "gdh-bench"), "soak", "--socket", sock, "--clients", str(args.clients),
                   "--seconds", str(seconds), "--compact-every", "0", "--mix", "100,0,0,0", "--keys", "1000000",
                   "--preload", "0", "--sample-every", str(max(1.0, seconds / 4))])
        thread.join()
        stats = dict(line.split(" ", 1) for line in run(gdh + ["stats", "--socket", sock]).splitlines() if " " in line)
    finally:
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(work, ignore_errors=True)

    report = [
        f"### REENCODE beside writes, {n:,} codes + {per_class * 40:,} photos, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}. Command: `python3 {' '.join(sys.argv)}`",
        "",
        f"REENCODE answer `{result.get('answer')}` in {result.get('seconds', 0):.1f} s, started {args.delay:.0f} s into "
        f"a {seconds:.0f} s soak of {args.clients} clients doing durable ADDs; items at the end {stats.get('items', '?')}.",
        "",
        "```",
        soak.strip(),
        "```",
        "",
    ]
    text = "\n".join(report)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
