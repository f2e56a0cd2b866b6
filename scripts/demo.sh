#!/usr/bin/env bash
# Set up .venv, run the demo on a local store (./demo-store, rewritten each run), then say how to
# use the environment and the command line on what the demo wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
STORE=${1:-demo-store}
.venv/bin/python examples/demo.py "$STORE"
cat <<NEXT

Next, try the command line on the store the demo wrote. The environment is .venv; activate it
in this shell first (it puts 'tensorcas' and the right 'python' on PATH):
  source .venv/bin/activate
  tensorcas ls $STORE step0/params
  tensorcas du $STORE --top 1
  tensorcas diff $STORE:step0/params/ $STORE:step1/params/
  tensorcas show $STORE step0/params/2.weight
NEXT
