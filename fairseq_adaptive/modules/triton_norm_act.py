"""LayerNorm followed by an activation (GELU, ReLU or SiLU) in one Triton kernel each way, for DeFINE's grouped layers.

PyTorch runs a grouped layer's normalisation and activation as separate passes (LayerNorm, then GELU: two reads and
two writes forward, more backward) and keeps both the LayerNorm input and its output for backward. Here the forward
reads the rows once and writes the activation once, keeping the input and one mean / reciprocal std per row; the
backward recomputes the normalised value and the activation's derivative from them (one read of the input and of the
incoming gradient, one write of ``grad_input``) and sums the affine weights' gradients per program, in fp32.

Rows are short in DeFINE (``out / groups`` features: 33 to 128 at the paper's sizes), so each program takes a tile of
several rows. All arithmetic is fp32 whatever the tensors' dtype. ``TRITON_INTERPRET=1`` runs the kernels on CPU
tensors (the tests compare them with PyTorch there); models call :func:`norm_act`, which takes the kernels for CUDA
tensors only.
"""

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .triton_support import runs_on, tl, triton, trusted

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "swish": F.silu}
ACTIVATION_CODES = {"gelu": 0, "relu": 1, "swish": 2}  # the kernels' numbering of the same functions
MAX_ROW = 16384  # longer rows (a one-group layer wider than this) take the PyTorch path
TILE_ELEMENTS = 4096  # elements per program tile: rows_per_tile * next_power_of_2(row length)
NUM_WARPS = 8
BACKWARD_PROGRAMS = 512  # at most this many backward programs, each summing the weight gradients of its tiles


def reference(x: Tensor, weight: Tensor, bias: Tensor, eps: float, activation: str) -> Tensor:
    """The PyTorch computation the kernels replace (the path for CPU tensors and very long rows)."""
    return ACTIVATIONS[activation](F.layer_norm(x, (x.shape[-1],), weight, bias, eps))


if triton is not None:

    @triton.jit
    def _activate(z, ACT: tl.constexpr):
        if ACT == 0:
            return 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
        elif ACT == 1:
            return tl.maximum(z, 0.0)
        else:
            return z / (1.0 + tl.exp(-z))

    @triton.jit
    def _activation_grad(z, ACT: tl.constexpr):
        if ACT == 0:  # d/dz of z * Phi(z) = Phi(z) + z * phi(z)
            return 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476)) + z * 0.3989422804014327 * tl.exp(-0.5 * z * z)
        elif ACT == 1:
            return tl.where(z > 0.0, 1.0, 0.0)
        else:
            s = 1.0 / (1.0 + tl.exp(-z))
            return s * (1.0 + z * (1.0 - s))

    @triton.jit
    def _norm_act_forward_kernel(
        x_ptr, w_ptr, b_ptr, out_ptr, mean_ptr, rstd_ptr, n_rows, d, eps,
        ACT: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr,
    ):
        rows = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        row_mask = rows < n_rows
        mask = row_mask[:, None] & (cols < d)[None, :]
        offsets = rows[:, None] * d + cols[None, :]
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=1) / d
        centred = tl.where(mask, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / d + eps)
        w = tl.load(w_ptr + cols, mask=cols < d, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=cols < d, other=0.0).to(tl.float32)
        z = centred * rstd[:, None] * w[None, :] + b[None, :]
        tl.store(out_ptr + offsets, _activate(z, ACT).to(out_ptr.dtype.element_ty), mask=mask)
        tl.store(mean_ptr + rows, mean, mask=row_mask)
        tl.store(rstd_ptr + rows, rstd, mask=row_mask)

    @triton.jit
    def _norm_act_backward_kernel(
        x_ptr, w_ptr, b_ptr, grad_out_ptr, grad_x_ptr, mean_ptr, rstd_ptr, grad_w_part_ptr, grad_b_part_ptr,
        n_rows, d, tiles_per_program, ACT: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr,
    ):
        program = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        col_mask = cols < d
        w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        grad_w = tl.zeros([BLOCK], tl.float32)
        grad_b = tl.zeros([BLOCK], tl.float32)
        for tile in range(0, tiles_per_program):
            rows = ((program * tiles_per_program + tile) * ROWS + tl.arange(0, ROWS)).to(tl.int64)
            row_mask = rows < n_rows
            mask = row_mask[:, None] & col_mask[None, :]
            offsets = rows[:, None] * d + cols[None, :]
            x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            mean = tl.load(mean_ptr + rows, mask=row_mask, other=0.0)
            rstd = tl.load(rstd_ptr + rows, mask=row_mask, other=0.0)
            x_hat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
            z = x_hat * w[None, :] + b[None, :]
            grad_out = tl.load(grad_out_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            grad_z = grad_out * _activation_grad(z, ACT)  # zero on masked lanes
            grad_w += tl.sum(grad_z * x_hat, axis=0)
            grad_b += tl.sum(grad_z, axis=0)
            grad_x_hat = grad_z * w[None, :]
            dot = tl.sum(grad_x_hat * x_hat, axis=1) / d
            total = tl.sum(grad_x_hat, axis=1) / d
            grad_x = (grad_x_hat - x_hat * dot[:, None] - total[:, None]) * rstd[:, None]
            tl.store(grad_x_ptr + offsets, grad_x.to(grad_x_ptr.dtype.element_ty), mask=mask)
        tl.store(grad_w_part_ptr + program * d + cols, grad_w, mask=col_mask)
        tl.store(grad_b_part_ptr + program * d + cols, grad_b, mask=col_mask)


def _tiling(d: int) -> Tuple[int, int]:
    """``(BLOCK, ROWS)``: a row padded to a power of two, as many rows per tile as fill TILE_ELEMENTS (every tile
    then holds at least TILE_ELEMENTS lanes, for NUM_WARPS warps)."""
    block = triton.next_power_of_2(d)
    return block, max(1, TILE_ELEMENTS // block)


class _NormAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float, activation: str) -> Tensor:
        d = x.shape[-1]
        x2 = x.reshape(-1, d).contiguous()
        n_rows = x2.shape[0]
        out = torch.empty_like(x2)
        mean = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        rstd = torch.empty_like(mean)
        block, rows = _tiling(d)
        code = ACTIVATION_CODES[activation]
        if n_rows:
            _norm_act_forward_kernel[(triton.cdiv(n_rows, rows),)](
                x2, weight, bias, out, mean, rstd, n_rows, d, eps, ACT=code, ROWS=rows, BLOCK=block, num_warps=NUM_WARPS
            )
        ctx.save_for_backward(x2, weight, bias, mean, rstd)
        ctx.code, ctx.shape = code, x.shape
        return out.view(x.shape)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x2, weight, bias, mean, rstd = ctx.saved_tensors
        n_rows, d = x2.shape
        grad_out = grad_out.reshape(n_rows, d).contiguous()
        grad_x = torch.empty_like(x2)
        block, rows = _tiling(d)
        tiles = triton.cdiv(n_rows, rows)
        # a few hundred programs, each summing its tiles' weight gradients in registers; the partial sums are added
        # by one small reduction afterwards
        tiles_per_program = max(1, triton.cdiv(tiles, BACKWARD_PROGRAMS))
        programs = max(1, triton.cdiv(tiles, tiles_per_program))
        grad_w_part = torch.zeros(programs, d, dtype=torch.float32, device=x2.device)
        grad_b_part = torch.zeros_like(grad_w_part)
        if n_rows:
            _norm_act_backward_kernel[(programs,)](
                x2, weight, bias, grad_out, grad_x, mean, rstd, grad_w_part, grad_b_part, n_rows, d, tiles_per_program,
                ACT=ctx.code, ROWS=rows, BLOCK=block, num_warps=NUM_WARPS,
            )
        grad_w = grad_w_part.sum(0).to(weight.dtype)
        grad_b = grad_b_part.sum(0).to(bias.dtype)
        return grad_x.view(ctx.shape), grad_w, grad_b, None, None


def fused_norm_act(x: Tensor, weight: Tensor, bias: Tensor, eps: float, activation: str) -> Tensor:
    """:func:`reference` through the kernels, whatever the device (CPU tensors need ``TRITON_INTERPRET=1``)."""
    return _NormAct.apply(x, weight, bias, eps, activation)


def norm_act(x: Tensor, weight: Tensor, bias: Tensor, eps: float, activation: str) -> Tensor:
    """``activation(layer_norm(x))`` over the last dimension with affine ``weight`` / ``bias`` (both of that length):
    the kernels for CUDA tensors when Triton is available, PyTorch otherwise."""
    if x.shape[-1] <= MAX_ROW and x.dtype != torch.float64 and runs_on(x) and trusted(
        f"norm_act[{activation}]", x.device, x.dtype, lambda: kernel_error(x.device, x.dtype, activation),
        tolerance=1e-4 if x.dtype == torch.float32 else 5e-2,
    ):
        return fused_norm_act(x, weight, bias, eps, activation)
    return reference(x, weight, bias, eps, activation)


def kernel_error(device: torch.device, dtype: torch.dtype, activation: str) -> float:
    """Largest difference between the kernels and :func:`reference` (output, and the gradients of input, weight and
    bias, each relative to its largest value when above 1) on a small random input, several rows a tile."""
    g = torch.Generator().manual_seed(0)
    x, weight, bias, grad_out = (torch.randn(*shape, generator=g).to(device, dtype) for shape in
                                 ((300, 48), (48,), (48,), (300, 48)))
    results = []
    for fn in (fused_norm_act, reference):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        out = fn(*leaves, 1e-5, activation)
        results.append([out, *torch.autograd.grad(out, leaves, grad_out)])
    return max(float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1)) for a, b in zip(*results))
