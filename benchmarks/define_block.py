#!/usr/bin/env python
"""DeFINE block (Mehta et al. 2020) against a dense two-layer map of the same parameters (= the same multiply-adds
per token), and DeFINE's eval-mode cost with and without the inference table. Prints a markdown table and writes
JSON; timings are medians, never asserted anywhere.

Rows, for a batch of ``--tokens`` token ids over a plain ``V x n`` embedding:
- train step (forward + backward) of the embedding + DeFINE (the released unit: n -> m/2, N grouped layers up to k
  and down to m, output layer), dropout off;
- train step of the embedding + dense n -> h -> m (GELU between), h chosen so that its weights equal DeFINE's;
- eval forward of DeFINE computed token by token, and looked up in the V x m table (``cache=True``);
- building that table once (V tokens through the block).

  python benchmarks/define_block.py                          # CPU, small sizes
  python benchmarks/define_block.py --device cuda --vocab 267744 --n 128 --k 4096 --m 384 --tokens 8192 \
      --dtypes fp32,bf16                                     # the WikiText-103 block of the paper's Table 2
"""

import argparse
import contextlib
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from common import optional, print_table, time_step, without_triton, write_json  # same folder
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fairseq_adaptive.modules.define import DeFINE, DefineOptions  # noqa: E402
from fairseq_adaptive.modules.triton_support import runs_on  # noqa: E402


class DenseMap(nn.Module):
    """tokens -> V x n embedding -> n -> h -> m (GELU between): the dense reference of equal parameters."""

    def __init__(self, vocab: int, n: int, hidden: int, m: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, n, padding_idx=1)
        self.up = nn.Linear(n, hidden)
        self.down = nn.Linear(hidden, m)

    def forward(self, tokens):
        return self.down(F.gelu(self.up(self.embed(tokens))))


def train_step(module, tokens, pytorch_only=False):
    def step():
        module.zero_grad(set_to_none=True)
        with without_triton() if pytorch_only else contextlib.nullcontext():
            out = module(tokens)
        out.float().pow(2).mean().backward()

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--vocab", type=int, default=20000)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--m", type=int, default=256)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--groups", type=int, default=8, help="--define-max-groups (N=3: 4, 2, 1 whatever above 4)")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--dtypes", help="comma-separated, of fp32,bf16,fp16 (default: fp32 on CPU, fp32,bf16 on CUDA)")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "define_block.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    args.dtypes = args.dtypes or ("fp32,bf16" if device.type == "cuda" else "fp32")
    torch.manual_seed(0)
    tokens = torch.randint(2, args.vocab, (args.tokens,), device=device)
    rows = []
    for dtype_name in args.dtypes.split(","):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
        options = DefineOptions(expand_dim=args.k, n_layers=args.layers, max_groups=args.groups, dropout=0.0,
                                embed_dropout=0.0)
        define = DeFINE(nn.Embedding(args.vocab, args.n, padding_idx=1), args.n, args.m, options).to(device, dtype)
        hidden = max(1, round(define.block_parameters() / (args.n + args.m + 1)))
        dense = DenseMap(args.vocab, args.n, hidden, args.m).to(device, dtype)
        dense_params = sum(p.numel() for p in (*dense.up.parameters(), *dense.down.parameters()))
        cases = [("DeFINE train step", define.block_parameters(), train_step(define.train(), tokens)),
                 (f"dense n->{hidden}->m train step", dense_params, train_step(dense, tokens))]
        if runs_on(torch.empty(0, device=device)):
            cases.insert(1, ("DeFINE train step, no Triton kernel", define.block_parameters(),
                             train_step(define, tokens, pytorch_only=True)))
        for name, params, step in cases:
            ms, extra, _ = time_step(step, device, args.repeat, args.warmup)
            rows.append({"case": name, "dtype": dtype_name, "params": params, "ms": ms, "extra_peak_mib": extra})
        define.eval()
        with torch.no_grad():
            ms, extra, _ = time_step(lambda: define.compute(tokens), device, args.repeat, args.warmup)
            rows.append({"case": "DeFINE eval, computed", "dtype": dtype_name, "params": define.block_parameters(),
                         "ms": ms, "extra_peak_mib": extra})
            define.cache = True
            build_ms, _, _ = time_step(lambda: (define.clear_cache(), define.table()), device, 1, 0)
            ms, extra, _ = time_step(lambda: define(tokens), device, args.repeat, args.warmup)
            table_mib = define.table().numel() * define.table().element_size() / 2**20
            rows.append({"case": "DeFINE eval, table lookup", "dtype": dtype_name, "params": 0, "ms": ms,
                         "extra_peak_mib": extra, "table_mib": table_mib, "table_build_ms": build_ms})
        print(f"  {dtype_name} done", file=sys.stderr, flush=True)
    where = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {device} ({where}), torch {torch.__version__}, V={args.vocab}, n={args.n}, k={args.k}, "
          f"m={args.m}, N={args.layers}, max groups {args.groups}, {args.tokens} tokens, median of {args.repeat}")
    print_table(
        ["case", "dtype", "block params", "ms", "tokens/s", "extra peak MiB", "note"],
        [[r["case"], r["dtype"], f"{r['params']:,}", f"{r['ms']:.2f}", f"{args.tokens / r['ms'] * 1000:,.0f}",
          optional(r["extra_peak_mib"], ".0f"),
          f"table {r['table_mib']:.0f} MiB, built in {r['table_build_ms']:.0f} ms" if "table_mib" in r else ""]
         for r in rows],
    )
    write_json(args.json, args, rows)


if __name__ == "__main__":
    main()
