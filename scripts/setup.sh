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
# Azurite, Azure Blob Storage's emulator, for the az:// tests (tests/azfixtures.py); best effort:
# without node/npm or the registry, those tests are skipped and set-up goes on.
if command -v npm >/dev/null 2>&1 && \
   npm install --silent --no-audit --no-fund --prefix .ci/azurite azurite >/dev/null 2>&1; then
  :
else
  echo "setup: Azurite not installed (needs npm and the npm registry); the az:// tests will be skipped"
fi
