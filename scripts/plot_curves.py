#!/usr/bin/env python
"""Learning curves and a comparison table from fairseq training logs written with ``--log-format json``
(``--log-file`` or the captured stdout of fairseq-train / fairseq-hydra-train).

  python scripts/plot_curves.py runs/a/train.log runs/b/train.log --labels ADP ADP-T --out curves.png \
      [--test-logs runs/a/eval.log runs/b/eval.log]

Draws train and valid perplexity against updates and against wall-clock time (PNG) and prints a markdown table:
parameters, updates, best valid ppl, test ppl (from fairseq-eval-lm output, if given), mean train words/s.
"""

import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional

_JSON = re.compile(r"(\{\".*\})\s*$")
_PARAMS = re.compile(r"num\. shared model params: ([\d,]+)")
_EVAL_PPL = re.compile(r"Perplexity: ([\d.]+)")


def read_log(path: Path) -> Dict[str, object]:
    """Records of one run: {'train_inner': [...], 'valid': [...], 'train': [...], 'params': int or None}."""
    run: Dict[str, object] = {"train_inner": [], "train": [], "valid": [], "params": None}
    for line in path.read_text(errors="replace").splitlines():
        m = _JSON.search(line)
        if m:
            kind, record = classify(json.loads(m.group(1)))
            run[kind].append(record)
        elif run["params"] is None and (p := _PARAMS.search(line)):
            run["params"] = int(p.group(1).replace(",", ""))
    if not run["train_inner"] and not run["valid"]:
        sys.exit(f"error: {path} holds no json records: train with --log-format json (and --log-file)")
    return run


def classify(record: dict) -> tuple:
    """fairseq's json records (stdout or --log-file, where the tag is absent): epoch summaries prefix their keys
    with ``train_`` / ``valid_`` (so they hold ``train_loss`` / ``valid_loss``); interval records hold ``loss``."""
    for kind in ("valid", "train"):
        if kind + "_loss" in record:
            return kind, {k[len(kind) + 1 :] if k.startswith(kind + "_") else k: v for k, v in record.items()}
    return "train_inner", record


def series(records: List[dict], y: str, x: str) -> tuple:
    pts = [(float(r[x]), float(r[y])) for r in records if x in r and y in r and math.isfinite(float(r[y]))]
    return [p[0] for p in pts], [p[1] for p in pts]


def eval_ppl(path: Optional[Path]) -> Optional[float]:
    """The perplexity a fairseq-eval-lm log reports (its last one), or None."""
    if path is None:
        return None
    found = _EVAL_PPL.findall(path.read_text(errors="replace"))
    return float(found[-1]) if found else None


def summary(run: Dict[str, object], test: Optional[float]) -> dict:
    inner, valid, epochs = run["train_inner"], run["valid"], run["train"]
    updates = [float(r["num_updates"]) for r in inner + valid + epochs if "num_updates" in r]
    if epochs and all("wps" in r and "num_updates" in r for r in epochs):
        # each epoch summary gives that epoch's speed; the run's is all its words over all its time, the harmonic
        # mean weighted by updates (a run stopped by a time budget ends in an epoch of a few updates, whose speed
        # alone says little)
        ends = [float(r["num_updates"]) for r in epochs]
        counts = [b - a for a, b in zip([0.0] + ends, ends)]
        wps = sum(counts) / sum(c / float(r["wps"]) for c, r in zip(counts, epochs) if c > 0)
    else:
        speeds = [float(r["wps"]) for r in inner[1:] if "wps" in r]
        wps = statistics.mean(speeds) if speeds else float("nan")
    return {
        "params": run["params"],
        "updates": int(max(updates, default=0)),
        "best_valid_ppl": min((float(r["ppl"]) for r in valid), default=float("nan")),
        "test_ppl": test,
        "words_per_s": wps,
    }


def wall_at(inner: List[dict], update: float) -> float:
    """Wall-clock seconds of the last train_inner record at or before ``update`` (linear beyond the last)."""
    pts = [(float(r["num_updates"]), float(r["wall"])) for r in inner if "wall" in r]
    if not pts:
        return float("nan")
    before = [p for p in pts if p[0] <= update] or pts[:1]
    (u0, w0), (u1, w1) = before[-1], pts[-1]
    return w0 if u1 == u0 or update <= u0 else w0 + (update - u0) * (w1 - pts[0][1]) / max(u1 - pts[0][0], 1)


def plot(runs, labels, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for run, label in zip(runs, labels):
        for ax, x in zip(axes, ("num_updates", "wall")):
            line = ax.plot(*series(run["train_inner"], "ppl", x), alpha=0.6, label=f"{label} train")[0]
            vx, vy = series(run["valid"], "ppl", "num_updates")
            if x == "wall":  # valid records carry no clock: take the train clock at the same update
                vx = [wall_at(run["train_inner"], u) for u in vx]
            ax.plot(vx, vy, "o-", color=line.get_color(), label=f"{label} valid")
    for ax, xlabel in zip(axes, ("updates", "wall-clock seconds")):
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("perplexity")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--labels", nargs="+")
    parser.add_argument("--test-logs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("curves.png"))
    args = parser.parse_args(argv)
    labels = args.labels or [p.parent.name or p.stem for p in args.logs]
    tests = args.test_logs or [None] * len(args.logs)
    if len(labels) != len(args.logs) or len(tests) != len(args.logs):
        sys.exit("error: give one label (and one test log, if any) per training log")
    runs = [read_log(p) for p in args.logs]
    plot(runs, labels, args.out)
    print(f"| run | params | updates | best valid ppl | test ppl | train words/s |\n|---|---:|---:|---:|---:|---:|")
    for label, run, test in zip(labels, runs, tests):
        s = summary(run, eval_ppl(test))
        params = f"{s['params'] / 1e6:.2f}M" if s["params"] else "?"
        test_s = f"{s['test_ppl']:.2f}" if s["test_ppl"] is not None else "-"
        print(f"| {label} | {params} | {s['updates']} | {s['best_valid_ppl']:.2f} | {test_s} | {s['words_per_s']:,.0f} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
