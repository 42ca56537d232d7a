#!/usr/bin/env bash
# Install into a fresh virtual environment, then lint, type-check and run the tests.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test,dev]"
.venv/bin/ruff check src tests scripts
.venv/bin/mypy
.venv/bin/pytest "$@"
