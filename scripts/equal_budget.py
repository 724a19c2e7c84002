"""Shared by the small-scale reproductions (table3_small.py, define_small.py, txl_small.py, lstm_small.py): train
each row for the same wall-clock minutes on one binarised corpus, score its best checkpoint with fairseq-eval-lm on
valid and test, and print a markdown table (parameters, updates, words/s, perplexities) plus a JSON file."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from plot_curves import eval_ppl, read_log, summary  # same folder

ROOT = Path(__file__).resolve().parents[1]


def run(cmd, log):
    with open(log, "w") as f:
        done = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(map(str, cmd))}\n  see {log}")
    return Path(log).read_text()


def add_common_arguments(parser, work: str, minutes: float):
    parser.add_argument("--work", default=str(ROOT / "work_dirs" / work))
    parser.add_argument("--minutes", type=float, default=minutes, help="training budget per row (wall clock)")
    parser.add_argument("--tokens-per-sample", type=int, default=256)
    parser.add_argument("--context-window", type=int, default=0,
                        help="eval-lm context window (0: score independent blocks; a window multiplies CPU time)")
    parser.add_argument("--summarize-only", action="store_true", help="re-read the logs of an earlier run")


def bundled_corpus_parser(description: str, work: str, minutes: float,
                          tokens_per_sample: int) -> argparse.ArgumentParser:
    """The arguments of a comparison on the bundled corpus (``--data`` to use another)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "data" / "lm-sample"))
    add_common_arguments(parser, work, minutes)
    parser.set_defaults(tokens_per_sample=tokens_per_sample)
    return parser


def prepare(parser: argparse.ArgumentParser):
    """Parse the arguments, binarise the corpus once: ``(args, work folder, binarised data, coverage cutoffs)``."""
    args = parser.parse_args()
    from fairseq_adaptive.checks import check_context_window

    try:
        check_context_window(args.tokens_per_sample, args.context_window)
    except ValueError as e:
        sys.exit(f"error: {e}")
    work = Path(args.work)
    bin_dir = binarise(args.data, work)
    return args, work, bin_dir, coverage_cutoff(bin_dir)


def check_corpus(data: str, files) -> None:
    """Stop with what to pass when ``data`` does not hold the corpus."""
    missing = [f for f in files if not any((Path(data) / f"{f}{ext}").exists() for ext in ("", ".gz"))]
    if missing:
        sys.exit(f"error: no corpus at {data} (missing {', '.join(missing)}): pass --data DIR holding "
                 f"{', '.join(files)} (optionally gzipped); the default is the bundled sample")


def binarise(data: str, work: Path) -> Path:
    check_corpus(data, ["train.txt", "valid.txt", "test.txt"])
    work.mkdir(parents=True, exist_ok=True)
    bin_dir = work / "bin"
    if not (bin_dir / "dict.txt").exists():
        run(["bash", ROOT / "scripts" / "prepare_lm.sh", data, bin_dir], work / "preprocess.log")
    return bin_dir


def coverage_cutoff(bin_dir: Path) -> str:
    """Band boundaries from the dictionary's counts: 90% and 98% of the training tokens (the demo's bands)."""
    from fairseq.data import Dictionary

    sys.path.insert(0, str(ROOT))
    from fairseq_adaptive.tasks.adaptive_language_modeling import derive_cutoffs

    return ",".join(map(str, derive_cutoffs(Dictionary.load(str(bin_dir / "dict.txt")), [0.9, 0.98])))


def tied_adaptive(cutoff: str):
    """Flags of an adaptive input at ``cutoff`` (factor 4) and the adaptive softmax tied to it."""
    return ["--adaptive-input", "--adaptive-input-cutoff", cutoff, "--adaptive-softmax-cutoff", cutoff,
            "--adaptive-input-factor", "4", "--adaptive-softmax-factor", "4", "--tie-adaptive-weights",
            "--tie-adaptive-proj"]


def train_and_score(args, bin_dir: Path, name: str, arch: str, extra, body, lr="0.002", batching=None,
                    evaluation=None) -> dict:
    """One row: train ``arch`` with ``body + extra`` flags for ``args.minutes``, then eval-lm on valid and test.
    ``batching`` (default: ``--task adaptive_language_modeling --max-tokens 4096``) and ``evaluation`` (default:
    blocks of ``--tokens-per-sample`` with ``--context-window``) replace the task and batching flags of each."""
    work = Path(args.work)
    save = work / name
    logs = {split: work / f"{name}.{split}.log" for split in ("train", "valid", "test")}
    if batching is None:
        batching = ["--task", "adaptive_language_modeling", "--max-tokens", 4096]
    if evaluation is None:
        evaluation = ["--tokens-per-sample", args.tokens_per_sample, "--context-window", args.context_window,
                      "--max-tokens", 8192]
    if not args.summarize_only:
        run(["fairseq-train", bin_dir, "--user-dir", ROOT / "fairseq_adaptive", "--cpu", *batching,
             "--arch", arch, "--criterion", "adaptive_cross_entropy",
             *body, *extra, "--optimizer", "adam", "--lr", lr, "--lr-scheduler", "inverse_sqrt",
             "--warmup-updates", "50", "--clip-norm", "0.5", "--tokens-per-sample", args.tokens_per_sample,
             "--stop-time-hours", args.minutes / 60, "--save-dir", save,
             "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", 20, "--no-progress-bar",
             "--seed", 1], logs["train"])
        for split in ("valid", "test"):
            run(["fairseq-eval-lm", bin_dir, "--user-dir", ROOT / "fairseq_adaptive", "--cpu",
                 "--path", save / "checkpoint_best.pt", "--gen-subset", split, *evaluation], logs[split])
    run_summary = summary(read_log(logs["train"]), eval_ppl(logs["test"]))
    row = {"row": name, "arch": arch, "flags": " ".join(map(str, extra)),
           **{k: run_summary[k] for k in ("params", "updates", "words_per_s", "test_ppl")},
           "valid_ppl": eval_ppl(logs["valid"])}
    print(f"{name}: {row['params'] / 1e6:.2f}M params, {row['updates']} updates, {row['words_per_s']:.0f} words/s, "
          f"valid {row['valid_ppl']:.2f}, test {row['test_ppl']:.2f}", flush=True)
    return row


def report(args, results, json_name: str, **meta) -> None:
    (Path(args.work) / json_name).write_text(json.dumps(
        {"minutes": args.minutes, "machine": f"{os.cpu_count()} CPU cores", **meta, "rows": results}, indent=1))
    print(f"\n| row | params | updates in {args.minutes:g} min | train words/s | valid ppl | test ppl |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['row']} | {r['params'] / 1e6:.2f}M | {r['updates']} | {r['words_per_s']:,.0f} | "
              f"{r['valid_ppl']:.1f} | {r['test_ppl']:.1f} |")
