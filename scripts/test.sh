#!/usr/bin/env bash
# Install (first run: a virtualenv in .venv with every dependency pinned) and run the test suite.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/install.sh"
cd "$ROOT" && exec .venv/bin/python -m pytest -q "$@"
