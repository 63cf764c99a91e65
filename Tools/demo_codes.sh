#!/usr/bin/env bash
# The hex-code tour (the first demo): installs what it needs, builds, starts gdhd on a
# temporary database, imports 200,000 clustered 64-bit codes over the socket, runs
# queries with the gdh client and with socat, compacts, verifies, and stops the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
bash Tools/setup.sh socat
swift build -c release --product gdhd >/dev/null
swift build -c release --product gdh >/dev/null
BIN=.build/release
WORK=$(mktemp -d /tmp/gdh-demo.XXXXXX)
SOCK="$WORK/gdh.sock"
export GDH_SOCKET="$SOCK"
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "start gdhd (64-bit codes, database $WORK/db)"
$BIN/gdhd --db "$WORK/db" --socket "$SOCK" --log-level warning &
PID=$!
for _ in $(seq 100); do $BIN/gdh ping >/dev/null 2>&1 && break; sleep 0.1; done
$BIN/gdh ping

say "generate 200,000 clustered codes (1,000 centres, 8% of bits flipped) and import them"
$BIN/gdh generate --n 200000 --bits 64 --kind clustered > "$WORK/codes.txt"
head -3 "$WORK/codes.txt"
$BIN/gdh import "$WORK/codes.txt"

say "the 5 nearest neighbours of the first code (exact, nearest first)"
Q=$(head -1 "$WORK/codes.txt" | cut -d' ' -f2)
$BIN/gdh knn "$Q" -k 5
say "the same as JSON"
$BIN/gdh knn "$Q" -k 3 --json

say "by hand over the socket with socat"
printf 'PING\nKNN 3 CODE %s\nRANGE 2 CODE %s\nGET c0-999999\nADD my-item CODE %s\nGET my-item\nDEL my-item\n' "$Q" "$Q" "$Q" \
    | socat -t 2 - UNIX-CONNECT:"$SOCK"

say "delete half the items, compact, verify"
awk 'NR % 2 == 0 { print "DEL " $1 }' "$WORK/codes.txt" | socat -t 30 - UNIX-CONNECT:"$SOCK" | sort | uniq -c
echo "compact (bytes before, after):"; $BIN/gdh compact
echo "verify (items, stale entries):"; $BIN/gdh verify
$BIN/gdh stats | grep -E '^(items|bits|substrings|file_bytes|scan_kernel) '

say "stop gdhd with SIGTERM"
kill -TERM "$PID"; wait "$PID"; echo "gdhd exited with status $?"; PID=
