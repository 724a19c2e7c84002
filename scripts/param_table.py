#!/usr/bin/env python
"""Print the parameter counts of the registered architectures, built on the meta device at the WikiText-103
dictionary size (267,744 entries after fairseq's padding to 8); no training and no weights allocated.

1. Table 3 of Baevski & Auli 2019 (whole models) against the paper's counts.
2. DeFINE (Mehta et al. 2020, Table 2 setting: m=384, N=3, k=4096): the input/output layers (everything outside
   the Transformer blocks) with a standard embedding, an adaptive input, and DeFINE over either at each n; then the
   WMT'14 translation setting (n=128, k=1024, m=512, N=3).
3. The DeFINE unit in Table 4's ablations (N=7, n=384, k=1024, m=384).

Usage: python scripts/param_table.py [--vocab 267744]"""

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


DEFINE_ROWS = [("standard, m=384", "adaptive_lm_wiki103_define_std_n384", ["--define-dim", "0"]),
               ("adaptive, m=384", "adaptive_lm_wiki103_define_n384", ["--define-dim", "0"])]
for _n in (64, 128, 256, 384):
    DEFINE_ROWS += [(f"standard + DeFINE, n={_n}", f"adaptive_lm_wiki103_define_std_n{_n}", []),
                    (f"adaptive + DeFINE, n={_n}", f"adaptive_lm_wiki103_define_n{_n}", [])]


def outside_body(model) -> int:
    """Parameters of the input and output layers: all but the Transformer blocks and their final norm."""
    return sum(p.numel() for name, p in model.named_parameters()
               if not name.startswith(("decoder.layers.", "decoder.layer_norm.")))


# Table 4 of the DeFINE paper (N=7, n=384, k=1024, m=384): the transformation ablations (no link to the projected
# input) and the two ways of linking it; the paper's counts are whole LSTM models, in millions
ABLATIONS = [
    ("Linear", "linear", "none", 42.86),
    ("GLT", "glt", "none", 39.69),
    ("GLT + Shuffle", "glt_shuffle", "none", 39.69),
    ("HGT", "hgt", "none", 40.73),
    ("DeFINE (w/o mixer)", "hgt", "concat", 40.89),
    ("DeFINE", "hgt", "mixer", 40.89),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vocab", type=int, default=267744)
    parser.add_argument("--ablation-max-groups", type=int, default=8,
                        help="--define-max-groups of the Table 4 rows (GLT uses it in every layer)")
    args = parser.parse_args()
    print(f"| row | --arch | ours | paper | diff |\n|---|---|---:|---:|---:|")
    for row, arch, paper in PAPER:
        n = count_parameters(build_on_meta(arch, args.vocab))
        print(f"| {row} | {arch} | {n / 1e6:.1f}M ({n:,}) | {paper}M | {n / 1e6 - paper:+.2f}M |")
    print("\n| input layer | --arch | input/output layers | DeFINE unit | whole model |\n|---|---|---:|---:|---:|")
    for row, arch, extra in DEFINE_ROWS:
        model = build_on_meta(arch, args.vocab, extra)
        block = getattr(model.decoder.embed_tokens, "block_parameters", lambda: 0)()
        print(f"| {row} | {arch}{' ' + ' '.join(extra) if extra else ''} | {outside_body(model) / 1e6:.2f}M | "
              f"{block:,} | {count_parameters(model) / 1e6:.1f}M |")
    mt = build_on_meta("adaptive_transformer_wmt_en_de_define", 40000, task="translation")
    print(f"| WMT'14 En-De, shared, n=128 (V=40,000) | adaptive_transformer_wmt_en_de_define | - | "
          f"{mt.encoder.embed_tokens.block_parameters():,} | {count_parameters(mt) / 1e6:.1f}M |")
    print("\n| Table 4 row | --define-transform | --define-connection | DeFINE unit | paper (whole LSTM model) |"
          "\n|---|---|---|---:|---:|")
    for row, transform, connection, paper in ABLATIONS:
        flags = ["--define-layers", "7", "--define-expand-dim", "1024", "--define-transform", transform,
                 "--define-connection", connection, "--define-max-groups", str(args.ablation_max_groups)]
        model = build_on_meta("adaptive_lm_wiki103_define_n384", args.vocab, flags)
        print(f"| {row} | {transform} | {connection} | {model.decoder.embed_tokens.block_parameters():,} | {paper}M |")


if __name__ == "__main__":
    main()
