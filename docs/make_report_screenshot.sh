#!/usr/bin/env bash
# Regenerates docs/report.png, the README's picture of `meter report`: a real `meter run` of the
# CPU training example on two simulated GPUs (300 W and 150 W), its report, and a headless
# Chromium screenshot of the report's first screen. Run from anywhere; needs the repository's
# .venv with the report extra (pip install -e '.[report]') and Debian's chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

METER_SIMULATE_GPUS=300,150 meter run --quiet --output "$work/r.jsonl" -- python examples/train_cpu.py
meter report "$work/r.jsonl" -o "$work/report.html"
chromium --headless=new --disable-gpu --no-sandbox --hide-scrollbars \
    --user-data-dir="$work/profile" --virtual-time-budget=5000 --window-size=1200,1600 \
    --screenshot="$PWD/docs/report.png" "file://$work/report.html"
echo "wrote docs/report.png ($(stat -c %s docs/report.png) bytes)"
