#!/usr/bin/env bash
# Set up .venv if needed, run the linters (scripts/lint.sh), then the whole test suite (slow tests
# on the real model and engines included). CI runs exactly this.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/lint.sh
exec .venv/bin/python -m pytest "$@"
