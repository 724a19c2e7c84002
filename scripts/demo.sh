#!/usr/bin/env bash
# The main job on the bundled corpus (State of the Union addresses, 458K training tokens): install, binarise,
# train a small adaptive-input + tied adaptive-softmax LM on CPU (1,000 updates: about four minutes on 2 cores), evaluate
# with fairseq-eval-lm. A fixed number of updates and a fixed seed give the same perplexity on one machine, whatever
# its speed or load (other processors may differ in the last digits). Usage: [PYTHON=python3.13] [FAIRSEQ_ADAPTIVE_VENV=DIR] bash scripts/demo.sh [UPDATES=1000]
# [WORK_DIR=work_dirs/demo]   (PYTHON and FAIRSEQ_ADAPTIVE_VENV as for scripts/install.sh; the venv defaults to .venv)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
UPDATES=${1:-1000}; WORK=${2:-$ROOT/work_dirs/demo}
VENV=${FAIRSEQ_ADAPTIVE_VENV:-$ROOT/.venv}
bash "$ROOT/scripts/install.sh" "$VENV"
source "$VENV/bin/activate"
mkdir -p "$WORK"
[ -f "$WORK/bin/dict.txt" ] || bash "$ROOT/scripts/prepare_lm.sh" "$ROOT/data/lm-sample" "$WORK/bin" > "$WORK/preprocess.log" 2>&1
rm -rf "$WORK/checkpoints"
fairseq-train "$WORK/bin" --user-dir "$ROOT/fairseq_adaptive" --cpu \
  --task adaptive_language_modeling --arch adaptive_lm_tiny --criterion adaptive_cross_entropy \
  --decoder-layers 2 --decoder-embed-dim 128 --decoder-ffn-embed-dim 512 --decoder-attention-heads 4 \
  --adaptive-input-factor 4 --adaptive-softmax-factor 4 --dropout 0.1 --adaptive-softmax-dropout 0.1 \
  --optimizer adam --lr 0.002 --lr-scheduler inverse_sqrt --warmup-updates 100 --clip-norm 0.5 \
  --tokens-per-sample 128 --max-tokens 4096 --max-update "$UPDATES" --seed 1 \
  --save-dir "$WORK/checkpoints" --no-epoch-checkpoints --log-format simple --log-interval 50 --no-progress-bar \
  2>&1 | tee "$WORK/train.log" | grep -E "cutoffs derived|fraction of training|num. shared model params| valid on |done training"
fairseq-eval-lm "$WORK/bin" --user-dir "$ROOT/fairseq_adaptive" --cpu --path "$WORK/checkpoints/checkpoint_best.pt" \
  --gen-subset test --tokens-per-sample 128 --context-window 96 --max-tokens 4096 2>&1 | tee "$WORK/eval.log" | \
  grep -E "Evaluated|Perplexity"
