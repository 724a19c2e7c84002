#!/usr/bin/env bash
# Create (or reuse) a virtualenv with every dependency pinned by requirements/constraints.txt, then install
# fairseq_adaptive into it in editable mode.  Usage: bash scripts/install.sh [VENV_DIR]   (default: .venv)
# torch is installed first and alone: a requirement resolved before it would let pip choose a CUDA build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${1:-${FAIRSEQ_ADAPTIVE_VENV:-$ROOT/.venv}}
C="$ROOT/requirements/constraints.txt"
STAMP="$VENV/.fairseq_adaptive-installed"
want=$(cat "$C" "$ROOT/requirements/base.txt" "$ROOT/setup.py" | sha1sum | cut -c1-12)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q -c "$C")
"${PIP[@]}" torch==2.13.0
# Triton (pinned in the constraints): its CPU interpreter runs the fused-loss kernel in the tests; CUDA builds of
# torch bring their own, which is then kept.
"$VENV/bin/python" -c "import triton" 2>/dev/null || "${PIP[@]}" --no-deps triton
"${PIP[@]}" cython numpy setuptools wheel
"${PIP[@]}" -r "$ROOT/requirements/base.txt"
"$VENV/bin/python" -c "import fairseq" 2>/dev/null || \
  "${PIP[@]}" --no-build-isolation --no-deps fairseq-fixed==0.12.3.1
"${PIP[@]}" --no-build-isolation --no-deps -e "$ROOT"
"$VENV/bin/python" -c "import fairseq, fairseq.data.data_utils_fast, fairseq_adaptive" 
echo "$want" > "$STAMP"
