#!/usr/bin/env python
"""fairseq-train end to end, then fairseq-eval-lm on the checkpoint, for every body (the adaptive Transformer LM,
Transformer-XL and the LSTM under ``--task bptt_lm``, translation with ``adaptive_transformer``) in bf16 through our
``fairseq-adaptive-train`` (fairseq-train turns ``--bf16`` into ``--tpu``) and in fp16 through fairseq-train, on the
Zipf-distributed corpus of benchmarks/synthetic_corpus.py (WikiText-103's 267,744-word dictionary).

  python benchmarks/synthetic_corpus.py DATA && python benchmarks/train_e2e.py --data DATA --device cuda
  python benchmarks/train_e2e.py --data DATA --size tiny --device cpu --updates 3      # the CPU dry run

Sizes (``--size paper``): the LM is adaptive_lm_wiki103 with 8 of its 16 blocks (d=1024, FFN 4096, 8 heads, cutoffs
20000,60000), 512 tokens per sample, 8,192 per batch; Transformer-XL base (16 x 410, 10 heads of 41, inner 2,100,
cutoffs 20000,40000,200000) on 60 streams of 150 tokens, memory 150; AWD-LSTM (lstm_awd_ptb: 3 layers of 1,150, m=400,
its dropouts and weight drop, AR/TAR 2/1) on 80 streams of 70 tokens, a full softmax tied to its table; translation:
Transformer base (6+6 x 512) with adaptive input and a tied adaptive softmax on one dictionary (cutoffs 20000,60000),
label smoothing 0.1, 8,192 tokens per batch. Every run: Adam, inverse-sqrt warm-up over a tenth of the updates,
clip-norm 0.25, no validation, the last checkpoint saved without optimizer state. ``--size tiny`` changes the widths,
depths and batch sizes only; on CPU fp16 runs in fp32 (fairseq-train --fp16 needs CUDA), every other flag the same.

Each run happens in this process, one after another (no interpreter start per run): the logs are read from fairseq's
JSON records, the peak memory from the CUDA allocator (n/a on CPU), and the warnings raised are counted (a cuDNN
"weights are not part of single contiguous chunk of memory" warning means a copy of the LSTM's weights per call).
Words/s is the median of the logged intervals after the first (which holds the start-up). The JSON (``--json``) is
rewritten after every run, so a run cut short keeps what finished.
"""

import argparse
import contextlib
import gc
import json
import logging
import math
import re
import shutil
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch
from fairseq import options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq_cli import eval_lm
from fairseq_cli import train as fairseq_train

from fairseq_adaptive import train as adaptive_train

from common import optional  # same folder

ROOT = Path(__file__).resolve().parents[1]
USER_DIR = str(ROOT / "fairseq_adaptive")
_SPEED = re.compile(r"Evaluated ([\d,]+) tokens in ([\d.]+)s \(([\d.]+) tokens/s\)")
CUDNN_COPY = "contiguous chunk of memory"

# per body: the values its flags take at each size (the flags themselves are the same at both)
SIZES = {
    "paper": {
        "lm": dict(layers=8, dim=1024, ffn=4096, heads=8, cutoff="20000,60000", tokens_per_sample=512,
                   max_tokens=8192),
        "txl": dict(layers=16, dim=410, heads=10, head_dim=41, ffn=2100, mem=150, tokens_per_sample=150, batch=60,
                    eval_batch=10, cutoff="20000,40000,200000"),
        "lstm": dict(emb=400, hidden=1150, layers=3, tokens_per_sample=70, batch=80, eval_batch=10),
        "mt": dict(layers=6, dim=512, ffn=2048, heads=8, cutoff="20000,60000", max_tokens=8192),
    },
    "tiny": {
        "lm": dict(layers=1, dim=16, ffn=32, heads=2, cutoff="100,300", tokens_per_sample=32, max_tokens=256),
        "txl": dict(layers=1, dim=16, heads=2, head_dim=8, ffn=32, mem=16, tokens_per_sample=16, batch=4,
                    eval_batch=2, cutoff="100,200,400"),
        "lstm": dict(emb=16, hidden=32, layers=3, tokens_per_sample=8, batch=4, eval_batch=2),
        "mt": dict(layers=1, dim=16, ffn=32, heads=2, cutoff="100,300", max_tokens=256),
    },
}


def body_flags(body: str, s: dict):
    """``(corpus subfolder, fairseq-train flags, fairseq-eval-lm flags or None)`` of one body at sizes ``s``."""
    if body == "lm":
        d = s["dim"]
        return "lm", [
            "--task", "adaptive_language_modeling", "--arch", "adaptive_lm_wiki103", "--criterion",
            "adaptive_cross_entropy", "--decoder-layers", s["layers"], "--decoder-embed-dim", d, "--decoder-input-dim",
            d, "--decoder-output-dim", d, "--decoder-ffn-embed-dim", s["ffn"], "--decoder-attention-heads", s["heads"],
            "--adaptive-input-cutoff", s["cutoff"], "--adaptive-softmax-cutoff", s["cutoff"],
            "--tokens-per-sample", s["tokens_per_sample"], "--max-tokens", s["max_tokens"],
        ], ["--tokens-per-sample", s["tokens_per_sample"], "--max-tokens", s["max_tokens"]]
    if body == "txl":
        return "lm", [
            "--task", "bptt_lm", "--arch", "txl_wiki103_base", "--criterion", "adaptive_cross_entropy",
            "--decoder-layers", s["layers"], "--decoder-embed-dim", s["dim"], "--decoder-attention-heads", s["heads"],
            "--decoder-attention-head-dim", s["head_dim"], "--decoder-ffn-embed-dim", s["ffn"], "--mem-len", s["mem"],
            "--adaptive-softmax-cutoff", s["cutoff"], "--tokens-per-sample", s["tokens_per_sample"],
            "--batch-size", s["batch"],
        ], ["--task", "bptt_lm", "--batch-size", s["eval_batch"], "--tokens-per-sample", s["tokens_per_sample"]]
    if body == "lstm":
        return "lm", [
            "--task", "bptt_lm", "--arch", "lstm_awd_ptb", "--criterion", "adaptive_cross_entropy", "--ar-alpha", "2",
            "--tar-beta", "1", "--decoder-embed-dim", s["emb"], "--decoder-hidden-dim", s["hidden"],
            "--decoder-layers", s["layers"], "--tokens-per-sample", s["tokens_per_sample"], "--batch-size", s["batch"],
        ], ["--task", "bptt_lm", "--batch-size", s["eval_batch"], "--tokens-per-sample", s["tokens_per_sample"]]
    if body == "mt":
        sides = []
        for side in ("encoder", "decoder"):
            sides += [f"--{side}-layers", s["layers"], f"--{side}-embed-dim", s["dim"], f"--{side}-ffn-embed-dim",
                      s["ffn"], f"--{side}-attention-heads", s["heads"]]
        return "mt", [
            "--task", "translation", "--source-lang", "src", "--target-lang", "tgt", "--arch",
            "adaptive_transformer_small", *sides, "--share-all-embeddings", "--adaptive-input",
            "--encoder-adaptive-input", "--adaptive-input-cutoff", s["cutoff"], "--adaptive-softmax-cutoff",
            s["cutoff"], "--tie-adaptive-weights", "--tie-adaptive-proj", "--criterion",
            "adaptive_label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-tokens", s["max_tokens"],
        ], None
    raise ValueError(f"unknown body '{body}': choose from lm, txl, lstm, mt")


class Records(logging.Handler):
    """Every log record's logger name and message (fairseq's JSON progress records are named after their tag:
    ``train_inner``, ``train``)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append((record.name, record.getMessage()))

    def json(self, name):
        return [json.loads(m) for n, m in self.records if n == name and m.startswith("{")]


@contextlib.contextmanager
def observed(device):
    """Inside: log records and warnings collected, the CUDA peak counted from zero. Yields ``(records, warnings)``."""
    records = Records()
    logging.getLogger().addHandler(records)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield records, caught
    finally:
        logging.getLogger().removeHandler(records)


def peak_mib(device):
    return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None


def number(value) -> float:
    """A value of fairseq's JSON records (numbers are written as strings: "7.123", "inf", "nan")."""
    return float(value)


def train_summary(records: Records) -> dict:
    inner = records.json("train_inner")
    # the end-of-epoch record names its fields train_loss, train_wps, ...
    final = [{k[len("train_"):] if k.startswith("train_") else k: v for k, v in r.items()}
             for r in records.json("train")]
    logged = inner or final
    if not logged:
        return {"updates": 0}
    speeds = [number(r["wps"]) for r in (inner[1:] if len(inner) > 1 else logged) if "wps" in r]
    losses = [number(r[k]) for r in inner + final for k in ("loss", "nll_loss") if k in r]
    last = logged[-1]
    return {"updates": int(number(last.get("num_updates", 0))), "words_per_s": statistics.median(speeds) if speeds
            else None, "loss": number(last["loss"]), "nonfinite_loss": not all(math.isfinite(v) for v in losses),
            "loss_scale": number(last["loss_scale"]) if "loss_scale" in last else None, "logged": len(logged)}


def run_train(entry, argv):
    if entry == "fairseq-adaptive-train":
        adaptive_train.cli_main(argv)  # the console script's function
    else:
        old, sys.argv = sys.argv, ["fairseq-train", *argv]
        try:
            fairseq_train.cli_main()
        finally:
            sys.argv = old


def run_eval(argv):
    args = options.parse_args_and_arch(options.get_eval_lm_parser(), argv)
    return eval_lm.main(convert_namespace_to_omegaconf(args))


def failure(error: BaseException) -> str:
    traceback.print_exc()
    return f"{type(error).__name__}: {error}"[:400]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="what benchmarks/synthetic_corpus.py wrote (lm/ and mt/)")
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / "results" / "train_e2e"),
                        help="checkpoints go here (one folder per run, emptied first)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--size", default="paper", choices=sorted(SIZES))
    parser.add_argument("--bodies", default="lm,txl,lstm,mt")
    parser.add_argument("--precisions", default="bf16,fp16")
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "train_e2e.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    # fairseq logs to stdout at INFO; this script's stdout is its table
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)
    work = Path(args.work)
    common = ["--user-dir", USER_DIR, "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.0005",
              "--lr-scheduler", "inverse_sqrt", "--warmup-updates", max(1, args.updates // 10), "--clip-norm", "0.25",
              "--max-update", args.updates, "--no-epoch-checkpoints", "--disable-validation",
              "--no-save-optimizer-state", "--log-format", "json", "--log-interval", max(1, args.updates // 10),
              "--num-workers", "0", "--seed", "1"]
    on_cpu = ["--cpu"] if device.type == "cpu" else []
    eval_precision = ["--fp16"] if device.type == "cuda" else on_cpu  # fairseq-eval-lm casts to fp16 only
    precisions = {  # name: (entry point, its flags on this device, what runs)
        "bf16": ("fairseq-adaptive-train", ["--bf16", *on_cpu], "bf16"),
        "fp16": ("fairseq-train", ["--fp16"] if device.type == "cuda" else on_cpu,
                 "fp16" if device.type == "cuda" else "fp32 (fp16 needs CUDA)"),
    }
    header = ["body", "entry point", "precision", "updates", "train words/s", "final loss", "inf/nan logged",
              "train peak MiB", "eval-lm tokens/s", "eval-lm ppl", "eval peak MiB", "cuDNN weight-copy warnings",
              "wall s"]
    print(f"fairseq-train end to end on {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}),"
          f" sizes '{args.size}', {args.updates} updates, corpus {args.data}, torch {torch.__version__}")
    print("| " + " | ".join(header) + " |")
    print("|---|---|---|" + "---:|" * (len(header) - 3), flush=True)
    rows = []
    for body in args.bodies.split(","):
        folder, train_flags, eval_flags = body_flags(body, SIZES[args.size][body])
        data = Path(args.data) / folder
        for name in args.precisions.split(","):
            entry, flags, runs_as = precisions[name]
            save = work / f"{body}_{name}"
            shutil.rmtree(save, ignore_errors=True)  # (our fairseq-train refuses to write over another run's files)
            argv = [str(a) for a in [data, *common, *flags, *train_flags, "--save-dir", save]]
            row = {"body": body, "entry": entry, "precision": runs_as, "argv": " ".join(argv)}
            t0 = time.perf_counter()
            with observed(device) as (records, caught):
                try:
                    run_train(entry, argv)
                except (Exception, SystemExit) as e:  # noqa: B902  (fairseq exits on some errors: record, go on)
                    row["error"] = failure(e)
            row.update(train_summary(records), train_peak_mib=peak_mib(device),
                       train_wall_s=time.perf_counter() - t0)
            messages = [str(w.message) for w in caught]
            row["cudnn_copy_warnings"] = sum(CUDNN_COPY in m for m in messages)
            # the distinct warnings, hydra's deprecation notices (every run has them) last
            row["warnings"] = sorted({m.strip()[:200] for m in messages}, key=lambda m: ("Hydra" in m, m))[:8]
            checkpoint = save / "checkpoint_last.pt"
            if eval_flags is not None and checkpoint.exists():
                t1 = time.perf_counter()
                with observed(device) as (records, _):
                    try:
                        eval_argv = [data, "--user-dir", USER_DIR, "--path", checkpoint, "--gen-subset", "test",
                                     "--num-workers", "0", *eval_flags, *eval_precision]
                        result = run_eval([str(a) for a in eval_argv])
                        speed = [_SPEED.search(m) for _, m in records.records if _SPEED.search(m)]
                        row.update(eval_ppl=float(result["perplexity"]), eval_tokens=int(speed[-1][1].replace(",", "")),
                                   eval_tok_s=float(speed[-1][3]))
                    except (Exception, SystemExit) as e:  # noqa: B902
                        row["eval_error"] = failure(e)
                row.update(eval_peak_mib=peak_mib(device), eval_wall_s=time.perf_counter() - t1)
            rows.append(row)
            status = "" if "error" not in row and "eval_error" not in row else " (failed: see JSON)"
            print("| " + " | ".join([
                body, entry, runs_as + status, str(row.get("updates", 0)), optional(row.get("words_per_s"), ",.0f"),
                optional(row.get("loss"), ".3f"), str(row.get("nonfinite_loss", "n/a")),
                optional(row.get("train_peak_mib"), ",.0f"), optional(row.get("eval_tok_s"), ",.0f"),
                optional(row.get("eval_ppl"), ",.1f"), optional(row.get("eval_peak_mib"), ",.0f"),
                str(row["cudnn_copy_warnings"]), f"{row['train_wall_s'] + row.get('eval_wall_s', 0):.0f}"]) + " |",
                flush=True)
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"args": vars(args), "torch": torch.__version__, "rows": rows},
                                                  indent=1))
    failed = [f"{r['body']} {r['precision']}" for r in rows if "error" in r or "eval_error" in r]
    if failed:
        sys.exit(f"failed runs: {', '.join(failed)} (errors in {args.json})")


if __name__ == "__main__":
    main()
