#!/usr/bin/env bash
# What the ImageNet start of the lite0 hashing network is worth (Docs/training.md, table D):
# EfficientNet-Lite0 from ImageNet weights, the same network from random weights, and the
# small ResNet of the shipped models, trained with the same budget (epochs, batch, data,
# split) for several seeds, all as the no-generator variant (the shipped default's recipe),
# evaluated on the held-out split of each run and on two photo/sketch styles that training
# never saw. Prints one JSON line per run and a markdown table of mean ± sample std.
#
#   bash Tools/lite0_worth.sh [--data DIR] [--epochs E] [--seeds "1 2 3"] [--jobs J]
#                             [--variants "lite0-imagenet lite0-random resnet"] [--out DIR]
#                             [--lite0-size PX] [--resnet-size PX]
#
# DIR is a `gdh synth --classes 30 --per-class 60 --seed 1 --size 96` set (made if missing).
# The style sets are made with gdh synth too: flat + clean (--seed 778) and grainy + shaky
# (--seed 779), 10 sketches and 40 photos of each of the 30 classes. J runs go in parallel,
# one thread each.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=lite0-runs/synth-train EPOCHS=10 SEEDS="1 2 3" JOBS=2 OUT=lite0-runs L0SIZE=96 RSIZE=64
VARIANTS="lite0-imagenet lite0-random resnet"
while [ $# -gt 0 ]; do
    case "$1" in
        --data) DATA=$2; shift 2 ;;
        --epochs) EPOCHS=$2; shift 2 ;;
        --seeds) SEEDS=$2; shift 2 ;;
        --jobs) JOBS=$2; shift 2 ;;
        --variants) VARIANTS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --lite0-size) L0SIZE=$2; shift 2 ;;
        --resnet-size) RSIZE=$2; shift 2 ;;
        *) echo "lite0_worth.sh: unknown option $1" >&2; exit 64 ;;
    esac
done
bash Tools/setup_lite0.sh
# gdh-train runs synth, train and eval with the arguments gdh takes (GDH may also be a
# gdh, which hands these verbs to the gdh-train beside it).
GDH=${GDH:-.build/release/gdh-train}
[ -x "$GDH" ] || swift build -c release -Xcc -mpopcnt --product gdh-train >/dev/null
export GDH_BACKBONE=${GDH_BACKBONE:-$PWD/Tools/models/efficientnet-lite0-imagenet.safetensors}
mkdir -p "$OUT"
[ -d "$DATA/images" ] || "$GDH" synth --out "$DATA" --classes 30 --per-class 60 --seed 1 --size 96 >&2
FLAT="$OUT/style-flat-clean" GRAINY="$OUT/style-grainy-shaky"
[ -d "$FLAT/images" ] || "$GDH" synth --out "$FLAT" --classes 30 --per-class 40 --sketches-per-class 10 --seed 778 \
    --size 96 --photo-style flat --sketch-style clean >&2
[ -d "$GRAINY/images" ] || "$GDH" synth --out "$GRAINY" --classes 30 --per-class 40 --sketches-per-class 10 --seed 779 \
    --size 96 --photo-style grainy --sketch-style shaky >&2

run() {  # variant seed -> one JSON line
    local v=$1 s=$2 m="$OUT/$1-seed$2.safetensors" flags
    case "$v" in
        lite0-imagenet) flags="--config lite0 --image-size $L0SIZE --init imagenet" ;;
        lite0-random) flags="--config lite0 --image-size $L0SIZE --init random" ;;
        resnet) flags="--config small --image-size $RSIZE" ;;
        *) echo "lite0_worth.sh: unknown variant $v" >&2; return 64 ;;
    esac
    local start end
    start=$(date +%s.%N)
    "$GDH" train --data "$DATA" --out "$m" --epochs "$EPOCHS" --seed "$s" --threads 1 --no-generator $flags --quiet >/dev/null
    end=$(date +%s.%N)
    local held flat grainy enc
    held=$("$GDH" eval --model "$m" --data "$DATA" --split "$m.split.json" --json 2>/dev/null)
    flat=$("$GDH" eval --model "$m" --data "$FLAT" --split all --json 2>/dev/null)
    grainy=$("$GDH" eval --model "$m" --data "$GRAINY" --split all --json 2>/dev/null)
    python3 -c 'import json,sys
h,f,g=(json.loads(a) for a in sys.argv[1:4])
print(json.dumps({"variant":sys.argv[4],"seed":int(sys.argv[5]),"held_out":h["map_all"],"flat_clean":f["map_all"],
  "grainy_shaky":g["map_all"],"train_s":float(sys.argv[6]),"queries":h["queries"],"gallery":h["gallery"]}))' \
        "$held" "$flat" "$grainy" "$v" "$s" "$(python3 -c "print(round($end - $start, 1))")"
}
export -f run
export GDH DATA OUT FLAT GRAINY EPOCHS L0SIZE RSIZE
RESULTS="$OUT/results-e$EPOCHS.jsonl"
for v in $VARIANTS; do for s in $SEEDS; do echo "$v $s"; done; done \
    | xargs -P "$JOBS" -L 1 bash -c 'run "$0" "$1"' | tee "$RESULTS"
python3 - "$RESULTS" "$EPOCHS" "$L0SIZE" "$RSIZE" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("\nno-generator variant, %s epochs, batch 16, lite0 at %s px, resnet at %s px; mAP@all" % tuple(sys.argv[2:5]))
print("\n| hashing network | held-out | flat + clean | grainy + shaky | training s (1 thread) | seeds |\n|---|---|---|---|---|---|")
for v in dict.fromkeys(r["variant"] for r in rows):
    rs = sorted((r for r in rows if r["variant"] == v), key=lambda r: r["seed"])
    def ms(k):
        xs = [r[k] for r in rs]
        return "%.3f ± %.3f" % (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)
    print("| %s | %s | %s | %s | %.0f | %s |" % (v, ms("held_out"), ms("flat_clean"), ms("grainy_shaky"),
          statistics.mean(r["train_s"] for r in rs), " ".join(str(r["seed"]) for r in rs)))
EOF
