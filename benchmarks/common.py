"""Helpers shared by the benchmark scripts: timing with warm-up (CUDA-synchronised), Zipfian targets, the PyTorch code
in place of the Triton kernels, markdown tables and JSON results."""

import contextlib
import json
import os
import statistics
import time
from pathlib import Path

import torch


def zipf_targets(n: int, vocab: int, device) -> torch.Tensor:
    """Targets with a Zipfian (1/rank) frequency profile, like a frequency-sorted word vocabulary."""
    weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    return torch.multinomial(weights, n, replacement=True).to(device)


@contextlib.contextmanager
def without_triton():
    """Inside: the PyTorch code in place of this package's Triton kernels (chosen in the forward pass)."""
    os.environ["FAIRSEQ_ADAPTIVE_NO_TRITON"] = "1"
    try:
        yield
    finally:
        del os.environ["FAIRSEQ_ADAPTIVE_NO_TRITON"]


def time_step(step, device, repeat: int, warmup: int):
    """Median milliseconds of ``step()`` over ``repeat`` runs after ``warmup``, the peak CUDA memory (MiB) above
    what was allocated before the timed runs (None on CPU), and the values ``step`` returned."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times, values = [], []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        values.append(step())
        sync()
        times.append(time.perf_counter() - t0)
    extra = (torch.cuda.max_memory_allocated() - base) / 2**20 if device.type == "cuda" else None
    return statistics.median(times) * 1000, extra, values


def print_table(header, rows) -> None:
    """A markdown table; the first column is left-aligned (names), the others right-aligned (numbers)."""
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")


def optional(value, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def write_json(path: str, args, rows) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"args": vars(args), "torch": torch.__version__, "rows": rows}, indent=1))
