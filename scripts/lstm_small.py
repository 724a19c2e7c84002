#!/usr/bin/env python
"""DeFINE's Table 1a question at CPU scale: an LSTM language model with adaptive input (R2) against the same model
with DeFINE over its adaptive input (R3), on a real corpus at equal training budget (the same wall-clock minutes
each), scored by fairseq-eval-lm on valid and test, then the test loss by training frequency of the target word
(``scripts/freq_loss.py``): the paper's claim is that DeFINE helps rare words most.

Both rows: 2 LSTM layers of 512 units reading and giving m = 128 (AWD-LSTM's shape), an adaptive input (bands from
the dictionary's counts: 90% and 98% of the training tokens, factor 4) and the adaptive softmax tied to it, AWD-LSTM's
regularisers (locked dropout 0.2 on input, between layers and output, weight drop 0.2, word dropout 0.05, AR 2 / TAR
1), truncated BPTT over 32 streams of 128 tokens (``--task bptt_lm``: the hidden state runs on between segments).
The DeFINE row puts the released unit over the adaptive input with R3's ratios at this width: n = m = 128, N = 3,
k = 512 (R3: n = m = 256, k = 1024).

Prints the two tables and writes WORK/lstm.json, WORK/lstm_freq.json and the loss-by-frequency chart (--plot).

  python scripts/lstm_small.py                       # the bundled corpus, 4 minutes per row
"""


import logging

from equal_budget import ROOT, bundled_corpus_parser, prepare, report, train_and_score  # same folder
from equal_budget import tied_adaptive as adaptive

BODY = ["--decoder-embed-dim", "128", "--decoder-hidden-dim", "512", "--decoder-layers", "2",
        "--dropout", "0.2", "--input-dropout", "0.2", "--hidden-dropout", "0.2", "--weight-drop", "0.2",
        "--word-dropout", "0.05", "--ar-alpha", "2", "--tar-beta", "1"]
DEFINE = ["--define-dim", "128", "--define-expand-dim", "512", "--define-layers", "3"]


def rows_of(cutoff: str):
    """The two rows: name, architecture, flags beside BODY."""
    return [("LSTM+adaptive", "lstm_tiny", adaptive(cutoff)),
            ("LSTM+adaptive+DeFINE", "lstm_tiny", [*DEFINE, *adaptive(cutoff)])]


def main():
    parser = bundled_corpus_parser(__doc__, "lstm", minutes=4.0, tokens_per_sample=128)
    parser.add_argument("--plot", default=str(ROOT / "docs" / "lstm_loss_by_frequency.png"))
    args, work, bin_dir, cutoff = prepare(parser)
    flags = dict(batching=["--task", "bptt_lm", "--batch-size", 4096 // args.tokens_per_sample],
                 evaluation=["--task", "bptt_lm", "--batch-size", 10, "--tokens-per-sample", 64])
    rows = rows_of(cutoff)
    results = [train_and_score(args, bin_dir, name, arch, extra, BODY, **flags) for name, arch, extra in rows]
    report(args, results, "lstm.json", data=args.data, cutoff=cutoff)
    print(flush=True)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's import left the root logger at DEBUG
    import freq_loss  # same folder

    freq_loss.main([str(bin_dir), *[str(work / name / "checkpoint_best.pt") for name, *_ in rows],
                    "--names", ",".join(name for name, *_ in rows), "--tokens-per-sample", "64", "--batch-size", "10",
                    "--cpu", "--plot", args.plot, "--json", str(work / "lstm_freq.json")])


if __name__ == "__main__":
    main()
