"""Triton kernels for :func:`linear_cross_entropy.cross_entropy_rows`: a row's logits are read twice (online
log-sum-exp, then ``softmax - onehot`` written in place in the logits' dtype), all arithmetic in fp32.

With many rows (the head: thousands per block) one program takes a whole row. With few, long rows (a rare-word
cluster of 200K classes has about 160 rows per block) one program per row would leave most of the GPU idle, so the
row is cut into spans: one kernel writes each span's max and sum of exponentials, a second merges them into the
row's log-sum-exp and writes its span's gradient (spans of 16K+ logits, re-read from cache).

It replaces five or six elementwise PyTorch passes over a ``rows x C`` block (cast, log-sum-exp, subtract, exp,
scatter, mask, cast back) by two reads and one write. Imported with the package; without Triton (or without CUDA) the PyTorch
code in ``linear_cross_entropy`` runs instead. ``TRITON_INTERPRET=1`` runs it on CPU tensors (the tests do).
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from .triton_support import tl, triton


if triton is not None:

    @triton.jit
    def _online_lse(base, start, end, BLOCK: tl.constexpr):
        """Max and sum of exp(z - max) of ``base[start:end]``: per-lane running values, merged at the end."""
        cols = tl.arange(0, BLOCK)
        run_max = tl.full([BLOCK], float("-inf"), tl.float32)
        run_sum = tl.zeros([BLOCK], tl.float32)
        for offset in range(start, end, BLOCK):
            z = tl.load(base + offset + cols, mask=offset + cols < end, other=float("-inf")).to(tl.float32)
            new_max = tl.maximum(run_max, z)
            # lanes still at -inf hold no mass; avoid exp(-inf - -inf)
            safe = tl.where(new_max == float("-inf"), 0.0, new_max)
            run_sum = run_sum * tl.exp(run_max - safe) + tl.exp(z - safe)
            run_max = new_max
        span_max = tl.max(run_max, axis=0)
        safe_max = tl.where(span_max == float("-inf"), 0.0, span_max)
        return span_max, tl.sum(run_sum * tl.exp(run_max - safe_max), axis=0)

    @triton.jit
    def _write_grad(base, start, end, target, lse, coef, BLOCK: tl.constexpr):
        """``base[start:end] = coef * (softmax - onehot(target))``, in place, in the logits' dtype (``coef``: the row's
        weight times the gradient scale)."""
        cols = tl.arange(0, BLOCK)
        for offset in range(start, end, BLOCK):
            mask = offset + cols < end
            z = tl.load(base + offset + cols, mask=mask, other=0.0).to(tl.float32)
            g = tl.exp(z - lse) - tl.where(offset + cols == target, 1.0, 0.0)
            tl.store(base + offset + cols, (g * coef).to(base.dtype.element_ty), mask=mask)

    @triton.jit
    def _cross_entropy_rows_kernel(
        logits_ptr, stride, target_ptr, row_weight_ptr, nll_ptr, num_classes, scale,
        GRAD: tl.constexpr, BLOCK: tl.constexpr,
    ):
        """One program per whole row."""
        row = tl.program_id(0).to(tl.int64)
        base = logits_ptr + row * stride
        row_max, total = _online_lse(base, 0, num_classes, BLOCK)
        lse = row_max + tl.log(total)
        target = tl.load(target_ptr + row)
        tl.store(nll_ptr + row, lse - tl.load(base + target).to(tl.float32))
        if GRAD:
            coef = tl.load(row_weight_ptr + row).to(tl.float32) * scale
            _write_grad(base, 0, num_classes, target, lse, coef, BLOCK)

    @triton.jit
    def _span_lse_kernel(
        logits_ptr, stride, target_ptr, part_ptr, nll_ptr, num_classes, span, splits, BLOCK: tl.constexpr
    ):
        """Program (row, s): max and sum of exponentials of the row's span s, into ``part[row, s, 0:2]``; span 0
        also copies the target's logit into ``nll[row]`` (the second kernel overwrites logits, so it is read here)."""
        row = tl.program_id(0).to(tl.int64)
        split = tl.program_id(1)
        base = logits_ptr + row * stride
        start = split * span
        span_max, total = _online_lse(base, start, tl.minimum(start + span, num_classes), BLOCK)
        tl.store(part_ptr + (row * splits + split) * 2, span_max)
        tl.store(part_ptr + (row * splits + split) * 2 + 1, total)
        if split == 0:
            tl.store(nll_ptr + row, tl.load(base + tl.load(target_ptr + row)).to(tl.float32))

    @triton.jit
    def _span_finish_kernel(
        logits_ptr, stride, target_ptr, row_weight_ptr, part_ptr, nll_ptr, num_classes, span, splits, scale,
        GRAD: tl.constexpr, BLOCK: tl.constexpr, SPLITS: tl.constexpr,
    ):
        """Program (row, s): the row's log-sum-exp from its spans' parts; span 0 turns ``nll[row]`` (the target's
        logit) into the NLL, every span (with GRAD) writes its part of the gradient."""
        row = tl.program_id(0).to(tl.int64)
        split = tl.program_id(1)
        base = logits_ptr + row * stride
        parts = part_ptr + (row * splits + tl.arange(0, SPLITS)) * 2
        valid = tl.arange(0, SPLITS) < splits
        span_max = tl.load(parts, mask=valid, other=float("-inf"))
        span_sum = tl.load(parts + 1, mask=valid, other=0.0)
        row_max = tl.max(span_max, axis=0)
        lse = row_max + tl.log(tl.sum(span_sum * tl.exp(span_max - row_max), axis=0))
        if split == 0:
            tl.store(nll_ptr + row, lse - tl.load(nll_ptr + row))
        if GRAD:
            start = split * span
            coef = tl.load(row_weight_ptr + row).to(tl.float32) * scale
            target = tl.load(target_ptr + row)
            _write_grad(base, start, tl.minimum(start + span, num_classes), target, lse, coef, BLOCK)


MAX_BLOCK = 4096  # lanes per program (a power of two)
MIN_PROGRAMS = 1024  # fewer rows than this: rows are cut into spans, towards this many programs
MIN_SPAN_BLOCKS = 4  # a span holds at least this many blocks of lanes


def spans(rows: int, num_classes: int, block: int) -> Tuple[int, int]:
    """``(splits, span)``: how many spans a row is cut into, and their length (a multiple of ``block``)."""
    if rows >= MIN_PROGRAMS:
        return 1, num_classes
    splits = max(1, min(triton.cdiv(MIN_PROGRAMS, rows), num_classes // (MIN_SPAN_BLOCKS * block)))
    span = triton.cdiv(triton.cdiv(num_classes, splits), block) * block
    return triton.cdiv(num_classes, span), span


def cross_entropy_rows(
    logits: Tensor, target: Tensor, row_weight: Tensor, grad: bool, scale: float = 1.0
) -> Tuple[Tensor, Optional[Tensor]]:
    """:func:`linear_cross_entropy.cross_entropy_rows` without a smoothing term, with the same names and meanings
    (``row_weight``: each row's NLL weight, bool or float) -> (``r`` fp32 NLL, the logit gradient or None); the
    gradient is written into ``logits`` (or into a contiguous copy of it) and returned."""
    dense = logits if logits.stride(1) == 1 else logits.contiguous()
    rows, num_classes = dense.shape
    nll = torch.empty(rows, dtype=torch.float32, device=dense.device)
    if rows:
        block = min(MAX_BLOCK, triton.next_power_of_2(num_classes))
        warps = 8 if block >= 2048 else 4
        target, row_weight = target.contiguous(), row_weight.contiguous()
        splits, span = spans(rows, num_classes, block)
        if splits == 1:
            _cross_entropy_rows_kernel[(rows,)](
                dense, dense.stride(0), target, row_weight, nll, num_classes, scale, GRAD=grad, BLOCK=block,
                num_warps=warps,
            )
        else:
            part = torch.empty(rows, splits, 2, dtype=torch.float32, device=dense.device)
            _span_lse_kernel[(rows, splits)](
                dense, dense.stride(0), target, part, nll, num_classes, span, splits, BLOCK=block, num_warps=warps
            )
            _span_finish_kernel[(rows, splits if grad else 1)](
                dense, dense.stride(0), target, row_weight, part, nll, num_classes, span, splits, scale,
                GRAD=grad, BLOCK=block, SPLITS=triton.next_power_of_2(splits), num_warps=warps,
            )
    return nll, (dense if grad else None)
