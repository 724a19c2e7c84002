#!/usr/bin/env bash
# Every benchmark at WikiText-103 scale on one CUDA GPU: tables on stdout and in OUT_DIR/tables.md, JSON beside it.
#   bash benchmarks/gpu_all.sh [OUT_DIR [PART ...]]     (default: benchmarks/results/gpu, every part)
# PART: output_layer, train_step, eval_lm, define_block (to split the run into shorter calls).
# Sizes: vocabulary 267,744, cutoffs 20000,60000, factor 4, width 1024, 8,192 tokens (output layer and training
# step: 16 blocks, FFN 4096, 8 heads, tokens-per-sample 512); eval-lm with a model of that shape on the corpus in
# LM_CORPUS (a folder of train/valid/test .txt.gz; unset: the bundled sample, with cutoffs 2000,8000);
# the DeFINE block of the paper's Table 2 (n=128, k=4096, m=384). fairseq-* must be on PATH.
# OUT_DIR receives six small files only (tables.md and five JSON files); the binarised corpus and the eval-lm
# checkpoints go to WORK (default benchmarks/results/gpu-work). Where only the checkout reaches the GPU machine, copy
# a corpus into it first (.device-data/ is git-ignored):  mkdir -p .device-data && cp -r CORPUS_DIR .device-data/lm
# then  LM_CORPUS=.device-data/lm bash benchmarks/gpu_all.sh OUT_DIR
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/benchmarks/results/gpu}" && cd "${1:-$ROOT/benchmarks/results/gpu}" && pwd)
shift || true
PARTS=${*:-output_layer train_step eval_lm define_block}
WORK=${WORK:-$ROOT/benchmarks/results/gpu-work}
mkdir -p "$WORK"
cd "$ROOT/benchmarks"
PAPER=(--vocab 267744 --cutoff 20000,60000)
MODEL=(--layers 16 --dim 1024 --ffn 4096 --heads 8)
CORPUS=${LM_CORPUS:-}
[[ -z "$CORPUS" || "$CORPUS" = /* ]] || CORPUS="$ROOT/$CORPUS"  # a relative LM_CORPUS is taken from the repository root
if [ -n "$CORPUS" ] && [ ! -f "$CORPUS/train.txt.gz" ]; then
  echo "LM_CORPUS=$CORPUS holds no train.txt.gz: point it at a folder of train/valid/test .txt.gz" >&2; exit 2
fi

run_part() {
  case "$1" in
    output_layer)
      python output_layer.py --device cuda "${PAPER[@]}" --dim 1024 --tokens 2048,8192 --dtypes fp32,bf16 \
          --json "$OUT/output_layer.json" ;;
    train_step)
      for dtype in bf16 fp32; do
        python train_step.py --device cuda --dtype "$dtype" "${MODEL[@]}" "${PAPER[@]}" --tokens-per-sample 512 \
            --max-tokens 8192 --json "$OUT/train_step_$dtype.json"
      done ;;
    eval_lm)
      local eval=(--cutoff 2000,8000)
      if [ -n "$CORPUS" ]; then
        [ -e "$WORK/lm-bin/dict.txt" ] || bash "$ROOT/scripts/prepare_lm.sh" "$CORPUS" "$WORK/lm-bin" > /dev/null
        eval=(--cutoff 20000,60000 --data "$WORK/lm-bin")
      fi
      python eval_lm.py --device cuda "${MODEL[@]}" "${eval[@]}" --tokens-per-sample 512 --max-tokens 8192 \
          --fp16 --work "$WORK/eval_lm" --json "$OUT/eval_lm.json" ;;
    define_block)
      python define_block.py --device cuda --vocab 267744 --n 128 --k 4096 --m 384 --layers 3 \
          --tokens 8192 --dtypes fp32,bf16 --json "$OUT/define_block.json" ;;
    *) echo "unknown part '$1': choose from output_layer train_step eval_lm define_block" >&2; return 2 ;;
  esac
}

{
  echo "# $(date -u +%F) $(python -c 'import torch; print(torch.cuda.get_device_name(), "torch", torch.__version__)')"
  for part in $PARTS; do run_part "$part"; done
} 2>&1 | grep -v "^INFO" | tee -a "$OUT/tables.md"
