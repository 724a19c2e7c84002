#!/usr/bin/env python
"""fairseq-eval-lm words/s on the same checkpoint and data: a model of fairseq's built-in adaptive LM
(``transformer_lm`` with tied adaptive input / softmax, as ``transformer_lm_wiki103``) scored by fairseq, then the
same weights converted to ``adaptive_lm`` (scripts/convert_fairseq_checkpoint.py) scored through our target-only
path. The weights come from a few updates on the data (speed does not depend on them); the perplexities must agree.
The training and the conversion run in this process (fairseq-train's and the script's own functions), each
fairseq-eval-lm in a process of its own (``python -m fairseq_cli.eval_lm``).

  python benchmarks/eval_lm.py                     # CPU: the bundled corpus, 2 blocks, d=256
  python benchmarks/eval_lm.py --device cuda --data data-bin/wikitext-103 --layers 16 --dim 1024 --ffn 4096 \
      --heads 8 --cutoff 20000,60000 --tokens-per-sample 512 --max-tokens 8192 --fp16
"""

import argparse
import importlib.util
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import torch

from common import print_table  # same folder

ROOT = Path(__file__).resolve().parents[1]
_SPEED = re.compile(r"Evaluated ([\d,]+) tokens in ([\d.]+)s \(([\d.]+) tokens/s\)")
_PPL = re.compile(r"Loss \(base 2\): ([\d.]+), Perplexity: ([\d.]+)")


def run(cmd):
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def train_in_process(argv):
    """fairseq-train's console entry point, here; its log (stdout) goes to stderr, as this script's table is stdout."""
    from fairseq_cli import train

    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)
    old, sys.argv = sys.argv, ["fairseq-train", *map(str, argv)]
    try:
        train.cli_main()
    finally:
        sys.argv = old
    torch.cuda.empty_cache()  # (no-op without CUDA) the evaluations run in processes of their own, beside this one


def convert(fairseq_ckpt: Path, ours_ckpt: Path) -> None:
    spec = importlib.util.spec_from_file_location("convert_fairseq_checkpoint",
                                                  ROOT / "scripts" / "convert_fairseq_checkpoint.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main([str(fairseq_ckpt), str(ours_ckpt)])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--data", help="binarised LM data (default: the bundled corpus, binarised once)")
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / "results" / "eval_lm"))
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--cutoff", default="2000,8000")
    parser.add_argument("--tokens-per-sample", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--context-window", type=int, default=0)
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--json", help="where to write the rows (default: WORK/eval_lm.json)")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else work / "bin"
    if not (data / "dict.txt").exists():
        run(["bash", ROOT / "scripts" / "prepare_lm.sh", ROOT / "data" / "lm-sample", data])
    device = ["--cpu"] if args.device == "cpu" else []
    precision = ["--fp16"] if args.fp16 else []
    fairseq_ckpt, ours_ckpt = work / "fairseq" / "checkpoint_last.pt", work / "ours.pt"
    if not fairseq_ckpt.exists():
        train_in_process([
            data, *device, *precision, "--task", "language_modeling", "--arch", "transformer_lm",
            "--decoder-layers", args.layers, "--decoder-embed-dim", args.dim, "--decoder-input-dim", args.dim,
            "--decoder-output-dim", args.dim, "--decoder-ffn-embed-dim", args.ffn,
            "--decoder-attention-heads", args.heads, "--adaptive-input", "--adaptive-input-cutoff", args.cutoff,
            "--adaptive-softmax-cutoff", args.cutoff, "--tie-adaptive-weights", "--tie-adaptive-proj",
            "--criterion", "adaptive_loss", "--ddp-backend", "legacy_ddp", "--optimizer", "adam", "--lr", "0.001",
            "--tokens-per-sample", args.tokens_per_sample, "--max-tokens", args.max_tokens, "--max-update", 20,
            "--save-dir", fairseq_ckpt.parent, "--no-epoch-checkpoints", "--disable-validation",
            "--no-save-optimizer-state", "--num-workers", 0])
    if ours_ckpt.exists():
        ours_ckpt.unlink()
    convert(fairseq_ckpt, ours_ckpt)
    rows = []
    for name, ckpt in (("fairseq built-in adaptive LM", fairseq_ckpt), ("ours (converted, target-only scoring)",
                                                                          ours_ckpt)):
        out = run([sys.executable, "-m", "fairseq_cli.eval_lm", data, "--user-dir", ROOT / "fairseq_adaptive",
                   *device, *precision, "--path", ckpt, "--gen-subset", "test", "--tokens-per-sample",
                   args.tokens_per_sample, "--max-tokens", args.max_tokens, "--context-window", args.context_window])
        n, secs, speed = _SPEED.search(out).groups()
        loss, ppl = _PPL.search(out).groups()
        rows.append({"impl": name, "tokens": int(n.replace(",", "")), "seconds": float(secs),
                     "tokens_per_s": float(speed), "loss_base2": float(loss), "ppl": float(ppl)})
    print(f"eval-lm on {data} ({args.device}{', fp16' if args.fp16 else ''}), {args.layers} blocks, d={args.dim}, "
          f"cutoffs {args.cutoff}, tokens-per-sample {args.tokens_per_sample}, context window {args.context_window}")
    print_table(["implementation", "tokens", "tokens/s", "perplexity"],
                [[r["impl"], f"{r['tokens']:,}", f"{r['tokens_per_s']:,.0f}", f"{r['ppl']:.4f}"] for r in rows])
    print(f"speed ratio ours / fairseq: {rows[1]['tokens_per_s'] / rows[0]['tokens_per_s']:.2f}x, "
          f"perplexity relative difference: {abs(rows[1]['ppl'] / rows[0]['ppl'] - 1):.2e}")
    Path(args.json or work / "eval_lm.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
