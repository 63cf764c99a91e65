#!/usr/bin/env bash
# The ablation table of Docs/training.md: GDH and each ablation (and the HOG + ITQ
# baseline) trained with the same budget on the same synthetic data, several seeds each,
# evaluated on the held-out sketches of each run's split; prints one JSON line per run
# and a markdown table of mean ± spread (sample standard deviation) at the end.
#
#   bash Tools/ablations.sh [--classes N] [--per-class M] [--epochs E] [--batch B]
#                           [--seeds "1 2 3"] [--variants "gdh no-generator ..."] [--out DIR]
#                           [--hash-lr-factor F] [--threads T] [--image-size PX]
#
# Variants: gdh, no-generator, no-cycle, no-adversarial, detach-hash, no-attention,
# no-triplet, hog-itq (each but gdh and hog-itq is the gdh train flag of that name).
set -euo pipefail
cd "$(dirname "$0")/.."
CLASSES=10 PER_CLASS=60 EPOCHS=12 BATCH=16 SEEDS="1 2 3" THREADS=1 OUT=ablation-runs FACTOR=10 SIZE=32
VARIANTS="gdh no-generator no-cycle no-adversarial detach-hash hog-itq"
while [ $# -gt 0 ]; do
    case "$1" in
        --classes) CLASSES=$2; shift 2 ;;
        --per-class) PER_CLASS=$2; shift 2 ;;
        --epochs) EPOCHS=$2; shift 2 ;;
        --batch) BATCH=$2; shift 2 ;;
        --seeds) SEEDS=$2; shift 2 ;;
        --variants) VARIANTS=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --hash-lr-factor) FACTOR=$2; shift 2 ;;
        --image-size) SIZE=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        *) echo "ablations.sh: unknown option $1" >&2; exit 64 ;;
    esac
done
# gdh-train runs synth, train and eval with the arguments gdh takes (GDH may also be a
# gdh, which hands these verbs to the gdh-train beside it).
GDH=${GDH:-.build/release/gdh-train}
[ -x "$GDH" ] || swift build -c release --product gdh-train >/dev/null
mkdir -p "$OUT"
DATA="$OUT/data-c$CLASSES-m$PER_CLASS"
[ -d "$DATA/images" ] || "$GDH" synth --out "$DATA" --classes "$CLASSES" --per-class "$PER_CLASS" --seed 1 --size 96 >&2
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
for v in $VARIANTS; do
    for s in $SEEDS; do
        m="$OUT/$v-seed$s.safetensors"
        start=$(date +%s.%N)
        if [ "$v" = hog-itq ]; then
            # The same split as `gdh train --seed s` makes (random, seed s).
            json=$("$GDH" eval --baseline hog-itq --data "$DATA" --split random --seed "$s" --json 2>/dev/null)
        else
            flag=""; [ "$v" != gdh ] && flag="--$v"
            "$GDH" train --data "$DATA" --out "$m" --epochs "$EPOCHS" --batch "$BATCH" --seed "$s" --threads "$THREADS" \
                --image-size "$SIZE" --hash-lr-factor "$FACTOR" $flag --quiet >/dev/null
            json=$("$GDH" eval --model "$m" --data "$DATA" --split "$m.split.json" --json 2>/dev/null)
        fi
        end=$(date +%s.%N)
        line=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(json.dumps({"variant":sys.argv[2],"seed":int(sys.argv[3]),"map_all":d["map_all"],"precision_at_200":d["precision_at_200"],"queries":d["queries"],"gallery":d["gallery"],"seconds":float(sys.argv[4])}))' "$json" "$v" "$s" "$(python3 -c "print($end - $start)")")
        echo "$line" | tee -a "$RESULTS"
    done
done
python3 - "$RESULTS" "$CLASSES" "$PER_CLASS" "$EPOCHS" "$BATCH" "$FACTOR" "$SIZE" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("\n%s classes x %s photos and sketches (gdh synth --seed 1, 96 px files), %s epochs, batch %s, H lr factor %s, %s px model"
      % tuple(sys.argv[2:8]))
print("\n| variant | mAP@all | precision@200 | wall time per run (s) | seeds |\n|---|---|---|---|---|")
for v in dict.fromkeys(r["variant"] for r in rows):
    rs = [r for r in rows if r["variant"] == v]
    def ms(k):
        xs = [r[k] for r in rs]
        return "%.3f ± %.3f" % (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)
    print("| %s | %s | %s | %.0f | %s |" % (v, ms("map_all"), ms("precision_at_200"),
          statistics.mean(r["seconds"] for r in rs), " ".join(str(r["seed"]) for r in rs)))
EOF
