#!/usr/bin/env bash
# The demo on embedded defaults: a real sketch search with the shipped default model.
# Installs what it needs, builds, starts gdhd with Tools/models/gdh-lite0-96-64.safetensors on a
# temporary database, synthesizes a gallery the model was never trained on (another seed),
# adds its photos with `gdh add-images`, queries held-out sketches through the daemon,
# prints mAP@all and the top results of a few queries, and writes HTML result pages with
# thumbnails to demo-output/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash Tools/setup.sh
swift build -c release --product gdhd >/dev/null
swift build -c release --product gdh >/dev/null
swift build -c release --product gdh-train >/dev/null   # gdh synth and gdh eval run it
BIN=.build/release
MODEL=Tools/models/gdh-lite0-96-64.safetensors
OUT=demo-output
WORK=$(mktemp -d /tmp/gdh-demo.XXXXXX)
SOCK="$WORK/gdh.sock"
export GDH_SOCKET="$SOCK"
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "synthesize a gallery the model never saw (seed 4242; the model was trained on seed 1)"
$BIN/gdh synth --out "$WORK/data" --classes 30 --per-class 20 --sketches-per-class 4 --seed 4242

say "start gdhd with the default model ($MODEL) on a temporary database"
$BIN/gdhd --db "$WORK/db" --socket "$SOCK" --model "$MODEL" --allow-root "$WORK" --log-level warning &
PID=$!
for _ in $(seq 100); do $BIN/gdh ping >/dev/null 2>&1 && break; sleep 0.1; done
$BIN/gdh ping

say "add the 600 photos through the image branch (code = sign(H(photo)))"
$BIN/gdh add-images "$WORK/data/images"

say "mAP@all of the 120 held-out sketches against the gallery (tie-aware), in process"
$BIN/gdh eval --model "$MODEL" --data "$WORK/data" --split all

say "query sketches through the daemon (exact Hamming 10-NN of the sketch code)"
mkdir -p "$OUT"
for cls in house car fish umbrella; do
    s=$(ls "$WORK/data/sketches/$cls" | head -1)
    echo "-- sketch sketches/$cls/$s: top 5 (key, Hamming distance)"
    $BIN/gdh query "$WORK/data/sketches/$cls/$s" -k 10 --root "$WORK/data/images" --html "$OUT/query-$cls.html" | head -5 | cut -d' ' -f1,2
done
echo "HTML result pages with thumbnails: $OUT/query-*.html"

say "stop gdhd with SIGTERM"
kill -TERM "$PID"; wait "$PID"; echo "gdhd exited with status $?"; PID=
