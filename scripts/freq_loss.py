#!/usr/bin/env python
"""Loss by word frequency: score a test set with one or more language-model checkpoints and report, for the tokens
in each bin of training counts, their mean loss and perplexity, side by side. Adaptive input's paper (Baevski & Auli
2019, Section 5) compares models this way: rare words are where the input and output layers differ most.

The bins are ranges of each target word's count in the training dictionary (the ``dict.txt`` of the binarised data,
written by fairseq-preprocess from the training text); the end-of-line symbol and ``<unk>`` (every out-of-vocabulary
word) get rows of their own. Every token is scored as fairseq-eval-lm scores it (same dataset, same blocks; with
``--context-window`` the same windows), so the token-weighted mean over the bins is eval-lm's loss.

  python scripts/freq_loss.py DATA CKPT [CKPT ...] [--names A,B] [--subset test] [--tokens-per-sample 256]
      [--context-window 0] [--batch-size N] [--edges 10,100,1000,10000] [--plot loss_by_frequency.png]
      [--json out.json]
"""

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]


def token_losses(data: str, path: str, subset: str, tokens_per_sample: int, context_window: int,
                 max_tokens: int, cpu: bool, batch_size: Optional[int] = None):
    """Every scored target of ``subset``: its dictionary index and its loss in bits; and the dictionary."""
    from fairseq import checkpoint_utils, utils
    from fairseq.sequence_scorer import SequenceScorer

    overrides = {"data": data, "tokens_per_sample": tokens_per_sample - context_window}
    if batch_size is not None:  # --task bptt_lm reads the split as this many streams
        overrides["batch_size"] = batch_size
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides=overrides)
    use_cuda = torch.cuda.is_available() and not cpu
    for model in models:
        model.eval()
        if use_cuda:
            model.cuda()
    if context_window > 0 and getattr(task.cfg, "_name", None) == "bptt_lm":
        sys.exit(f"error: {path} runs its state on from segment to segment (--task bptt_lm): it takes no "
                 f"--context-window; drop it")
    task.load_dataset(subset)
    batches = task.eval_lm_dataloader(
        dataset=task.dataset(subset), max_tokens=max_tokens, context_window=context_window,
        max_positions=utils.resolve_max_positions(*[m.max_positions() for m in models]),
    )
    scorer = SequenceScorer(task.target_dictionary)
    ids, bits = [], []
    with torch.no_grad():
        for sample in batches:
            if "net_input" not in sample:
                continue
            sample = utils.move_to_cuda(sample) if use_cuda else sample
            for hypos in scorer.generate(models, sample):
                ids.append(hypos[0]["tokens"].cpu())
                bits.append(-hypos[0]["positional_scores"].float().cpu() / math.log(2))
    return torch.cat(ids), torch.cat(bits), task.source_dictionary


def bin_labels(edges: List[int]) -> List[str]:
    bounds = [0] + edges
    labels = [f"{a:,}-{b - 1:,}" for a, b in zip(bounds, bounds[1:])]
    return labels + [f">= {edges[-1]:,}"]


def by_frequency(ids: torch.Tensor, bits: torch.Tensor, dictionary, edges: List[int]) -> Dict[str, Dict[str, float]]:
    """``{bin label: {"tokens": n, "loss": mean bits}}`` in bin order, then ``</s>`` and ``<unk>``."""
    counts = torch.tensor(dictionary.count, dtype=torch.long)[ids]
    which = torch.bucketize(counts, torch.tensor(edges), right=True)
    special = {"</s>": ids == dictionary.eos(), "<unk>": ids == dictionary.unk()}
    regular = ~(special["</s>"] | special["<unk>"])
    masks = {label: regular & (which == i) for i, label in enumerate(bin_labels(edges))} | special
    return {label: {"tokens": int(m.sum()), "loss": float(bits[m].mean()) if m.any() else float("nan")}
            for label, m in masks.items()}


def print_table(rows: Dict[str, Dict[str, Dict[str, float]]], total: int) -> None:
    names = list(rows)
    first = rows[names[0]]
    print("| training count | test tokens | share | " + " | ".join(f"{n}: loss (bits) / ppl" for n in names) + " |")
    print("|---|---:|---:|" + "---:|" * len(names))
    for label in first:
        cells = [f"{rows[n][label]['loss']:.3f} / {2 ** rows[n][label]['loss']:,.1f}" for n in names]
        print(f"| {label} | {first[label]['tokens']:,} | {first[label]['tokens'] / total:.1%} | " + " | ".join(cells)
              + " |")
    means = [sum(r["tokens"] * r["loss"] for r in rows[n].values() if r["tokens"]) / total for n in names]
    print("| all (eval-lm's loss) | " + f"{total:,} | 100% | " + " | ".join(f"{m:.3f} / {2 ** m:,.1f}" for m in means)
          + " |")


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(next(iter(rows.values())))
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for k, (name, bins) in enumerate(rows.items()):
        ax.bar([i + k * width for i in range(len(labels))], [bins[b]["loss"] for b in labels], width, label=name)
    ax.set_xticks([i + width * (len(rows) - 1) / 2 for i in range(len(labels))], labels, fontsize=8)
    ax.set_xlabel("training count of the target word")
    ax.set_ylabel("test loss (bits per token)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="binarised data directory (fairseq-preprocess output) the checkpoints fit")
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--names", help="comma-separated row names (default: the checkpoints' folder names)")
    parser.add_argument("--subset", default="test")
    parser.add_argument("--tokens-per-sample", type=int, default=256)
    parser.add_argument("--context-window", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=8192)
    parser.add_argument("--batch-size", type=int,
                        help="parallel streams of a --task bptt_lm checkpoint (default: its training --batch-size); "
                             "give eval-lm's to score as it does")
    parser.add_argument("--edges", default="10,100,1000,10000", help="bin edges in training counts")
    parser.add_argument("--plot", help="write a bar chart (PNG) here")
    parser.add_argument("--json", help="write the numbers here")
    parser.add_argument("--cpu", action="store_true")
    args = parser.parse_args(argv)

    names = args.names.split(",") if args.names else [Path(c).parent.name for c in args.checkpoints]
    if len(names) != len(args.checkpoints):
        sys.exit(f"error: --names gives {len(names)} names for {len(args.checkpoints)} checkpoints")
    if not (Path(args.data) / "dict.txt").exists():
        sys.exit(f"error: {args.data} has no dict.txt: pass the binarised data directory the checkpoints were "
                 f"trained on (fairseq-preprocess --destdir)")
    import fairseq_adaptive  # noqa: F401  (registers our models, so their checkpoints can be told apart)
    from fairseq.models import FairseqLanguageModel

    from fairseq_adaptive.checks import check_checkpoint, check_context_window, check_sizes
    from fairseq_adaptive.models.lm_base import LM_TASKS

    for path in args.checkpoints:
        try:  # a language model of any kind, readable, before anything is loaded
            check_checkpoint(path, FairseqLanguageModel, LM_TASKS,
                             "this script scores language models; translation models are scored by fairseq-generate "
                             "--score-reference")
        except ValueError as e:
            sys.exit(f"error: {e}")
    try:
        edges = [int(e) for e in args.edges.split(",")]
    except ValueError:
        sys.exit(f"error: --edges={args.edges!r} is not a comma-separated list of integers such as 10,100,1000")
    try:
        check_sizes({"batch_size": args.batch_size, "max_tokens": args.max_tokens})
        check_context_window(args.tokens_per_sample, args.context_window)
    except ValueError as e:
        sys.exit(f"error: {e}")
    if edges != sorted(set(edges)) or edges[0] <= 0:
        sys.exit(f"error: --edges={args.edges} must be positive and strictly increasing")

    rows, total = {}, None
    for name, path in zip(names, args.checkpoints):
        ids, bits, dictionary = token_losses(args.data, path, args.subset, args.tokens_per_sample,
                                             args.context_window, args.max_tokens, args.cpu, args.batch_size)
        if total is not None and len(ids) != total:
            sys.exit(f"error: {path} scored {len(ids):,} tokens, the first checkpoint {total:,}: give every "
                     f"checkpoint the same --tokens-per-sample and --context-window (and --batch-size for --task "
                     f"bptt_lm checkpoints)")
        total = len(ids)
        rows[name] = by_frequency(ids, bits, dictionary, edges)
    print_table(rows, total)
    if args.plot:
        plot(rows, Path(args.plot))
    if args.json:
        Path(args.json).write_text(json.dumps({"subset": args.subset, "tokens": total, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
