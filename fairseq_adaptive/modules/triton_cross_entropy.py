"""Triton kernel for :func:`linear_cross_entropy.cross_entropy_rows`: one program per row reads the row's logits
twice (online log-sum-exp, then ``softmax - onehot`` written in place in the logits' dtype), all arithmetic in fp32.

It replaces five or six elementwise PyTorch passes over a ``rows x C`` block (cast, log-sum-exp, subtract, exp,
scatter, mask, cast back) by two reads and one write. Imported lazily; without Triton (or without CUDA) the PyTorch
code in ``linear_cross_entropy`` runs instead. ``TRITON_INTERPRET=1`` runs it on CPU tensors (the tests do).
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from .triton_support import available, tl, triton  # noqa: F401  (available: this module's switch)


if triton is not None:

    @triton.jit
    def _cross_entropy_rows_kernel(
        logits_ptr, stride, target_ptr, keep_ptr, nll_ptr, num_classes, GRAD: tl.constexpr, BLOCK: tl.constexpr
    ):
        row = tl.program_id(0).to(tl.int64)
        base = logits_ptr + row * stride
        cols = tl.arange(0, BLOCK)
        # pass 1: per-lane running max and sum of exp, merged at the end (one log-sum-exp per row)
        run_max = tl.full([BLOCK], float("-inf"), tl.float32)
        run_sum = tl.zeros([BLOCK], tl.float32)
        for start in range(0, num_classes, BLOCK):
            z = tl.load(base + start + cols, mask=start + cols < num_classes, other=float("-inf")).to(tl.float32)
            new_max = tl.maximum(run_max, z)
            # lanes still at -inf hold no mass; avoid exp(-inf - -inf)
            safe = tl.where(new_max == float("-inf"), 0.0, new_max)
            run_sum = run_sum * tl.exp(run_max - safe) + tl.exp(z - safe)
            run_max = new_max
        row_max = tl.max(run_max, axis=0)
        lse = row_max + tl.log(tl.sum(run_sum * tl.exp(run_max - row_max), axis=0))
        target = tl.load(target_ptr + row)
        target_logit = tl.load(base + target).to(tl.float32)
        tl.store(nll_ptr + row, lse - target_logit)
        if GRAD:
            weight = tl.load(keep_ptr + row).to(tl.float32)
            for start in range(0, num_classes, BLOCK):
                mask = start + cols < num_classes
                z = tl.load(base + start + cols, mask=mask, other=0.0).to(tl.float32)
                g = tl.exp(z - lse) - tl.where(start + cols == target, 1.0, 0.0)
                tl.store(base + start + cols, (g * weight).to(logits_ptr.dtype.element_ty), mask=mask)


def cross_entropy_rows(logits: Tensor, target: Tensor, keep: Tensor, grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """Same contract as :func:`linear_cross_entropy.cross_entropy_rows`; the gradient is written into ``logits``
    (or into a contiguous copy of it) and returned."""
    dense = logits if logits.stride(1) == 1 else logits.contiguous()
    rows, num_classes = dense.shape
    nll = torch.empty(rows, dtype=torch.float32, device=dense.device)
    if rows:
        block = min(4096, triton.next_power_of_2(num_classes))
        _cross_entropy_rows_kernel[(rows,)](
            dense, dense.stride(0), target.contiguous(), keep.contiguous(), nll, num_classes,
            GRAD=grad, BLOCK=block, num_warps=8 if block >= 2048 else 4,
        )
    return nll, (dense if grad else None)
