#!/usr/bin/env bash
# Sets up and runs every test: installs the Debian packages, builds, runs swift test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash Tools/setup.sh
bash Tools/setup_lite0.sh
swift build --build-tests
swift test --skip-build
