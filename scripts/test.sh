#!/usr/bin/env bash
# Install (first run: a virtualenv in .venv with every dependency pinned) and run the test suite.
# Usage: [PYTHON=python3.13] [FAIRSEQ_ADAPTIVE_VENV=DIR] bash scripts/test.sh [PYTEST_ARGS...]
# (PYTHON and FAIRSEQ_ADAPTIVE_VENV as for scripts/install.sh: the Python, 3.11 to 3.13, and the venv, default .venv)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${FAIRSEQ_ADAPTIVE_VENV:-$ROOT/.venv}
bash "$ROOT/scripts/install.sh" "$VENV"
cd "$ROOT" && exec "$VENV/bin/python" -m pytest -q "$@"
