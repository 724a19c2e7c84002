#!/usr/bin/env python
"""Print the parameter counts of the registered Table 3 architectures (Baevski & Auli 2019) against the paper's,
built on the meta device at the WikiText-103 dictionary size (267,744 entries after fairseq's padding to 8).
No training and no weights allocated.  Usage: python scripts/param_table.py [--vocab 267744]"""

import argparse

import fairseq_adaptive  # noqa: F401  (registers the architectures)
from fairseq_adaptive.models.counting import build_on_meta, count_parameters

# Table 3 of the paper (WikiText-103, word-level rows): millions of parameters.
PAPER = [
    ("SM", "adaptive_lm_wiki103_sm", 476.8),
    ("SM-T", "adaptive_lm_wiki103_sm_t", 339.7),
    ("ASM", "adaptive_lm_wiki103_asm", 263.1),
    ("ADP", "adaptive_lm_wiki103_adp", 291.3),
    ("ADP-T", "adaptive_lm_wiki103_adp_t", 246.9),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vocab", type=int, default=267744)
    args = parser.parse_args()
    print(f"| row | --arch | ours | paper | diff |\n|---|---|---:|---:|---:|")
    for row, arch, paper in PAPER:
        n = count_parameters(build_on_meta(arch, args.vocab))
        print(f"| {row} | {arch} | {n / 1e6:.1f}M ({n:,}) | {paper}M | {n / 1e6 - paper:+.2f}M |")


if __name__ == "__main__":
    main()
