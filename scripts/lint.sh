#!/usr/bin/env bash
# The checks anyone can run (and CI runs before the tests): ruff's lint and format, mypy on the
# package, and import-linter's contracts (who may import whom), all configured in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check llmdistill scripts tests examples
.venv/bin/ruff format --check llmdistill scripts tests examples
.venv/bin/mypy
.venv/bin/lint-imports
