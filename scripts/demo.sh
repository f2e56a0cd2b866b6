#!/usr/bin/env bash
# Set up, then run the demo on a local store (./demo-store, recreated each run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/demo.py "${1:-demo-store}"
