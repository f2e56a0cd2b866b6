#!/usr/bin/env bash
# Create .venv (if needed) and install tensorcas with everything tests and benchmarks use.
# torch is pinned by constraints.txt to the CPU build this project is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
