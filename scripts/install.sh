#!/usr/bin/env bash
# Create (or reuse) a virtualenv with every dependency pinned by requirements/constraints.txt, then install
# fairseq_adaptive into it in editable mode.
#   Usage: [PYTHON=python3.13] bash scripts/install.sh [VENV_DIR]
# VENV_DIR: $1, else $FAIRSEQ_ADAPTIVE_VENV, else .venv.
# Supported Pythons: 3.11, 3.12, 3.13. PYTHON (default python3, or the venv's own Python when the venv exists) picks
# one; a venv made with another Python minor version is recreated with the one asked for.
# torch is installed first and alone: a requirement resolved before it would let pip choose a CUDA build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${1:-${FAIRSEQ_ADAPTIVE_VENV:-$ROOT/.venv}}
C="$ROOT/requirements/constraints.txt"
STAMP="$VENV/.fairseq_adaptive-installed"
SUPPORTED="3.11 3.12 3.13"
HOW="pick one with PYTHON (a name on the PATH or a full path) for install.sh, test.sh or demo.sh alike, e.g.
  PYTHON=python3.12 bash scripts/test.sh"
die() { echo "install.sh: $*" >&2; exit 2; }

# Which Python: $PYTHON if given, else the existing venv's, else python3. Checked before anything is installed.
if [ -n "${PYTHON:-}" ] || [ ! -x "$VENV/bin/python" ]; then PY=${PYTHON:-python3}; else PY="$VENV/bin/python"; fi
command -v "$PY" >/dev/null 2>&1 || die "no Python '$PY' found. fairseq_adaptive supports Python ${SUPPORTED// /, }; $HOW"
PYVER=$("$PY" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) ||
  die "'$PY' does not run (a pyenv shim with no version selected?). fairseq_adaptive supports Python ${SUPPORTED// /, }; $HOW"
case " $SUPPORTED " in
  *" ${PYVER%.*} "*) ;;
  *) die "'$PY' is Python $PYVER; fairseq_adaptive supports Python ${SUPPORTED// /, } only; $HOW" ;;
esac

want="python $PYVER $(cat "$C" "$ROOT/requirements/base.txt" "$ROOT/setup.py" "$ROOT/scripts/install.sh" | sha1sum | cut -c1-12)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then exit 0; fi

if [ -x "$VENV/bin/python" ]; then
  HAVE=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo none)
  if [ "$HAVE" != "${PYVER%.*}" ]; then
    [ -f "$VENV/pyvenv.cfg" ] || die "$VENV holds Python $HAVE, not $PYVER, and is not a virtualenv: give another VENV_DIR"
    echo "install.sh: $VENV was made with Python $HAVE; recreating it with Python $PYVER ($PY)" >&2
    "$PY" -m venv --clear "$VENV"
  fi
else
  "$PY" -c 'import venv, ensurepip' 2>/dev/null ||
    die "Python $PYVER ($PY) cannot make a virtualenv (on Debian/Ubuntu: apt install python${PYVER%.*}-venv)"
  echo "install.sh: creating $VENV with Python $PYVER ($PY)" >&2
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip install -q -c "$C")
"${PIP[@]}" torch==2.13.0
# Triton (pinned in the constraints to the version the CUDA torch 2.13.0 requires): its CPU interpreter runs the
# fused-loss kernels in the tests. A CUDA torch brings it; a CPU torch does not, and it is installed here.
"${PIP[@]}" --no-deps triton
"${PIP[@]}" cython numpy setuptools wheel
"${PIP[@]}" -r "$ROOT/requirements/base.txt"
# fairseq-fixed's Cython extensions are compiled against the numpy in the venv: ones built for numpy 1 (a venv
# upgraded from numpy 1, or a wheel that pip cached from such a build) do not load under numpy 2, so a venv whose
# extensions do not import gets them rebuilt, bypassing pip's wheel cache.
FAIRSEQ_EXT="import fairseq, fairseq.data.data_utils_fast, fairseq.data.token_block_utils_fast"
if ! "$VPY" -c "$FAIRSEQ_EXT" 2>/dev/null; then
  "$VPY" -m pip show -q fairseq-fixed 2>/dev/null &&
    echo "install.sh: fairseq's compiled extensions do not load with numpy" \
      "$("$VPY" -c 'import numpy; print(numpy.__version__)'); rebuilding fairseq-fixed" >&2
  "${PIP[@]}" --force-reinstall --no-cache-dir --no-build-isolation --no-deps fairseq-fixed==0.12.3.1
fi
"${PIP[@]}" --no-build-isolation --no-deps --use-pep517 -e "$ROOT"
"$VPY" -c "$FAIRSEQ_EXT, fairseq_adaptive"
echo "$want" > "$STAMP"
