#!/usr/bin/env bash
# Every benchmark at WikiText-103 scale on one CUDA GPU, and the CUDA tests, in at most 8 minutes (BUDGET seconds).
#   bash benchmarks/gpu_all.sh [OUT_DIR [PART ...]]     (default: benchmarks/results/gpu, every part, in this order)
# OUT_DIR receives three files: tables.md (every part's tables, then a summary of each part's status, wall time and
# budget), results.json (every part's JSON, under its name, and that summary) and gpu_all.log (everything printed,
# fairseq's logs included). The corpus, checkpoints and per-part files go to WORK (default benchmarks/results/gpu-work).
#
# PART and its budget in seconds (cut to what is left of BUDGET, default 480; a part past its budget is stopped and
# marked "timeout", one that would start with under 10 s left is "skipped"). Each part runs alone too.
#   cuda_tests   120  python -m pytest tests/test_cuda.py: its summary line, and any failures
#   output_layer  60  output layer + loss, forward and backward, 8,192 tokens x 1,024, fp32 and bf16: ours (tied
#                     adaptive softmax, factor 4; its label-smoothed loss; full softmax) against fairseq's
#                     AdaptiveSoftmax + adaptive_loss, torch's AdaptiveLogSoftmaxWithLoss, F.cross_entropy and
#                     fairseq's label_smoothed_cross_entropy; ms and MiB above inputs + weights
#   train_step    60  a training step of 16 blocks x 1,024 (FFN 4,096, 8 heads), 512 x 16 tokens, bf16 and fp32: ours
#                     against fairseq's transformer_lm_wiki103 + adaptive_loss, in one process
#   train_e2e    180  fairseq-train, 100 updates, then fairseq-eval-lm (fp16) on each LM checkpoint, on a Zipf corpus
#                     with 267,744 words (benchmarks/synthetic_corpus.py, 1M tokens, written once into WORK): the
#                     adaptive LM (adaptive_lm_wiki103 with 8 blocks), Transformer-XL base and AWD-LSTM under
#                     --task bptt_lm, translation (adaptive_transformer, 6+6 x 512); bf16 through
#                     fairseq-adaptive-train's entry point and fp16 through fairseq-train's; words/s, peak MiB, final
#                     loss, whether a logged loss was inf/nan
#   txl           45  Transformer-XL base (16 x 410, 10 heads of 41, inner 2,100, 60 streams of 150 tokens, memory
#                     150, cutoffs 20000,40000,200000) against fairseq's transformer_xl, equal weights; fairseq's needs
#                     transformers 4.35.2 (requirements/benchmarks.txt): without it its row says why, ours runs alone
#   lstm          45  AWD-LSTM's body (3 layers of 1,150, m=400, 80 streams of 70 tokens, full softmax tied) against
#                     fairseq's lstm_lm; DeFINE computed and cached; weight drop 0.5 with cuDNN's weight-copy warnings
#   define_block  30  DeFINE's block of Table 2 (n=128, k=4,096, m=384, N=3), 8,192 tokens, fp32 and bf16
#   eval_lm       60  fairseq-eval-lm --fp16 of a 16-block fairseq adaptive LM (fairseq's transformer_lm, 20 updates
#                     --fp16) and of the same weights converted to ours, on the synthetic corpus; with LM_CORPUS (a
#                     folder of train/valid/test .txt.gz, binarised into WORK by scripts/prepare_lm.sh, which needs
#                     fairseq-preprocess on PATH) on that text instead
# Vocabulary 267,744, cutoffs 20000,60000 and factor 4 wherever not said otherwise. Expected on an H200: about 6
# minutes; the budgets leave room for Triton's first compilations and the interpreter starts.
#
# Environment: DEVICE=cpu TINY=1 runs every part at tiny sizes on CPU with the same flags otherwise (fp32 where fp16
# needs CUDA): tests/test_gpu_dry_run.py does so, so that the GPU run cannot fail on an argument. BUDGET (seconds),
# WORK, PYTHON (default python3), LM_CORPUS. fairseq's entry points run through their Python functions (in-process,
# or python -m fairseq_cli.eval_lm), so nothing but python needs to be on PATH. Where only the checkout reaches the
# GPU machine, copy a corpus into it first (.device-data/ is git-ignored):
#   mkdir -p .device-data && cp -r CORPUS_DIR .device-data/lm   then   LM_CORPUS=.device-data/lm bash ... OUT_DIR
# On the GPU machine (Python 3.12, torch 2.11, numpy 2), with .device-kit made by
#   EXTRA="transformers==4.35.2 tokenizers==0.15.2 huggingface_hub==0.19.4" bash ../shared/device/prepare-kit.sh
# and carried:   source .device-kit/setup.sh && bash benchmarks/gpu_all.sh "$OUT/gpu"
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SELF=$ROOT/benchmarks/gpu_all.sh
OUT=$(mkdir -p "${1:-$ROOT/benchmarks/results/gpu}" && cd "${1:-$ROOT/benchmarks/results/gpu}" && pwd) || exit 2
shift || true
ALL="cuda_tests output_layer train_step train_e2e txl lstm define_block eval_lm"
declare -A LIMIT=([cuda_tests]=120 [output_layer]=60 [train_step]=60 [train_e2e]=180 [txl]=45 [lstm]=45
                  [define_block]=30 [eval_lm]=60)
PARTS=${*:-$ALL}
WORK=$(mkdir -p "${WORK:-$ROOT/benchmarks/results/gpu-work}" && cd "${WORK:-$ROOT/benchmarks/results/gpu-work}" && pwd)
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-480}
JSON=$WORK/json
mkdir -p "$JSON" "$WORK/logs"
CORPUS=${LM_CORPUS:-}
[[ -z "$CORPUS" || "$CORPUS" = /* ]] || CORPUS="$ROOT/$CORPUS"  # a relative LM_CORPUS is taken from the repository root

# sizes: the paper's, or tiny ones for the CPU dry run; every other flag is the same in both
DTYPES=fp32,bf16
if [ "${TINY:-0}" = 1 ]; then
  OUTPUT_LAYER=(--vocab 600 --cutoff 100,300 --dim 16 --tokens 64 --repeat 2 --warmup 1)
  TRAIN_STEP=(--vocab 600 --cutoff 100,300 --layers 1 --dim 16 --ffn 32 --heads 2 --tokens-per-sample 16
              --max-tokens 64 --repeat 2 --warmup 1)
  CORPUS_SIZE=(--vocab 600 --train-tokens 20000 --eval-tokens 2000 --pairs 400)
  E2E=(--size tiny --updates 3)
  TXL=(--vocab 600 --cutoff 100,200,400 --layers 1 --dim 16 --heads 2 --head-dim 8 --ffn 32 --tgt-len 8 --mem-len 8
       --batch 2 --repeat 2 --warmup 1)
  LSTM=(--vocab 600 --emb-dim 16 --hidden-dim 24 --layers 3 --tokens-per-sample 8 --batch 2 --repeat 2 --warmup 1)
  DEFINE=(--vocab 300 --n 16 --k 64 --m 32 --layers 3 --groups 4 --tokens 64 --repeat 2 --warmup 1)
  EVAL_LM=(--layers 1 --dim 16 --ffn 32 --heads 2 --tokens-per-sample 32 --max-tokens 256)
  EVAL_CUTOFF=100,300
else
  OUTPUT_LAYER=(--vocab 267744 --cutoff 20000,60000 --dim 1024 --tokens 8192 --repeat 10 --warmup 3)
  TRAIN_STEP=(--vocab 267744 --cutoff 20000,60000 --layers 16 --dim 1024 --ffn 4096 --heads 8 --tokens-per-sample 512
              --max-tokens 8192 --repeat 10 --warmup 3)
  CORPUS_SIZE=(--vocab 267744 --train-tokens 1000000 --eval-tokens 50000 --pairs 20000)
  E2E=(--size paper --updates 100)
  TXL=(--vocab 267744 --cutoff 20000,40000,200000 --layers 16 --dim 410 --heads 10 --head-dim 41 --ffn 2100
       --tgt-len 150 --mem-len 150 --batch 60 --repeat 5 --warmup 2)
  LSTM=(--vocab 267744 --emb-dim 400 --hidden-dim 1150 --layers 3 --tokens-per-sample 70 --batch 80 --repeat 5
        --warmup 2)
  DEFINE=(--vocab 267744 --n 128 --k 4096 --m 384 --layers 3 --groups 8 --tokens 8192 --repeat 10 --warmup 3)
  EVAL_LM=(--layers 16 --dim 1024 --ffn 4096 --heads 8 --tokens-per-sample 512 --max-tokens 8192)
  EVAL_CUTOFF=20000,60000
fi
FP16=(); [ "$DEVICE" = cuda ] && FP16=(--fp16)  # fairseq's fp16 needs CUDA: fp32 on CPU
SYNTHETIC=$WORK/synthetic

synthetic_corpus() {  # written once per size (the generator keeps a corpus written with the same arguments)
  "$PY" "$ROOT/benchmarks/synthetic_corpus.py" "$SYNTHETIC" "${CORPUS_SIZE[@]}" >&2
}

cuda_tests() {
  local log=$WORK/logs/pytest.txt rc limit=$(( ${GPU_ALL_LIMIT:-120} - 10 ))
  (( limit >= 5 )) || limit=5
  # stopped a little before the part's own limit, so that its summary is still written
  (cd "$ROOT" && timeout -k 5 "$limit" "$PY" -m pytest -v -p no:cacheprovider -rfE tests/test_cuda.py) > "$log" 2>&1
  rc=$?
  cat "$log" >&2
  "$PY" - "$log" "$rc" "$JSON/cuda_tests.json" <<'EOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
summary = next((l.strip("= ") for l in reversed(lines) if " in " in l and ("passed" in l or "skipped" in l
                or "failed" in l or "error" in l or "no tests ran" in l)), None)
if summary is None:
    summary = ("stopped at its time limit" if sys.argv[2] in ("124", "137") else "no summary line") + \
        f", after {sum(' PASSED' in l for l in lines)} passed, {sum(' FAILED' in l for l in lines)} failed " \
        "(see gpu_all.log)"
failures = [l for l in lines if l.startswith(("FAILED", "ERROR"))]
print(f"CUDA tests (python -m pytest tests/test_cuda.py): {summary}")
for line in failures:
    print(f"- {line}")
json.dump({"rc": int(sys.argv[2]), "summary": summary, "failures": failures}, open(sys.argv[3], "w"), indent=1)
EOF
  return "$rc"
}

run_part() {
  cd "$ROOT/benchmarks" || return 2
  case "$1" in
    cuda_tests) cuda_tests ;;
    output_layer)
      "$PY" output_layer.py --device "$DEVICE" "${OUTPUT_LAYER[@]}" --dtypes "$DTYPES" --no-cpu-memory \
          --json "$JSON/output_layer.json" ;;
    train_step)
      "$PY" train_step.py --device "$DEVICE" "${TRAIN_STEP[@]}" --dtype "$DTYPES" \
          --json "$JSON/train_step.json" ;;
    train_e2e)
      synthetic_corpus || return 1
      "$PY" train_e2e.py --data "$SYNTHETIC" --work "$WORK/train_e2e" --device "$DEVICE" "${E2E[@]}" \
          --bodies lm,txl,lstm,mt --precisions bf16,fp16 --json "$JSON/train_e2e.json" ;;
    txl) "$PY" txl.py --device "$DEVICE" "${TXL[@]}" --json "$JSON/txl.json" ;;
    lstm) "$PY" lstm.py --device "$DEVICE" "${LSTM[@]}" --json "$JSON/lstm.json" ;;
    define_block)
      "$PY" define_block.py --device "$DEVICE" "${DEFINE[@]}" --dtypes "$DTYPES" --json "$JSON/define_block.json" ;;
    eval_lm)
      local data cutoff=$EVAL_CUTOFF
      if [ -n "$CORPUS" ]; then
        [ -e "$WORK/lm-bin/dict.txt" ] || bash "$ROOT/scripts/prepare_lm.sh" "$CORPUS" "$WORK/lm-bin" >&2 || return 1
        data=$WORK/lm-bin
      else
        synthetic_corpus || return 1
        data=$SYNTHETIC/lm
      fi
      rm -rf "$WORK/eval_lm"  # eval_lm.py reuses a checkpoint it finds there
      "$PY" eval_lm.py --device "$DEVICE" "${EVAL_LM[@]}" --cutoff "$cutoff" --data "$data" "${FP16[@]}" \
          --work "$WORK/eval_lm" --json "$JSON/eval_lm.json" ;;
    *) echo "unknown part '$1': choose from $ALL" >&2; return 2 ;;
  esac
}

if [ -n "${GPU_ALL_PART:-}" ]; then  # one part, in a process of its own (the loop below starts it under timeout)
  run_part "$GPU_ALL_PART"
  exit $?
fi

for part in $PARTS; do
  [ -n "${LIMIT[$part]:-}" ] || { echo "unknown part '$part': choose from $ALL" >&2; exit 2; }
done
if [ -n "$CORPUS" ] && [ ! -f "$CORPUS/train.txt.gz" ]; then
  echo "LM_CORPUS=$CORPUS holds no train.txt.gz: point it at a folder of train/valid/test .txt.gz" >&2; exit 2
fi

START=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
export PYTHONUNBUFFERED=1
{
  echo
  echo "# gpu_all.sh $(date -u '+%F %H:%M UTC'): parts $PARTS; budget ${BUDGET} s" \
       "$([ "${TINY:-0}" = 1 ] && echo "(TINY sizes)")"
  "$PY" - <<'EOF' 2>/dev/null || echo "(python could not report the versions)"
import importlib.metadata as md, platform, subprocess
try:  # nvidia-smi answers without the second or two that importing torch takes
    device = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True, timeout=30).stdout.strip() or "no GPU"
except (OSError, subprocess.SubprocessError):
    device = "no GPU (no nvidia-smi)"
versions = []
for package in ("torch", "triton", "numpy", "fairseq-fixed", "fairseq", "transformers"):
    try:
        versions.append(f"{package} {md.version(package)}")
    except md.PackageNotFoundError:
        pass
print(f"{device}; python {platform.python_version()}, " + ", ".join(versions))
EOF
} | tee -a "$OUT/tables.md" "$OUT/gpu_all.log"

for part in $PARTS; do
  left=$(awk -v b="$BUDGET" -v e="$(elapsed "$START")" 'BEGIN { printf "%d", b - e }')
  limit=$(( left < LIMIT[$part] ? left : LIMIT[$part] ))
  out=$WORK/logs/$part.out err=$WORK/logs/$part.err
  rm -f "$JSON/$part.json"
  if (( limit < 10 )); then
    status=skipped rc=-1 wall=0.0
    echo "## $part: skipped, ${left} s left of the ${BUDGET} s budget" | tee -a "$OUT/tables.md" "$OUT/gpu_all.log"
  else
    t0=$(date +%s.%N)
    GPU_ALL_PART=$part GPU_ALL_LIMIT=$limit timeout -k 10 "$limit" bash "$SELF" "$OUT" > "$out" 2> "$err"
    rc=$?
    wall=$(elapsed "$t0")
    case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status="failed (exit $rc)" ;; esac
    {
      echo; echo "## $part ($status, ${wall} s of ${limit} s)"
      grep -v '^INFO' "$out"
      if [ "$rc" != 0 ]; then
        echo "last lines of its error output:"
        echo '```'; grep -v '^INFO' "$err" | tail -n 15; echo '```'
      fi
    } | tee -a "$OUT/tables.md"
    { echo "## $part ($status, ${wall} s)"; cat "$out" "$err"; } >> "$OUT/gpu_all.log"
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$part" "$status" "$rc" "$wall" "${LIMIT[$part]}" >> "$WORK/parts.tsv"
done

"$PY" - "$WORK/parts.tsv" "$JSON" "$OUT/results.json" "$(elapsed "$START")" "$BUDGET" <<'EOF' | tee -a "$OUT/tables.md"
import json, sys
from pathlib import Path
parts = {}
for line in Path(sys.argv[1]).read_text().splitlines():  # the last run of each part wins
    name, status, rc, wall, budget = line.split("\t")
    parts[name] = {"status": status, "rc": int(rc), "wall_s": float(wall), "budget_s": int(budget)}
results = {"parts": parts, "total_wall_s_this_call": float(sys.argv[4]), "budget_s": int(sys.argv[5])}
for path in sorted(Path(sys.argv[2]).glob("*.json")):
    results[path.stem] = json.loads(path.read_text())
Path(sys.argv[3]).write_text(json.dumps(results, indent=1))
print(f"\n## summary: {sys.argv[4]} s of the {sys.argv[5]} s budget in this call\n")
print("| part | status | wall s | budget s |\n|---|---|---:|---:|")
for name, p in parts.items():
    print(f"| {name} | {p['status']} | {p['wall_s']:.1f} | {p['budget_s']} |")
EOF
