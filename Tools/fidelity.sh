#!/usr/bin/env bash
# Trains the same variant with the Swift trainer and with the PyTorch reference
# (Tools/gdh_train_torch.py) on the same data, split and seed, evaluates both model files
# with `gdh eval` (the same encoders, the same split file), and prints mAP@all per seed and
# the mean difference.
#
#   bash Tools/fidelity.sh DATA [--seeds "1 2 3"] [--epochs E] [--flags "--no-generator"] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$1; shift
SEEDS="1 2 3" EPOCHS=24 FLAGS="--no-generator" OUT=fidelity-runs
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) SEEDS=$2; shift 2 ;;
        --epochs) EPOCHS=$2; shift 2 ;;
        --flags) FLAGS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        *) echo "fidelity.sh: unknown option $1" >&2; exit 64 ;;
    esac
done
# gdh-train runs synth, train and eval with the arguments gdh takes (GDH may also be a
# gdh, which hands these verbs to the gdh-train beside it).
GDH=${GDH:-.build/release/gdh-train}
[ -x "$GDH" ] || swift build -c release --product gdh-train >/dev/null
python3 -c "import torch, safetensors, numpy, PIL" 2>/dev/null || pip install -q "torch==2.13.0+cpu" safetensors numpy pillow
mkdir -p "$OUT"
: > "$OUT/results.jsonl"
for s in $SEEDS; do
    sw="$OUT/swift-seed$s.safetensors" pt="$OUT/torch-seed$s.safetensors"
    t0=$(date +%s)
    "$GDH" train --data "$DATA" --out "$sw" --epochs "$EPOCHS" --seed "$s" --threads 1 $FLAGS --quiet >/dev/null
    t1=$(date +%s)
    python3 Tools/gdh_train_torch.py train --data "$DATA" --split "$sw.split.json" --out "$pt" --epochs "$EPOCHS" \
        --batch 16 --seed "$s" --threads 1 --hash-lr-factor 10 $FLAGS >/dev/null
    t2=$(date +%s)
    a=$("$GDH" eval --model "$sw" --data "$DATA" --split "$sw.split.json" --json 2>/dev/null)
    b=$("$GDH" eval --model "$pt" --data "$DATA" --split "$sw.split.json" --json 2>/dev/null)
    python3 -c 'import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); print(json.dumps({"seed": int(sys.argv[3]), "swift_map_all": a["map_all"], "torch_map_all": b["map_all"], "swift_seconds": int(sys.argv[4]), "torch_seconds": int(sys.argv[5])}))' \
        "$a" "$b" "$s" "$((t1 - t0))" "$((t2 - t1))" | tee -a "$OUT/results.jsonl"
done
python3 - "$OUT/results.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
sw = [r["swift_map_all"] for r in rows]; pt = [r["torch_map_all"] for r in rows]
print("Swift mAP@all %.3f ± %.3f, PyTorch %.3f ± %.3f, mean difference %.3f over %d seeds"
      % (statistics.mean(sw), statistics.stdev(sw) if len(sw) > 1 else 0, statistics.mean(pt),
         statistics.stdev(pt) if len(pt) > 1 else 0, statistics.mean(sw) - statistics.mean(pt), len(rows)))
EOF
