#!/usr/bin/env bash
# Set up everything the tests need, lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/ruff check fenliu tests scripts
.venv/bin/mypy
exec .venv/bin/python -m pytest -ra "$@"
