#!/usr/bin/env python
"""Transformer-XL: our ``txl_lm`` beside fairseq's own ``transformer_xl`` (``examples/truncated_bptt``, a wrapper of
HuggingFace's ``TransfoXLLMHeadModel``), same config, same process, same segments, with the memory carried from
segment to segment as training and evaluation carry it. Both use Transformer-XL's own vocabulary layers (a plain
table, a clustered softmax at full width tied to it, a bias per word, ``div_val`` 1).

fairseq's model needs the last transformers that has Transformer-XL: the benchmark extra
(``pip install -c requirements/constraints.txt -r requirements/benchmarks.txt``: transformers 4.35.2, tokenizers
0.15.2, huggingface_hub < 0.20), never a runtime dependency.

  python benchmarks/txl.py                     # CPU defaults: 4 layers, d=256, 8 heads of 32, inner 1024
  python benchmarks/txl.py --vocab 267744 --cutoff 20000,40000,200000

- training: tokens/s of a step (forward, loss, backward) on segments of ``--tgt-len`` tokens with a memory of
  ``--mem-len``; fairseq's model is trained with fairseq's ``cross_entropy`` criterion on the ``B x T x V``
  log-probabilities it returns (it calls the HuggingFace model without labels), ours with ``adaptive_cross_entropy``;
- evaluation: tokens/s of scoring segments as fairseq-eval-lm does (``get_normalized_probs`` with the sample, then
  the targets' entries), without gradient;
- equal weights: ours loaded with the HuggingFace model's weights, the summed NLL of the same four segments (memory
  carried) and the largest difference of a token's log-probability (fp32; HuggingFace's model does not run in fp64).
  HuggingFace's model is started with an empty memory, as the original code and ours start: left to itself it starts
  with ``--mem-len`` zero vectors, keys its first segment attends to.

Peak memory above the weights is measured on CUDA only (n/a on CPU). Where fairseq's model cannot be built (no
transformers, or one without Transformer-XL), its row says why and ours is measured alone.
"""

import argparse
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from fairseq.criterions.cross_entropy import CrossEntropyCriterion

from fairseq_adaptive.convert import convert_hf_transfo_xl_state
from fairseq_adaptive.criterions.adaptive_cross_entropy import AdaptiveCrossEntropyCriterion
from fairseq_adaptive.models.counting import build_arch, count_parameters, dictionary_of_size

from common import optional, print_table, time_step, write_json, zipf_targets  # noqa: E402  (same folder)

FAIRSEQ = "fairseq transformer_xl (HuggingFace 4.35.2)"
# transformers 4.35.2 imports accelerate wherever one is installed, and the GPU machine's accelerate 1.x is years newer
# than 4.35.2 (and than the huggingface_hub 0.19 it accepts); fairseq's wrapper of Transformer-XL uses none of it, so
# transformers is told there is none (importlib finds no spec for a module that sys.modules maps to None)
sys.modules.setdefault("accelerate", None)


def build_ours(args, d):
    flags = ["--decoder-layers", str(args.layers), "--decoder-embed-dim", str(args.dim), "--decoder-attention-heads",
             str(args.heads), "--decoder-attention-head-dim", str(args.head_dim), "--decoder-ffn-embed-dim",
             str(args.ffn), "--mem-len", str(args.mem_len), "--adaptive-softmax-cutoff", args.cutoff, "--dropout",
             str(args.dropout)]
    return build_arch("txl_wiki103_base", d, flags)


def build_fairseq(args, d):
    from fairseq.examples.truncated_bptt.transformer_xl_model import TransformerXLConfig, TransformerXLLanguageModel

    cfg = TransformerXLConfig(cutoffs=[int(c) for c in args.cutoff.split(",")], d_model=args.dim, n_head=args.heads,
                              d_head=args.head_dim, d_inner=args.ffn, div_val=1, n_layer=args.layers,
                              mem_len=args.mem_len, dropout=args.dropout, dropatt=0.0, max_target_positions=10**6)
    task = SimpleNamespace(source_dictionary=d, target_dictionary=d)
    return TransformerXLLanguageModel.build_model(cfg, task), task


def copy_weights(theirs, ours) -> None:
    """HuggingFace's Transformer-XL weights into ours (``convert_hf_transfo_xl_state``: same layout, token ids kept;
    its head's cluster columns in cluster order)."""
    hf = theirs.decoder.model
    ours.load_state_dict(convert_hf_transfo_xl_state(hf.state_dict(), hf.config.to_dict()))


def segments(args, vocab, device, count):
    torch.manual_seed(0)
    stream = zipf_targets(args.batch * (count * args.tgt_len + 1), vocab - 4, device).view(args.batch, -1) + 4
    out = []
    for s in range(count):
        chunk = stream[:, s * args.tgt_len : (s + 1) * args.tgt_len + 1]
        out.append({"net_input": {"src_tokens": chunk[:, :-1].contiguous()}, "target": chunk[:, 1:].contiguous(),
                    "ntokens": chunk[:, 1:].numel(), "nsentences": args.batch})
    return out


class Stream:
    """Feeds the segments in order (the memory carried), restarting at the first after the last."""

    def __init__(self, model, samples, ours: bool):
        self.model, self.samples, self.ours, self.step = model, samples, ours, 0

    def next(self):
        sample = self.samples[self.step % len(self.samples)]
        if self.ours:  # our decoder keeps a memory per stream and restarts it at step 0
            sample = {**sample, "net_input": {**sample["net_input"],
                                              "stream": ("bench", 0, self.step % len(self.samples))}}
        elif self.step % len(self.samples) == 0:
            # an empty memory, as the original code starts (HuggingFace's own start is mem_len zero vectors)
            hf = self.model.decoder.model.transformer
            batch = sample["net_input"]["src_tokens"].size(0)
            self.model.decoder._mems = [hf.word_emb.emb_layers[0].weight.new_zeros(0, batch, hf.d_model)
                                        for _ in range(hf.n_layer)]
        self.step += 1
        return sample


def target_scores(model, sample):
    out = model(**sample["net_input"])
    lprobs = model.get_normalized_probs(out, log_probs=True, sample=sample)
    return lprobs.gather(-1, sample["target"].unsqueeze(-1)).squeeze(-1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=10000)
    parser.add_argument("--cutoff", default="2000,4000,8000")
    parser.add_argument("--tgt-len", type=int, default=64)
    parser.add_argument("--mem-len", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "txl.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    d = dictionary_of_size(args.vocab)
    samples = segments(args, args.vocab, device, 4)
    ours, our_task = build_ours(args, d)
    models, skipped = {}, None
    try:
        theirs, their_task = build_fairseq(args, d)
    except Exception as e:  # noqa: B902  (ImportError, or a transformers that fails on import in its own way)
        skipped = (f"skipped: needs transformers 4.35.2 (pip install -c requirements/constraints.txt -r "
                   f"requirements/benchmarks.txt); building it raised {type(e).__name__}: {str(e)[:120]}")
    else:
        copy_weights(theirs, ours)
        models[FAIRSEQ] = (theirs, CrossEntropyCriterion(their_task, False), False)
    models["ours: txl_lm"] = (ours, AdaptiveCrossEntropyCriterion(our_task, sentence_avg=False), True)
    rows, scores = [], {}
    for name, (model, criterion, is_ours) in models.items():
        model = model.to(device)
        model.eval()
        with torch.no_grad():  # equal weights: the same four segments, memory carried
            feed = Stream(model, samples, is_ours)
            scores[name] = torch.cat([target_scores(model, feed.next()).flatten() for _ in samples]).double()
        feed = Stream(model, samples, is_ours)

        def evaluate():
            with torch.no_grad():
                return float(target_scores(model, feed.next()).sum())

        eval_ms, eval_mem, _ = time_step(evaluate, device, args.repeat, args.warmup)
        model.train()
        feed = Stream(model, samples, is_ours)

        def train():
            model.zero_grad(set_to_none=True)
            loss, _, _ = criterion(model, feed.next())
            loss.backward()
            return float(loss.detach())

        train_ms, train_mem, losses = time_step(train, device, args.repeat, args.warmup)
        tokens = samples[0]["ntokens"]
        rows.append({"impl": name, "params": count_parameters(model), "train_tok_s": tokens / train_ms * 1000,
                     "eval_tok_s": tokens / eval_ms * 1000, "train_peak_mib": train_mem, "eval_peak_mib": eval_mem,
                     "finite": all(math.isfinite(v) for v in losses), "nll": -float(scores[name].sum())})
    print(f"device {device}, {args.layers} layers, d={args.dim}, {args.heads} heads of {args.head_dim}, inner "
          f"{args.ffn}, V={args.vocab:,}, cutoffs {args.cutoff}, {args.batch} x {args.tgt_len} tokens per segment, "
          f"memory {args.mem_len}, torch {torch.__version__}, median of {args.repeat}")
    print_table(["implementation", "parameters", "train tokens/s", "eval tokens/s", "train peak MiB", "eval peak MiB",
                 "NLL, equal weights (4 segments)"],
                ([[FAIRSEQ, skipped, "", "", "", "", ""]] if skipped else []) +
                [[r["impl"], f"{r['params']:,}", f"{r['train_tok_s']:,.0f}", f"{r['eval_tok_s']:,.0f}",
                  optional(r["train_peak_mib"], ".0f"), optional(r["eval_peak_mib"], ".0f"), f"{r['nll']:.4f}"]
                 for r in rows])
    write_json(args.json, args, rows + ([{"impl": FAIRSEQ, "skipped": skipped}] if skipped else []))
    if skipped:
        return
    theirs_row, ours_row = rows
    print(f"ours / fairseq: training {ours_row['train_tok_s'] / theirs_row['train_tok_s']:.2f}x, evaluation "
          f"{ours_row['eval_tok_s'] / theirs_row['eval_tok_s']:.2f}x")
    gap = float((scores[ours_row["impl"]] - scores[theirs_row["impl"]]).abs().max())
    print(f"equal weights: largest difference of a token's log-probability over the {len(samples)} segments {gap:.1e}")


if __name__ == "__main__":
    main()
