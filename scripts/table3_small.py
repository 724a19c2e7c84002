#!/usr/bin/env python
"""A small Table 3 of Baevski & Auli 2019 on a real corpus at equal training budget: SM-T, ASM, ADP and ADP-T at
reduced width, each trained for the same wall-clock minutes, then scored by fairseq-eval-lm on valid and test.

The body is shrunk (4 blocks, d=256, FFN 1024, 4 heads); every output/input layer keeps the paper's ratios to the
width (SM-T: embeddings of d/2; ASM: input embeddings of d/16; bands shrink by 4). Prints a markdown table and
writes WORK/table3.json.

  python scripts/table3_small.py                                        # the bundled corpus
  python scripts/table3_small.py --data DIR --minutes 4 --cutoff 5000,20000   # a larger one
"""

import argparse
from pathlib import Path

from equal_budget import ROOT, add_common_arguments, binarise, report, train_and_score  # same folder

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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "data" / "lm-sample"), help="train/valid/test.txt(.gz)")
    parser.add_argument("--cutoff", default="5000,20000")
    parser.add_argument("--rows", default="SM-T,ASM,ADP,ADP-T")
    add_common_arguments(parser, "table3", minutes=4.0)
    args = parser.parse_args()
    bin_dir = binarise(args.data, Path(args.work))
    results = [train_and_score(args, bin_dir, name, *rows(args.cutoff)[name], BODY) for name in args.rows.split(",")]
    report(args, results, "table3.json", cutoff=args.cutoff)


if __name__ == "__main__":
    main()
