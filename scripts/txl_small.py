#!/usr/bin/env python
"""fairseq's Transformer decoder against Transformer-XL, each with an adaptive input and with DeFINE over it, on a
real corpus at equal training budget (the same wall-clock minutes each), scored by fairseq-eval-lm on valid and test.

Every row has a 4-layer body of width 256 (FFN 1024, 4 heads, dropout 0.1), an adaptive input (bands from the
dictionary's counts: 90% and 98% of the training tokens, factor 4) and the adaptive softmax tied to it; the DeFINE rows
put the released unit (n=64, N=3, k=1024) over the adaptive input. They differ in the body:

- Transformer: fairseq's pre-norm decoder, absolute positions, blocks of --tokens-per-sample tokens
  (``--task adaptive_language_modeling --max-tokens 4096``); evaluated in blocks of 128 with a context window of 64
  (each token sees 64 to 127 earlier tokens);
- Transformer-XL: post-norm, relative positions, a memory of --tokens-per-sample positions, trained by truncated BPTT
  on 4096 / --tokens-per-sample streams (``--task bptt_lm``: the same tokens per update); its output layer adds a
  bias per word; evaluated on segments of 64 with a memory of 96 and ``same_length`` (each token sees 96).

Prints a markdown table, writes WORK/txl.json and the learning curves (--curves).

  python scripts/txl_small.py                        # the bundled corpus, 3 minutes per row
"""

import logging

from equal_budget import ROOT, bundled_corpus_parser, prepare, report, train_and_score  # same folder
from equal_budget import tied_adaptive as adaptive

BODY = ["--decoder-layers", "4", "--decoder-embed-dim", "256", "--decoder-ffn-embed-dim", "1024",
        "--decoder-attention-heads", "4", "--dropout", "0.1", "--attention-dropout", "0.1"]
DEFINE = ["--define-dim", "64", "--define-expand-dim", "1024", "--define-layers", "3"]


def main():
    parser = bundled_corpus_parser(__doc__, "txl", minutes=3.0, tokens_per_sample=128)
    parser.add_argument("--curves", default=str(ROOT / "docs" / "txl_curves.png"))
    args, work, bin_dir, cutoff = prepare(parser)
    tps = args.tokens_per_sample
    vanilla = dict(evaluation=["--tokens-per-sample", 128, "--context-window", 64, "--max-tokens", 8192])
    xl = dict(batching=["--task", "bptt_lm", "--batch-size", 4096 // tps, "--mem-len", tps],
              evaluation=["--task", "bptt_lm", "--batch-size", 8, "--tokens-per-sample", 64, "--model-overrides",
                          '{"mem_len":96,"same_length":True}'])
    rows = [("Transformer", "adaptive_lm_wiki103_define_n256", ["--define-dim", "0", *adaptive(cutoff)], vanilla),
            ("Transformer+DeFINE", "adaptive_lm_wiki103_define_n64", [*DEFINE, *adaptive(cutoff)], vanilla),
            ("Transformer-XL", "txl_tiny", adaptive(cutoff), xl),
            ("Transformer-XL+DeFINE", "txl_tiny", [*DEFINE, *adaptive(cutoff)], xl)]
    results = [train_and_score(args, bin_dir, name, arch, extra, BODY, **flags) for name, arch, extra, flags in rows]
    report(args, results, "txl.json", data=args.data, cutoff=cutoff)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's import left the root logger at DEBUG
    import plot_curves  # same folder

    names = [name for name, *_ in rows]
    plot_curves.main([str(work / f"{n}.train.log") for n in names] + ["--labels", *names, "--out", args.curves,
                     "--test-logs", *[str(work / f"{n}.test.log") for n in names]])


if __name__ == "__main__":
    main()
