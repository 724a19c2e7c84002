#!/usr/bin/env python
"""A whole training step (forward, loss, backward) of our tied adaptive LM beside fairseq's built-in one
(``transformer_lm`` with ``--adaptive-input --tie-adaptive-weights --tie-adaptive-proj`` and ``adaptive_loss``, i.e.
``transformer_lm_wiki103``), built in the same process on the same random batch of Zipf-distributed tokens.

  python benchmarks/train_step.py                                   # CPU defaults: 2 blocks, d=256, V=50,000
  python benchmarks/train_step.py --device cuda --dtype bf16,fp32 --layers 16 --dim 1024 --ffn 4096 --heads 8 \
      --vocab 267744 --cutoff 20000,60000 --tokens-per-sample 512 --max-tokens 8192

Prints words/s (target tokens per second) and, on CUDA, the peak memory above what the weights and the batch hold
(activations, gradients, logits); writes --json. The models are built on ``--device`` (no CPU initialisation of
a WikiText-103-sized model before the copy), weights and activations in each ``--dtype`` in turn.
"""

import argparse
import math
from pathlib import Path

import torch
from fairseq.criterions.adaptive_loss import AdaptiveLoss

from fairseq_adaptive.criterions.adaptive_cross_entropy import AdaptiveCrossEntropyCriterion
from fairseq_adaptive.models.counting import build_arch, dictionary_of_size

from common import optional, print_table, time_step, write_json, zipf_targets  # noqa: E402  (same folder)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(arch, args, d, device, extra=()):
    flags = ["--decoder-layers", str(args.layers), "--decoder-embed-dim", str(args.dim), "--decoder-input-dim",
             str(args.dim), "--decoder-output-dim", str(args.dim), "--decoder-ffn-embed-dim", str(args.ffn),
             "--decoder-attention-heads", str(args.heads), "--adaptive-input", "--adaptive-input-cutoff", args.cutoff,
             "--adaptive-softmax-cutoff", args.cutoff, "--adaptive-input-factor", "4", "--adaptive-softmax-factor",
             "4", "--dropout", "0.1", "--tokens-per-sample", str(args.tokens_per_sample), *extra]
    return build_arch(arch, d, flags, device=device)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", help="comma-separated, of fp32,bf16,fp16: each in turn")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=50000)
    parser.add_argument("--cutoff", default="5000,20000")
    parser.add_argument("--tokens-per-sample", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "train_step.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    dtypes = args.dtype.split(",")
    for name in dtypes:
        if name not in DTYPES:
            parser.error(f"--dtype {name}: choose from {', '.join(DTYPES)}")
    d = dictionary_of_size(args.vocab)
    bsz = args.max_tokens // args.tokens_per_sample
    torch.manual_seed(0)
    tokens = zipf_targets(bsz * (args.tokens_per_sample + 1), args.vocab - 4, device).view(bsz, -1) + 4
    sample = {"net_input": {"src_tokens": tokens[:, :-1].contiguous(), "src_lengths": None},
              "target": tokens[:, 1:].contiguous(),
              "ntokens": tokens[:, 1:].numel()}
    rows = []
    variants = [("fairseq transformer_lm_wiki103 + adaptive_loss", "transformer_lm_wiki103", AdaptiveLoss, ()),
                ("ours, fairseq's masked attention (--no-causal-sdpa)", "adaptive_lm_wiki103",
                 AdaptiveCrossEntropyCriterion, ("--no-causal-sdpa",)),
                ("ours: adaptive_lm_wiki103 + adaptive_cross_entropy", "adaptive_lm_wiki103",
                 AdaptiveCrossEntropyCriterion, ())]
    for dtype_name in dtypes:
        for name, arch, crit_cls, extra in variants:
            torch.manual_seed(0)
            model, task = build(arch, args, d, device, extra)
            model = model.to(device, DTYPES[dtype_name]).train()
            criterion = crit_cls(task, sentence_avg=False)

            def step():
                model.zero_grad(set_to_none=True)
                loss, _, _ = criterion(model, sample)
                loss.backward()
                return float(loss.detach())

            ms, extra_mib, losses = time_step(step, device, args.repeat, args.warmup)
            rows.append({"impl": name, "dtype": dtype_name, "ms": ms, "words_per_s": sample["ntokens"] / ms * 1000,
                         "extra_peak_gib": None if extra_mib is None else extra_mib / 2**10,
                         "loss_finite": all(math.isfinite(v) for v in losses)})
            del model, criterion
    print(f"device {device}, {args.layers} blocks, d={args.dim}, V={args.vocab}, cutoffs {args.cutoff}, "
          f"{sample['ntokens']} tokens/step, torch {torch.__version__}, median of {args.repeat}")
    print_table(["implementation", "dtype", "step ms", "words/s", "extra peak GiB", "finite loss"],
                [[r["impl"], r["dtype"], f"{r['ms']:.1f}", f"{r['words_per_s']:,.0f}",
                  optional(r["extra_peak_gib"], ".2f"), r["loss_finite"]] for r in rows])
    for dtype_name in dtypes:
        fairseq, masked, ours = (r for r in rows if r["dtype"] == dtype_name)
        print(f"{dtype_name}: ratio ours / fairseq: {ours['words_per_s'] / fairseq['words_per_s']:.2f}x "
              f"(with fairseq's attention: {masked['words_per_s'] / fairseq['words_per_s']:.2f}x)")
    write_json(args.json, args, rows)


if __name__ == "__main__":
    main()
