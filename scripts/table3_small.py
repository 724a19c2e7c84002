#!/usr/bin/env python
"""A small Table 3 of Baevski & Auli 2019 on a real corpus at equal training budget: SM-T, ASM, ADP and ADP-T at
reduced width, each trained for the same wall-clock minutes, then scored by fairseq-eval-lm on valid and test.

The body is shrunk (4 blocks, d=256, FFN 1024, 4 heads); every output/input layer keeps the paper's ratios to the
width (SM-T: embeddings of d/2; ASM: input embeddings of d/16; bands shrink by 4). Prints a markdown table and
writes WORK/table3.json.

  python scripts/table3_small.py --data ../shared/data/lm --minutes 4 --cutoff 5000,20000
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from plot_curves import eval_ppl, read_log, summary  # same folder

ROOT = Path(__file__).resolve().parents[1]
BODY = ["--decoder-layers", "4", "--decoder-embed-dim", "256", "--decoder-ffn-embed-dim", "1024",
        "--decoder-attention-heads", "4", "--dropout", "0.1", "--attention-dropout", "0.1",
        "--activation-dropout", "0.1"]


def rows(cutoff):
    band = ["--adaptive-input-cutoff", cutoff, "--adaptive-softmax-cutoff", cutoff]
    return {
        "SM-T": ("adaptive_lm_wiki103_sm_t", ["--decoder-input-dim", "128", "--decoder-output-dim", "128"]),
        "ASM": ("adaptive_lm_wiki103_asm", ["--decoder-input-dim", "16", "--adaptive-softmax-cutoff", cutoff]),
        "ADP": ("adaptive_lm_wiki103_adp", band),
        "ADP-T": ("adaptive_lm_wiki103_adp_t", band),
    }


def run(cmd, log):
    with open(log, "w") as f:
        done = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(map(str, cmd))}\n  see {log}")
    return Path(log).read_text()


def evaluate(bin_dir, checkpoint, subset, log, tokens_per_sample, context_window):
    run(["fairseq-eval-lm", bin_dir, "--user-dir", ROOT / "fairseq_adaptive", "--cpu", "--path", checkpoint,
               "--gen-subset", subset, "--tokens-per-sample", tokens_per_sample,
               "--context-window", context_window, "--max-tokens", 8192], log)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "lm"))
    parser.add_argument("--work", default=str(ROOT / "work_dirs" / "table3"))
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--cutoff", default="5000,20000")
    parser.add_argument("--rows", default="SM-T,ASM,ADP,ADP-T")
    parser.add_argument("--tokens-per-sample", type=int, default=256)
    parser.add_argument("--context-window", type=int, default=0,
                        help="eval-lm context window (0: score independent blocks; a window multiplies CPU time)")
    parser.add_argument("--summarize-only", action="store_true", help="re-read the logs of an earlier run")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    bin_dir = work / "bin"
    if not (bin_dir / "dict.txt").exists():
        run(["bash", ROOT / "scripts" / "prepare_lm.sh", args.data, bin_dir], work / "preprocess.log")
    results = []
    for name in args.rows.split(","):
        arch, extra = rows(args.cutoff)[name]
        save = work / name
        logs = {split: work / f"{name}.{split}.log" for split in ("train", "valid", "test")}
        if not args.summarize_only:
            run(["fairseq-train", bin_dir, "--user-dir", ROOT / "fairseq_adaptive", "--cpu",
                 "--task", "adaptive_language_modeling", "--arch", arch, "--criterion", "adaptive_cross_entropy",
                 *BODY, *extra, "--optimizer", "adam", "--lr", "0.002", "--lr-scheduler", "inverse_sqrt",
                 "--warmup-updates", "50", "--clip-norm", "0.5", "--tokens-per-sample", args.tokens_per_sample,
                 "--max-tokens", 4096, "--stop-time-hours", args.minutes / 60, "--save-dir", save,
                 "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", 20, "--no-progress-bar",
                 "--seed", 1], logs["train"])
            for split in ("valid", "test"):
                evaluate(bin_dir, save / "checkpoint_best.pt", split, logs[split], args.tokens_per_sample,
                         args.context_window)
        run_summary = summary(read_log(logs["train"]), eval_ppl(logs["test"]))
        results.append({
            "row": name, "arch": arch,
            **{k: run_summary[k] for k in ("params", "updates", "words_per_s", "test_ppl")},
            "valid_ppl": eval_ppl(logs["valid"]),
        })
        r = results[-1]
        print(f"{name}: {r['params'] / 1e6:.2f}M params, {r['updates']} updates, {r['words_per_s']:.0f} words/s, "
              f"valid {r['valid_ppl']:.2f}, test {r['test_ppl']:.2f}", flush=True)
    (work / "table3.json").write_text(json.dumps({"minutes": args.minutes, "cutoff": args.cutoff,
                                                  "machine": f"{os.cpu_count()} CPU cores", "rows": results}, indent=1))
    print(f"\n| row | params | updates in {args.minutes:g} min | train words/s | valid ppl | test ppl |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['row']} | {r['params'] / 1e6:.1f}M | {r['updates']} | {r['words_per_s']:,.0f} | "
              f"{r['valid_ppl']:.1f} | {r['test_ppl']:.1f} |")


if __name__ == "__main__":
    main()
