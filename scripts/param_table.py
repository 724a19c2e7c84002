#!/usr/bin/env python
"""Print every parameter table of docs/, built from the registered architectures on the meta device (no training,
no weights allocated), at the dictionary sizes the docs use. tests/test_docs.py fails when a table in docs/ differs
from what this prints, so the docs are regenerated from here: ``python scripts/param_table.py [--only NAME]``.

- ``table3`` (docs/architectures.md): Table 3 of Baevski & Auli 2019, whole models against the paper's counts, at
  WikiText-103's 267,744-entry dictionary (the BPE rows at the paper's 33,337 sub-word units).
- ``define`` (docs/define.md): DeFINE (Mehta et al. 2020, Table 2 setting: m=384, N=3, k=4096): the input/output
  layers (everything outside the Transformer blocks) with a standard embedding, an adaptive input, and DeFINE over
  either at each n, beside the paper's counts.
- ``ablations`` (docs/define.md): the DeFINE unit in Table 4's ablations (N=7, n=384, k=1024, m=384).
- ``txl`` (docs/transformer_xl.md): DeFINE's Table 2 on Transformer-XL (Mehta et al. 2020): context model,
  input-output layers, DeFINE unit and total of each row beside the paper's, at the original Transformer-XL
  vocabulary (267,735 words) that the paper counted; and ``txl_wiki103_base`` at fairseq's 267,744-word dictionary.
- ``lstm`` (docs/lstm.md): DeFINE's LSTM language models (Mehta et al. 2020): Table 1a (WikiText-103, at the
  267,735-word vocabulary the paper counted), Table 5's cells, Table 4's transformations and Table 6's variants as
  whole LSTM models (its R4 body), Table 1c (AWD-LSTM on Penn Treebank's 10,000 words), beside the paper's counts.
- ``translation`` (docs/translation.md): the WMT'14 models against fairseq's, at a 32,008-entry joined dictionary.
- ``configs`` (docs/configs.md): the model each hydra config under configs/ builds (the architecture its header names).
"""

import argparse
import re
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import fairseq_adaptive  # noqa: F401  (registers the architectures)
from fairseq_adaptive.models.counting import build_on_meta, count_parameters

ROOT = Path(__file__).resolve().parents[1]
WIKITEXT103 = 267744
WMT_JOINED = 32008
BILLION_WORD = 793472
PTB_VOCAB = 10000  # Penn Treebank's words (Mikolov's version)

# Table 3 of the paper (WikiText-103, word-level rows): millions of parameters.
PAPER = [
    ("SM", "adaptive_lm_wiki103_sm", 476.8),
    ("SM-T", "adaptive_lm_wiki103_sm_t", 339.7),
    ("ASM", "adaptive_lm_wiki103_asm", 263.1),
    ("ADP", "adaptive_lm_wiki103_adp", 291.3),
    ("ADP-T", "adaptive_lm_wiki103_adp_t", 246.9),
    ("BPE", "adaptive_lm_wiki103_bpe", 270.0),
    ("BPE-T", "adaptive_lm_wiki103_bpe_t", 235.7),
    ("CNN", "adaptive_lm_wiki103_cnn", 266.3),
]
# the BPE rows' vocabulary: 32K merges gave the paper 33,337 entries on WikiText-103
BPE_VOCAB = 33337

# DeFINE's Table 2 (millions): DeFINE / input-output layers / total, for the standard-embedding rows it reports
DEFINE_PAPER = {("std", 384, False): "0 / 103.08M / 139.33M", ("std", 64, True): "1.92M / 17.50M / 55.67M",
                ("std", 128, True): "1.92M / 34.73M / 72.90M", ("std", 256, True): "1.92M / 69.20M / 107.37M",
                ("std", 384, True): "1.92M / 103.08M / 141.25M"}
NO_DEFINE = ["--define-dim", "0"]

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

# DeFINE's Table 2 on Transformer-XL (millions): context model / input-output layers / DeFINE / total, and test ppl
TXL_VOCAB = 267735
TXL_PAPER = [
    ("Transformer-XL base (*)", "txl_wiki103_base", ["--shared-rel-bias"], "41.07 / 110.04 / 0 / 151.11", "24.03"),
    ("n=64", "txl_wiki103_n64", [], "36.25 / 17.50 / 0 / 53.75", "33.74"),
    ("n=128", "txl_wiki103_n128", [], "36.25 / 34.73 / 0 / 70.98", "29.16"),
    ("n=256", "txl_wiki103_n256", [], "36.25 / 69.20 / 0 / 105.45", "28.09"),
    ("n=384", "txl_wiki103_n384", [], "36.25 / 103.08 / 0 / 139.33", "27.06"),
    ("n=64, the paper's projections", "txl_wiki103_n64", ["--tie-projs", "1,0,0,0"], "36.25 / 17.50 / 0 / 53.75",
     "33.74"),
    ("n=128, the paper's projections", "txl_wiki103_n128", ["--tie-projs", "1,0,0,0"], "36.25 / 34.73 / 0 / 70.98",
     "29.16"),
    ("n=256, the paper's projections", "txl_wiki103_n256", ["--tie-projs", "1,0,0,0"],
     "36.25 / 69.20 / 0 / 105.45", "28.09"),
    ("n=64 + DeFINE", "txl_wiki103_define_n64", [], "36.25 / 17.50 / 1.92 / 55.67", "29.10"),
    ("n=128 + DeFINE", "txl_wiki103_define_n128", [], "36.25 / 34.73 / 1.92 / 72.90", "26.33"),
    ("n=256 + DeFINE", "txl_wiki103_define_n256", [], "36.25 / 69.20 / 1.92 / 107.37", "25.72"),
    ("n=384 + DeFINE", "txl_wiki103_define_n384", [], "36.25 / 103.08 / 1.92 / 141.25", "24.17"),
]

# DeFINE's LSTM tables (millions): DeFINE / context model / input-output / total, test ppl; Table 1c gives totals
LSTM_PAPER = [
    ("Table 1a R1: standard, n=256", "lstm_wiki103_std", [], TXL_VOCAB, "0 / 23.36 / 68.81 / 92.17", "44.12"),
    ("Table 1a R2: adaptive, n=256", "lstm_wiki103_adaptive", [], TXL_VOCAB, "0 / 23.36 / 9.25 / 32.61", "44.87"),
    ("Table 1a R2, first band unprojected", "lstm_wiki103_adaptive", ["--adaptive-input-no-square-proj"], TXL_VOCAB,
     "0 / 23.36 / 9.25 / 32.61", "44.87"),
    ("Table 1a R3: adaptive + DeFINE, N=3, n=256", "lstm_wiki103_define_n256", [], TXL_VOCAB,
     "0.41 / 23.36 / 9.25 / 33.02", "41.17"),
    ("Table 1a R4: adaptive + DeFINE, N=7, n=384", "lstm_wiki103_define_n384", [], TXL_VOCAB,
     "1.83 / 24.73 / 13.90 / 40.46", "38.01"),
    ("Table 1a R5: adaptive + DeFINE, N=11, n=512", "lstm_wiki103_define_n512", [], TXL_VOCAB,
     "3.89 / 26.24 / 18.55 / 48.69", "35.94"),
] + [(f"Table 5: N={n}, k={k}", f"lstm_wiki103_define_N{n}_k{k}", [], TXL_VOCAB, f"- / - / - / {paper:.2f}", ppl)
     for n, k, paper, ppl in [(3, 1024, 33.02, "41.17"), (3, 1536, 33.15, "41.25"), (3, 2048, 33.29, "41.37"),
                              (7, 1024, 40.73, "38.01"), (7, 1536, 41.86, "37.81"), (7, 2048, 43.19, "37.84"),
                              (11, 1024, 49.55, "35.94"), (11, 1536, 52.02, "35.98"), (11, 2048, 55.02, "35.92")]
     ] + [(f"Table 4: {row}", "lstm_wiki103_define_n384",
      ["--define-transform", transform, "--define-connection", connection, "--define-max-groups", "8"], TXL_VOCAB,
      f"- / - / - / {paper:.2f}", "-") for row, transform, connection, paper in ABLATIONS] + [
    ("Table 6a: DeFINE + residual conn.", "lstm_wiki103_define_n384", ["--define-connection", "residual"], TXL_VOCAB,
     "- / - / - / 41.63", "39.03"),
    ("Table 6b: DeFINE - Reduce", "lstm_wiki103_define_n384", ["--define-no-reduce"], TXL_VOCAB,
     "- / - / - / 43.91", "38.34"),
    ("Table 1c: AWD-LSTM", "lstm_awd_ptb", [], PTB_VOCAB, "- / - / - / 24", "58.8"),
    ("Table 1c: AWD-LSTM + DeFINE (n=128, k=1024, N=7, m=400)", "lstm_awd_ptb_define", [], PTB_VOCAB,
     "- / - / - / 20", "54.2"),
]

# fairseq's translation models beside ours: (label, --arch, flags)
TRANSLATION = [
    ("fairseq `transformer_wmt_en_de --share-all-embeddings`", "transformer_wmt_en_de", ["--share-all-embeddings"]),
    ("fairseq `transformer_wmt_en_de --share-decoder-input-output-embed` (separate source and target tables)",
     "transformer_wmt_en_de", ["--share-decoder-input-output-embed"]),
    ("`adaptive_transformer_wmt_en_de_define` (one shared V x 128 table, one DeFINE unit, 512 -> 128 output "
     "projection)", "adaptive_transformer_wmt_en_de_define", []),
    ("fairseq `transformer_wmt_en_de_big --share-all-embeddings`", "transformer_wmt_en_de_big",
     ["--share-all-embeddings"]),
    ("`adaptive_transformer_wmt_en_de_big_define` (the same layout at m=1024)",
     "adaptive_transformer_wmt_en_de_big_define", []),
]

# the dictionary size each config under configs/ is meant for: the first prefix of its name listed here (the BPE rows
# before the word-level WikiText-103 ones)
CONFIG_VOCAB = {"billion_word": BILLION_WORD, "wmt14": WMT_JOINED, "wikitext103_bpe": BPE_VOCAB,
                "wikitext103": WIKITEXT103, "ptb": PTB_VOCAB}


def outside_body(model) -> int:
    """Parameters of the input and output layers: all but the Transformer blocks and their final norm."""
    return sum(p.numel() for name, p in model.named_parameters()
               if not name.startswith(("decoder.layers.", "decoder.layer_norm.")))


def millions(n: int, digits: int = 2) -> str:
    return f"{n / 1e6:.{digits}f}M"


def table3() -> List[str]:
    lines = ["| row | --arch | ours | paper | diff |", "|---|---|---:|---:|---:|"]
    for row, arch, paper in PAPER:
        n = count_parameters(build_on_meta(arch, BPE_VOCAB if row.startswith("BPE") else WIKITEXT103))
        lines.append(f"| {row} | {arch} | {n / 1e6:.1f}M ({n:,}) | {paper}M | {n / 1e6 - paper:+.2f}M |")
    return lines


def define() -> List[str]:
    lines = ["| input layer | --arch | input/output layers | DeFINE unit | whole model | paper: DeFINE / input-output "
             "/ total |", "|---|---|---:|---:|---:|---:|"]
    rows = [("standard, m=384", "std", 384, NO_DEFINE), ("adaptive, m=384", "", 384, NO_DEFINE)]
    for n in (64, 128, 256, 384):
        rows += [(f"standard + DeFINE, n={n}", "std", n, []), (f"adaptive + DeFINE, n={n}", "", n, [])]
    for label, kind, n, extra in rows:
        arch = f"adaptive_lm_wiki103_define_{kind + '_' if kind else ''}n{n}"
        model = build_on_meta(arch, WIKITEXT103, extra)
        paper = DEFINE_PAPER.get((kind, n, not extra), "-")
        lines.append(f"| {label} | {arch}{' ' + ' '.join(extra) if extra else ''} | {millions(outside_body(model))} | "
                     f"{model.decoder.embed_tokens.define_parameters():,} | {millions(count_parameters(model), 1)} | "
                     f"{paper} |")
    return lines


def ablations(max_groups: int = 8) -> List[str]:
    lines = ["| Table 4 row | --define-transform | --define-connection | DeFINE unit (ours) | paper (whole LSTM "
             "model) |", "|---|---|---|---:|---:|"]
    for row, transform, connection, paper in ABLATIONS:
        flags = ["--define-layers", "7", "--define-expand-dim", "1024", "--define-transform", transform,
                 "--define-connection", connection, "--define-max-groups", str(max_groups)]
        model = build_on_meta("adaptive_lm_wiki103_define_n384", WIKITEXT103, flags)
        lines.append(f"| {row} | {transform} | {connection} | {model.decoder.embed_tokens.define_parameters():,} | "
                     f"{paper}M |")
    return lines


def parts(model) -> Tuple[str, str, str, str]:
    """A stream model's context model (its body), input-output layers (all else but the DeFINE unit), DeFINE unit and
    total, in millions, as DeFINE's tables split them."""
    context = sum(p.numel() for name, p in model.named_parameters() if name.startswith("decoder.body."))
    unit = model.decoder.embed_tokens.define_parameters()
    total = count_parameters(model)
    return millions(context), millions(total - context - unit), millions(unit), millions(total)


def with_flags(arch: str, extra) -> str:
    return " ".join([arch, *extra])


def txl() -> List[str]:
    lines = ["| Table 2 row | --arch | context model | input-output | DeFINE unit | total | paper: context / "
             "input-output / DeFINE / total | paper test ppl |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row, arch, extra, paper, ppl in TXL_PAPER:
        context, io, unit, total = parts(build_on_meta(arch, TXL_VOCAB, extra))
        lines.append(f"| {row} | {with_flags(arch, extra)} | {context} | {io} | {unit} | {total} | {paper} | {ppl} |")
    base = count_parameters(build_on_meta("txl_wiki103_base", WIKITEXT103))
    lines += ["", f"`txl_wiki103_base` (a u, v pair per layer) on fairseq's {WIKITEXT103:,}-word dictionary: "
                  f"{base:,} parameters."]
    return lines


def lstm() -> List[str]:
    lines = ["| row | --arch | DeFINE unit | context model | input-output | total | paper: DeFINE / context / "
             "input-output / total | paper test ppl |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row, arch, extra, vocab, paper, ppl in LSTM_PAPER:
        context, io, unit, total = parts(build_on_meta(arch, vocab, extra))
        lines.append(f"| {row} | {with_flags(arch, extra)} | {unit} | {context} | {io} | {total} | {paper} | {ppl} |")
    return lines


def translation() -> List[str]:
    lines = ["| model | DeFINE unit | parameters |", "|---|---:|---:|"]
    for label, arch, flags in TRANSLATION:
        model = build_on_meta(arch, WMT_JOINED, flags, task="translation")
        embed = model.encoder.embed_tokens
        unit = embed.define_parameters() if hasattr(embed, "define_parameters") else 0
        lines.append(f"| {label} | {unit:,} | {millions(count_parameters(model))} |")
    return lines


def config_arch(path: Path) -> str:
    """The architecture a config reproduces: the one its header names ("Same model as --arch NAME")."""
    found = re.search(r"Same model as --arch (\w+)", path.read_text())
    if found is None:
        raise ValueError(f"{path} does not name its architecture ('Same model as --arch NAME' in its header)")
    return found.group(1)


def config_vocab(name: str) -> int:
    return next(size for prefix, size in CONFIG_VOCAB.items() if name.startswith(prefix))


def configs() -> List[str]:
    lines = ["| config | --arch | dictionary | parameters |", "|---|---|---:|---:|"]
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        arch, vocab = config_arch(path), config_vocab(path.stem)
        task = "translation" if arch.startswith("adaptive_transformer") else "language_modeling"
        n = count_parameters(build_on_meta(arch, vocab, task=task))
        lines.append(f"| `{path.stem}` | `{arch}` | {vocab:,} | {millions(n)} |")
    return lines


TABLES: Dict[str, Tuple[str, Callable[[], List[str]]]] = {
    "table3": ("docs/architectures.md", table3),
    "define": ("docs/define.md", define),
    "ablations": ("docs/define.md", ablations),
    "txl": ("docs/transformer_xl.md", txl),
    "lstm": ("docs/lstm.md", lstm),
    "translation": ("docs/translation.md", translation),
    "configs": ("docs/configs.md", configs),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(TABLES), help="print this table alone")
    args = parser.parse_args()
    for name, (doc, make) in TABLES.items():
        if args.only in (None, name):
            print(f"{name} ({doc}):\n")
            print("\n".join(make()) + "\n")


if __name__ == "__main__":
    main()
