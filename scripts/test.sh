#!/usr/bin/env bash
# Set up .venv if needed and run the whole test suite (slow tests on the real model included).
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
