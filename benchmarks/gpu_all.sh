#!/usr/bin/env bash
# Every benchmark at WikiText-103 scale on one CUDA GPU, in one go: tables on stdout, JSON under OUT_DIR.
#   bash benchmarks/gpu_all.sh [OUT_DIR]        (default: benchmarks/results/gpu)
# Sizes: vocabulary 267,744, cutoffs 20000,60000, factor 4, width 1024, 8,192 tokens (output layer and training
# step: 16 blocks, FFN 4096, 8 heads, tokens-per-sample 512); eval-lm with a model of that shape on the corpus in
# LM_CORPUS (train/valid/test .txt.gz; default ../shared/data/lm, else the bundled sample with cutoffs 2000,8000);
# the DeFINE block of the paper's Table 2 (n=128, k=4096, m=384). fairseq-* must be on PATH.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/benchmarks/results/gpu}
mkdir -p "$OUT"
cd "$ROOT/benchmarks"
PAPER=(--vocab 267744 --cutoff 20000,60000)
MODEL=(--layers 16 --dim 1024 --ffn 4096 --heads 8)
CORPUS=${LM_CORPUS:-$ROOT/../shared/data/lm}
EVAL=(--cutoff 2000,8000)
if [ -f "$CORPUS/train.txt.gz" ]; then
  [ -e "$OUT/eval_lm/bin/dict.txt" ] || bash "$ROOT/scripts/prepare_lm.sh" "$CORPUS" "$OUT/eval_lm/bin" > /dev/null
  EVAL=(--cutoff 20000,60000 --data "$OUT/eval_lm/bin")
fi
{
  echo "# $(date -u +%F) $(python -c 'import torch; print(torch.cuda.get_device_name(), "torch", torch.__version__)')"
  python output_layer.py --device cuda "${PAPER[@]}" --dim 1024 --tokens 2048,8192 --dtypes fp32,bf16 \
      --json "$OUT/output_layer.json"
  for dtype in bf16 fp32; do
    python train_step.py --device cuda --dtype "$dtype" "${MODEL[@]}" "${PAPER[@]}" --tokens-per-sample 512 \
        --max-tokens 8192 --json "$OUT/train_step_$dtype.json"
  done
  python eval_lm.py --device cuda "${MODEL[@]}" "${EVAL[@]}" --tokens-per-sample 512 --max-tokens 8192 \
      --fp16 --work "$OUT/eval_lm"
  python define_block.py --device cuda --vocab 267744 --n 128 --k 4096 --m 384 --layers 3 --groups 64 \
      --tokens 8192 --dtypes fp32,bf16 --json "$OUT/define_block.json"
} 2>&1 | grep -v "^INFO" | tee "$OUT/tables.md"
