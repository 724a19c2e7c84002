#!/usr/bin/env python
"""Our LSTM language model (``adaptive_lstm_lm``: PyTorch's fused LSTM, one call per layer and segment) beside
fairseq's ``lstm_lm`` (an ``LSTMCell`` stepped through time in Python), at the same sizes, in the same process, on the
same random segments; then the DeFINE table's effect at inference, and AWD-LSTM's weight drop through the fused
kernel.

  python benchmarks/lstm.py                          # CPU defaults: 2 layers, d=256, V=10,000, full softmax tied
  python benchmarks/lstm.py --device cuda --emb-dim 400 --hidden-dim 1150 --layers 3 --tokens-per-sample 70 \
      --batch 80 --vocab 267744                      # AWD-LSTM's body at WikiText-103's dictionary

- training: tokens/s of a step (forward, loss, backward), both with a full softmax tied to the input table and no
  dropout; fairseq's with its ``cross_entropy`` criterion, ours with ``adaptive_cross_entropy``;
- scoring: tokens/s of eval-lm's scoring of the same segments (``get_normalized_probs`` with the sample, then the
  targets' entries), no gradient;
- DeFINE at inference: our LSTM with DeFINE (n=64, k=1024, N=3) scoring with the unit run for every token, and with
  ``--define-cache`` (its outputs looked up in a V x m table built once);
- weight drop: our LSTM trained with ``--weight-drop 0.5`` (a dropped copy of each layer's hidden-to-hidden weights
  handed to the fused kernel). The last column counts cuDNN's "weights are not part of single contiguous chunk of
  memory" warnings seen while timing: each one means cuDNN copied the layer's weights into a buffer of its own.

Widths: ``--emb-dim`` is the table's (and the softmax's) width m, ``--hidden-dim`` the LSTM's units (both default to
``--dim``). Ours runs m -> hidden -> ... -> m (AWD-LSTM's layout, the last layer giving m); fairseq's ``lstm_lm`` runs
every layer at ``--hidden-dim`` and projects to m before its tied softmax.

Peak memory above the weights is measured on CUDA only (n/a on CPU).
"""

import argparse
import math
import warnings
from pathlib import Path

import torch
from fairseq.criterions.cross_entropy import CrossEntropyCriterion

from fairseq_adaptive.criterions.adaptive_cross_entropy import AdaptiveCrossEntropyCriterion
from fairseq_adaptive.models.counting import build_arch, count_parameters, dictionary_of_size

from common import optional, print_table, time_step, write_json, zipf_targets  # noqa: E402  (same folder)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--emb-dim", type=int, help="table and softmax width m (default: --dim)")
    parser.add_argument("--hidden-dim", type=int, help="LSTM units (default: --dim)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=10000)
    parser.add_argument("--tokens-per-sample", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "lstm.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    d = dictionary_of_size(args.vocab)
    torch.manual_seed(0)
    tokens = zipf_targets(args.batch * (args.tokens_per_sample + 1), args.vocab - 4, device).view(args.batch, -1) + 4
    sample = {"net_input": {"src_tokens": tokens[:, :-1].contiguous(), "src_lengths": None},
              "target": tokens[:, 1:].contiguous(), "ntokens": tokens[:, 1:].numel(), "nsentences": args.batch}
    dim, hidden, layers = str(args.emb_dim or args.dim), str(args.hidden_dim or args.dim), str(args.layers)
    fairseq_flags = ["--decoder-embed-dim", dim, "--decoder-hidden-size", hidden, "--decoder-out-embed-dim", dim,
                     "--decoder-layers", layers, "--share-decoder-input-output-embed", "--decoder-dropout-in", "0",
                     "--decoder-dropout-out", "0", "--tokens-per-sample", str(args.tokens_per_sample)]
    ours_flags = ["--decoder-embed-dim", dim, "--decoder-hidden-dim", hidden, "--decoder-layers", layers]
    define_flags = [*ours_flags, "--define-dim", "64", "--define-expand-dim", "1024", "--define-layers", "3"]
    variants = [("fairseq lstm_lm (LSTMCell loop) + cross_entropy", "lstm_lm", fairseq_flags, CrossEntropyCriterion),
                ("ours: adaptive_lstm_lm (fused LSTM) + adaptive_cross_entropy", "lstm_tiny", ours_flags,
                 AdaptiveCrossEntropyCriterion),
                ("ours + DeFINE (n=64, k=1024, N=3)", "lstm_tiny", define_flags, AdaptiveCrossEntropyCriterion),
                ("ours + DeFINE, --define-cache", "lstm_tiny", [*define_flags, "--define-cache"],
                 AdaptiveCrossEntropyCriterion),
                ("ours, --weight-drop 0.5", "lstm_tiny", [*ours_flags, "--weight-drop", "0.5"],
                 AdaptiveCrossEntropyCriterion)]
    rows = []
    for name, arch, flags, crit_cls in variants:
        model, task = build_arch(arch, d, flags)
        model = model.to(device)
        criterion = crit_cls(task, False)

        def score():
            with torch.no_grad():
                out = model(**sample["net_input"])
                lprobs = model.get_normalized_probs(out, log_probs=True, sample=sample)
                return float(lprobs.gather(-1, sample["target"].unsqueeze(-1)).sum())

        model.eval()
        eval_ms, eval_mem, _ = time_step(score, device, args.repeat, args.warmup)
        train_ms, train_mem, losses, copies = None, None, [0.0], None
        if "cache" not in flags[-1]:  # the cache serves eval mode only
            model.train()

            def step():
                model.zero_grad(set_to_none=True)
                loss, _, _ = criterion(model, sample)
                loss.backward()
                return float(loss.detach())

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                train_ms, train_mem, losses = time_step(step, device, args.repeat, args.warmup)
            copies = sum("contiguous chunk of memory" in str(w.message) for w in caught)
        n = sample["ntokens"]
        rows.append({"impl": name, "params": count_parameters(model),
                     "train_tok_s": None if train_ms is None else n / train_ms * 1000, "eval_tok_s": n / eval_ms * 1000,
                     "train_peak_mib": train_mem, "eval_peak_mib": eval_mem,
                     "finite": all(math.isfinite(v) for v in losses), "cudnn_copy_warnings": copies})
        del model
    print(f"device {device}, {args.layers} LSTM layers of {hidden} units, m={dim}, V={args.vocab:,} (full softmax, "
          f"tied), {args.batch} x {args.tokens_per_sample} tokens per batch, torch {torch.__version__}, median of "
          f"{args.repeat}")
    print_table(["implementation", "parameters", "train tokens/s", "eval tokens/s", "train peak MiB",
                 "eval peak MiB", "cuDNN weight-copy warnings"],
                [[r["impl"], f"{r['params']:,}", optional(r["train_tok_s"], ",.0f"), f"{r['eval_tok_s']:,.0f}",
                  optional(r["train_peak_mib"], ".0f"), optional(r["eval_peak_mib"], ".0f"),
                  optional(r["cudnn_copy_warnings"], "d")] for r in rows])
    print(f"ours / fairseq: training {rows[1]['train_tok_s'] / rows[0]['train_tok_s']:.2f}x, scoring "
          f"{rows[1]['eval_tok_s'] / rows[0]['eval_tok_s']:.2f}x; DeFINE's table at inference: "
          f"{rows[3]['eval_tok_s'] / rows[2]['eval_tok_s']:.2f}x the unit's scoring speed; weight drop 0.5 trains at "
          f"{rows[4]['train_tok_s'] / rows[1]['train_tok_s']:.2f}x the speed without it")
    write_json(args.json, args, rows)


if __name__ == "__main__":
    main()
