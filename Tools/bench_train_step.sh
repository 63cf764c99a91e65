#!/usr/bin/env bash
# A GDH training step, ours against the PyTorch reference on the same model, batch and
# threads, alternated ours / PyTorch so that both see the same machine; prints one line per
# run and the ratio of each pair (ours / PyTorch time: below 1 is faster).
# Usage: bash Tools/bench_train_step.sh [rounds=3] [threads="1 2"] [extra bench flags, e.g. --no-generator]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
threads=${2:-"1 2"}
shift $(( $# > 2 ? 2 : $# )) || true
extra=("$@")
swift build -c release -Xcc -mpopcnt --product gdh-bench >/dev/null
python3 -c "import torch, safetensors" 2>/dev/null || pip install -q "torch==2.13.0+cpu" safetensors
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u '+%Y-%m-%d %H:%M UTC')"
for t in $threads; do
    for r in $(seq 1 "$rounds"); do
        ours=$(.build/release/gdh-bench train --config small --batch 32 --threads "$t" --steps 5 --json "${extra[@]}" \
            | python3 -c "import json,sys; print(json.load(sys.stdin)['ms_per_step'])")
        ref=$(python3 Tools/gdh_train_torch.py bench --config small --batch 32 --threads "$t" --steps 5 "${extra[@]}" \
            | python3 -c "import json,sys; print(json.load(sys.stdin)['ms_per_step'])")
        python3 -c "print('threads $t round $r: ours %.1f ms, PyTorch %.1f ms, ours / PyTorch %.2fx' % ($ours, $ref, $ours / $ref))"
    done
done
