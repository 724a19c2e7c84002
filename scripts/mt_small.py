#!/usr/bin/env python
"""Standard embeddings vs adaptive input vs DeFINE in a translation Transformer, on real English-German pairs at equal
training budget (the same number of updates of at most 4096 tokens each, so the rows see the same data whatever else
runs on the machine; words/s are reported beside), scored by fairseq-generate (beam 4) with sacrebleu on the test set.

Every row: 3+3 blocks, m=256, FFN 1024, 4 heads, one joined sentencepiece dictionary shared by encoder, decoder and
the output layer (--share-all-embeddings), label smoothing 0.1. They differ in the input layer alone:
- standard: a V x 256 embedding, tied full softmax;
- adaptive: adaptive input at 256 (cutoffs from scripts/prepare_mt.py, factor 4), tied adaptive softmax;
- DeFINE: DeFINE over a V x 64 embedding (the released unit, N=3, k=1024) on both sides, tied softmax at 64.
Prints a markdown table and writes WORK/mt.json.

  python scripts/mt_small.py                               # the bundled sample
  python scripts/mt_small.py --data DIR --updates 300      # a larger corpus (train/valid/test.tsv, or .gz)
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path

from equal_budget import ROOT, check_corpus, run  # same folder
from plot_curves import read_log, summary  # same folder

BODY = ["--encoder-layers", "3", "--decoder-layers", "3", "--encoder-embed-dim", "256", "--decoder-embed-dim", "256",
        "--encoder-ffn-embed-dim", "1024", "--decoder-ffn-embed-dim", "1024", "--encoder-attention-heads", "4",
        "--decoder-attention-heads", "4", "--dropout", "0.1", "--share-all-embeddings"]
_BLEU = re.compile(r"BLEU = ([\d.]+)")


def rows(cutoff):
    return {
        "standard": [],
        "adaptive": ["--adaptive-input", "--encoder-adaptive-input", "--adaptive-input-cutoff", cutoff,
                     "--adaptive-softmax-cutoff", cutoff, "--tie-adaptive-weights", "--tie-adaptive-proj"],
        "DeFINE": ["--encoder-define-dim", "64", "--decoder-define-dim", "64", "--define-expand-dim", "1024"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "data" / "mt-sample"), help="train/valid/test.tsv(.gz)")
    parser.add_argument("--work", default=str(ROOT / "work_dirs" / "mt"))
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--rows", default="standard,adaptive,DeFINE")
    parser.add_argument("--summarize-only", action="store_true")
    args = parser.parse_args()
    check_corpus(args.data, ["train.tsv", "valid.tsv", "test.tsv"])
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    bin_dir = work / "bin"
    if not bin_dir.exists():
        run([sys.executable, ROOT / "scripts" / "prepare_mt.py", args.data, bin_dir, "--vocab-size", args.vocab_size],
            work / "prepare.log")
    cutoff = (bin_dir / "cutoffs.txt").read_text().strip()
    results = []
    for name in args.rows.split(","):
        save, train_log, gen_log = work / name, work / f"{name}.train.log", work / f"{name}.test.log"
        trained = train_log.exists() and "done training" in train_log.read_text()
        if not args.summarize_only and not trained:
            run(["fairseq-train", bin_dir, "--user-dir", ROOT / "fairseq_adaptive", "--cpu", "--task", "translation",
                 "--arch", "adaptive_transformer_tiny", *BODY, *rows(cutoff)[name],
                 "--criterion", "adaptive_label_smoothed_cross_entropy", "--label-smoothing", "0.1",
                 "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.002", "--lr-scheduler",
                 "inverse_sqrt", "--warmup-updates", "100", "--clip-norm", "1.0", "--max-tokens", "4096",
                 "--max-update", args.updates, "--save-dir", save, "--no-epoch-checkpoints",
                 "--log-format", "json", "--log-interval", "20", "--no-progress-bar", "--seed", "1"], train_log)
        if not args.summarize_only:
            run(["fairseq-generate", bin_dir, "--user-dir", ROOT / "fairseq_adaptive", "--cpu",
                 "--path", save / "checkpoint_best.pt", "--beam", "4", "--max-tokens", "8192",
                 "--max-len-a", "1.5", "--max-len-b", "10",
                 "--remove-bpe", "sentencepiece", "--scoring", "sacrebleu"], gen_log)
        s = summary(read_log(train_log), None)
        bleu = float(_BLEU.findall(gen_log.read_text())[-1])
        results.append({"row": name, "params": s["params"], "updates": s["updates"], "words_per_s": s["words_per_s"],
                        "best_valid_ppl": s["best_valid_ppl"], "test_bleu": bleu})
        print(f"{name}: {s['params'] / 1e6:.2f}M params, {s['updates']} updates, BLEU {bleu:.2f}", flush=True)
    (work / "mt.json").write_text(json.dumps({"updates": args.updates, "machine": f"{os.cpu_count()} CPU cores",
                                              "cutoff": cutoff, "rows": results}, indent=1))
    print(f"\n| row | params | updates | train words/s | best valid ppl | test BLEU |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['row']} | {r['params'] / 1e6:.2f}M | {r['updates']} | {r['words_per_s']:,.0f} | "
              f"{r['best_valid_ppl']:.1f} | {r['test_bleu']:.2f} |")


if __name__ == "__main__":
    main()
