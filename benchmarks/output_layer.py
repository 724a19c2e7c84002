#!/usr/bin/env python
"""Output layer + loss, forward and backward: ours beside fairseq's built-in adaptive softmax (+ adaptive_loss),
torch.nn.AdaptiveLogSoftmaxWithLoss and a full softmax (ours through the engine, and F.cross_entropy on materialised
logits), tied to an adaptive input where the implementation allows; then the label-smoothed loss of translation
(epsilon 0.1): ours, our earlier materialised form, and fairseq's label_smoothed_cross_entropy over a full softmax.
The full softmax also runs through PyTorch's own fused loss, torch.nn.functional.linear_cross_entropy (torch >= 2.13),
on its reference path and its chunked path (LinearCrossEntropyOptions()), where the installed torch has it.
Median of --repeat timed runs after --warmup, and the peak memory of a step above what the inputs and weights hold
(CUDA: the allocator's peak; CPU: the resident-set growth of one step in a fresh process, Linux).

  python benchmarks/output_layer.py                     # CPU defaults: V=50,000, d=256, cutoffs 5000,20000
  python benchmarks/output_layer.py --device cuda --vocab 267744 --dim 1024 --cutoff 20000,60000 --tokens 8192
  python benchmarks/output_layer.py --vocab 32000 --dim 512 --cutoff 8000,24000 --tokens 8192 --impls label-smoothed

Prints a markdown table and writes --json (default benchmarks/results/output_layer.json).
"""

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.modules import AdaptiveInput as FairseqAdaptiveInput
from fairseq.modules import AdaptiveSoftmax as FairseqAdaptiveSoftmax

from fairseq_adaptive.modules import AdaptiveInput, AdaptiveSoftmax
from fairseq_adaptive.modules.linear_cross_entropy import linear_cross_entropy
from fairseq_adaptive.modules.triton_support import runs_on

from common import optional, print_table, time_step, without_triton, write_json, zipf_targets  # same folder


def fairseq_adaptive_loss(sm, x, target):
    logits, targets = sm(x, target)
    return sum(F.cross_entropy(o, t, reduction="sum") for o, t in zip(logits, targets) if o is not None)


def ours_without_triton(module, x, target):
    with without_triton():
        return module(x, target)


def old_label_smoothed(sm, x, target, epsilon):
    """Our label-smoothed loss before the engine (for comparison): every tail cluster's logits materialised for
    every row, reduced to the smoothing sums by autograd-tracked PyTorch ops."""
    keep = target != -1
    head_logp = F.log_softmax(sm.head(x).float(), dim=-1)
    cluster = sm.cluster_of(target)
    head_target = torch.where(cluster == 0, target, sm.cutoff[0] + cluster - 1)
    nll = -head_logp.gather(1, head_target.unsqueeze(1)).squeeze(1)
    smooth = -head_logp[:, : sm.cutoff[0]].sum(-1)
    for i in range(len(sm.tail)):
        start, end = sm.cutoff[i], sm.cutoff[i + 1]
        z = sm.tail_logits(i, x).float()
        lse = torch.logsumexp(z, dim=-1)
        size = end - start
        smooth = smooth - (size * head_logp[:, sm.cutoff[0] + i] + z.sum(-1) - size * lse)
        word_logp = z.gather(1, (target - start).clamp(0, size - 1).unsqueeze(1)).squeeze(1) - lse
        nll = nll - torch.where(cluster == i + 1, word_logp, torch.zeros_like(word_logp))
    eps_i = epsilon / (sm.vocab_size - 1)
    return (1.0 - epsilon - eps_i) * nll[keep].sum() + eps_i * smooth[keep].sum()


def fairseq_label_smoothed(full, x, target, epsilon):
    """fairseq's label_smoothed_cross_entropy over a full softmax: V-wide fp32 log-probabilities."""
    lprobs = F.log_softmax(full(x).float(), dim=-1)
    return label_smoothed_nll_loss(lprobs, target, epsilon, ignore_index=-1)[0]


def build(args, dtype, device):
    cut = [int(c) for c in args.cutoff.split(",")]
    eps = 0.1
    impls = {}
    ours_in = AdaptiveInput(args.vocab, 1, args.dim, 4.0, args.dim, cut).to(device, dtype)
    ours = AdaptiveSoftmax(args.vocab, args.dim, cut, 0.0, 4.0, ours_in, tie_proj=True).to(device, dtype)
    impls["ours (tied)"] = (ours, lambda x, t: ours(x, t))
    if runs_on(torch.empty(0, device=device)):
        impls["ours, no Triton kernel (tied)"] = (ours, lambda x, t: ours_without_triton(ours, x, t))
    fs_in = FairseqAdaptiveInput(args.vocab, 1, args.dim, 4.0, args.dim, cut).to(device, dtype)
    fs = FairseqAdaptiveSoftmax(args.vocab, args.dim, cut, 0.0, 4.0, fs_in, tie_proj=True).to(device, dtype)
    impls["fairseq AdaptiveSoftmax (tied) + adaptive loss"] = (fs, lambda x, t: fairseq_adaptive_loss(fs, x, t))
    th = torch.nn.AdaptiveLogSoftmaxWithLoss(args.dim, args.vocab, cut, div_value=4.0).to(device, dtype)
    impls["torch.nn.AdaptiveLogSoftmaxWithLoss"] = (th, lambda x, t: th(x, t).loss * t.numel())
    impls["label-smoothed: ours (tied)"] = (ours, lambda x, t: ours.label_smoothed_loss(x, t, -1, eps)[0])
    impls["label-smoothed: ours, old materialised form (tied)"] = (ours, lambda x, t: old_label_smoothed(ours, x, t, eps))
    if not args.skip_full:
        full = torch.nn.Linear(args.dim, args.vocab, bias=False).to(device, dtype)
        keep = lambda t: torch.ones_like(t, dtype=torch.bool)  # noqa: E731
        impls["full softmax: ours (engine)"] = (full, lambda x, t: linear_cross_entropy(x, full.weight, t, keep(t))[0])
        impls["full softmax: F.cross_entropy on logits"] = (
            full, lambda x, t: F.cross_entropy(full(x).float(), t, reduction="sum"))
        if hasattr(F, "linear_cross_entropy"):
            impls["full softmax: torch linear_cross_entropy, reference"] = (
                full, lambda x, t: F.linear_cross_entropy(x, full.weight, t, reduction="sum"))
            chunked = torch.nn.LinearCrossEntropyOptions()
            impls["full softmax: torch linear_cross_entropy, chunked"] = (
                full, lambda x, t: F.linear_cross_entropy(x, full.weight, t, reduction="sum", options=chunked))
        impls["label-smoothed, full softmax: fairseq label_smoothed_cross_entropy"] = (
            full, lambda x, t: fairseq_label_smoothed(full, x, t, eps))
    chosen = [name for name in impls if not args.impls or any(k in name for k in args.impls.split(","))]
    return {name: impls[name] for name in chosen}


def measure(fn, module, x, target, args, device):
    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        loss = fn(x, target)
        loss.backward()
        return float(loss.detach())

    ms, extra, losses = time_step(step, device, args.repeat, args.warmup)
    return ms, extra, losses[-1]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def probe(args) -> None:
    """In a fresh process: the peak resident set of one forward + backward of ``args.probe`` (after one warm-up step,
    gradients freed as in the timed runs) above what the process held before it (weights, inputs), from Linux's
    high-water mark reset through /proc/self/clear_refs."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtypes]
    impls = build(args, dtype, torch.device("cpu"))
    n = int(args.tokens)
    x = torch.randn(n, args.dim, dtype=dtype, requires_grad=True)
    target = zipf_targets(n, args.vocab, "cpu")
    module, fn = impls[args.probe]
    fn(x, target).backward()  # one warm-up step (lazy one-time allocations), then gradients freed as in measure()
    module.zero_grad(set_to_none=True)
    x.grad = None
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    except OSError:
        print("PEAK n/a")  # not Linux, or a kernel that refuses the reset
        return
    base = _status_kib("VmRSS")
    fn(x, target).backward()
    print(f"PEAK {(_status_kib('VmHWM') - base) / 1024:.1f}")


def cpu_peak_mib(args, name: str, dtype_name: str, tokens: int) -> Optional[float]:
    """:func:`probe` in a fresh process whose allocator returns large blocks to the system when freed (so the
    resident set follows what is live)."""
    cmd = [sys.executable, __file__, "--device", "cpu", "--probe", name, "--dtypes", dtype_name, "--tokens",
           str(tokens), f"--vocab={args.vocab}", f"--dim={args.dim}", f"--cutoff={args.cutoff}",
           f"--impls={name}"] + (["--skip-full"] if args.skip_full else [])
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    peak = out.rsplit("PEAK ", 1)[1].strip()
    return None if peak == "n/a" else float(peak)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--vocab", type=int, default=50000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--cutoff", default="5000,20000")
    parser.add_argument("--tokens", default="1024,4096", help="comma-separated token counts")
    parser.add_argument("--dtypes", help="comma-separated, of fp32,bf16,fp16 (default: fp32 on CPU, fp32,bf16 on CUDA)")
    parser.add_argument("--impls", help="comma-separated parts of row names: measure only the rows that contain one")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--skip-full", action="store_true", help="leave out the full softmax (slow on CPU)")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "output_layer.json"))
    parser.add_argument("--no-cpu-memory", action="store_true", help="on CPU, skip the peak-memory probes")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: one step of this implementation, print its peak
    args = parser.parse_args()
    if args.probe:
        return probe(args)
    device = torch.device(args.device)
    args.dtypes = args.dtypes or ("fp32,bf16" if device.type == "cuda" else "fp32")
    torch.manual_seed(0)
    rows = []
    for dtype_name in args.dtypes.split(","):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
        impls = build(args, dtype, device)
        for n in (int(t) for t in args.tokens.split(",")):
            x = torch.randn(n, args.dim, device=device, dtype=dtype, requires_grad=True)
            target = zipf_targets(n, args.vocab, device)
            for name, (module, fn) in impls.items():
                ms, extra, loss = measure(fn, module, x, target, args, device)
                if device.type == "cpu" and not args.no_cpu_memory:
                    extra = cpu_peak_mib(args, name, dtype_name, n)
                print(f"  {name}, {dtype_name}, {n} tokens: {ms:.1f} ms", file=sys.stderr, flush=True)
                rows.append({"impl": name, "dtype": dtype_name, "tokens": n, "ms": ms, "extra_peak_mib": extra,
                             "loss_per_token": loss / n})
    print(f"device: {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else platform.processor() or 'cpu'}),"
          f" torch {torch.__version__}, V={args.vocab}, d={args.dim}, cutoffs {args.cutoff}, median of {args.repeat}")
    print_table(["implementation", "dtype", "tokens", "fwd+bwd ms", "extra peak MiB", "loss/token"],
                [[r["impl"], r["dtype"], r["tokens"], f"{r['ms']:.2f}", optional(r["extra_peak_mib"], ",.0f"),
                  f"{r['loss_per_token']:.3f}"] for r in rows])
    write_json(args.json, args, rows)


if __name__ == "__main__":
    main()
