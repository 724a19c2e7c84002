#!/usr/bin/env python
"""DeFINE (Mehta et al. 2020) against a standard embedding and an adaptive input, on a real corpus at equal
training budget (the same wall-clock minutes each), scored by fairseq-eval-lm on valid and test.

Every row has the same Transformer body (4 blocks, m=256, FFN 1024, 4 heads) and ties its output layer to its input
layer; they differ in the input layer alone:

- standard: a V x 256 embedding, tied full softmax;
- adaptive: adaptive input at 256 (bands from --cutoff-coverage, factor 4), tied adaptive softmax;
- standard + DeFINE / adaptive + DeFINE: the same at n=64, through the released DeFINE unit (input layer to d=128,
  N=3 grouped layers with 4, 2, 1 groups widening to k=1024, the last one ending at m=256, output layer) to 256; the
  decoder output is projected back to 64 for the tied softmax. The ratios n/m and k/m follow the paper's
  WikiText-103 setting (n=128, m=384, k=4096) loosely, at a width a CPU trains in minutes.

Prints a markdown table and writes WORK/define.json.

  python scripts/define_small.py                     # the bundled corpus, 3 minutes per row
  python scripts/define_small.py --data DIR --minutes 5    # a larger corpus (train/valid/test.txt, or .gz)
"""

import argparse
from pathlib import Path

from equal_budget import ROOT, add_common_arguments, binarise, report, train_and_score  # same folder

BODY = ["--decoder-layers", "4", "--decoder-embed-dim", "256", "--decoder-ffn-embed-dim", "1024",
        "--decoder-attention-heads", "4", "--dropout", "0.1", "--attention-dropout", "0.1"]
AUTO_BANDS = ["--adaptive-input-cutoff", "auto", "--adaptive-softmax-cutoff", "auto"]
DEFINE = ["--define-expand-dim", "1024", "--define-layers", "3"]
ROWS = {
    "standard": ("adaptive_lm_wiki103_define_std_n256", ["--define-dim", "0"]),
    "adaptive": ("adaptive_lm_wiki103_define_n256", ["--define-dim", "0", *AUTO_BANDS]),
    "standard + DeFINE": ("adaptive_lm_wiki103_define_std_n64", DEFINE),
    "adaptive + DeFINE": ("adaptive_lm_wiki103_define_n64", [*DEFINE, *AUTO_BANDS]),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "data" / "lm-sample"))
    parser.add_argument("--rows", default=",".join(ROWS))
    add_common_arguments(parser, "define", minutes=3.0)
    args = parser.parse_args()
    bin_dir = binarise(args.data, Path(args.work))
    results = [train_and_score(args, bin_dir, name.replace(" + ", "+"), *ROWS[name], BODY)
               for name in args.rows.split(",")]
    report(args, results, "define.json", data=args.data)


if __name__ == "__main__":
    main()
