"""Summed cross-entropy of ``softmax(x W^T)`` with its gradients computed during the forward pass, a block of rows
at a time, so the ``N x C`` logit matrix never exists whole.

For a summed loss the gradient with respect to the logits of row ``i`` is ``softmax(z_i) - onehot(t_i)`` times the
(scalar) incoming gradient, so it can be formed as soon as the row's log-sum-exp is known: each block of rows is
multiplied out (one GEMM), reduced to its loss and turned into its logit gradient in place (one elementwise pass,
a Triton kernel on CUDA), then multiplied back into ``grad_x`` and ``grad_W`` (two GEMMs). Backward only scales the
stored gradients. This is the fused linear cross-entropy of Liger-Kernel (Hsu et al. 2024, arXiv 2410.10989) and
the blockwise idea of Cut Cross-Entropy (Wijmans et al. 2024, arXiv 2411.09009): three GEMMs in all (no recomputation),
extra memory ``block x C`` plus the gradients, losses and log-sum-exp in fp32 whatever the input dtype.
"""

import functools
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import triton_cross_entropy
from .triton_support import runs_on

# rows per block: as many as keep one block's logits at about this size in the dtype they are worked in (fp32 in
# the PyTorch code, the logits' own dtype in the in-place Triton kernel); at least one row
BLOCK_BYTES = 64 << 20


def uses_kernel(logits: Tensor) -> bool:
    """Whether :func:`cross_entropy_rows` runs the Triton kernel (in place, in the logits' dtype) for these logits."""
    return logits.dtype != torch.float64 and runs_on(logits)


def block_elements_for(x: Tensor) -> int:
    """Logits per block for inputs like ``x``: :data:`BLOCK_BYTES` over the bytes each logit takes while worked on.
    Fewer, larger blocks mean fewer passes of the fp32 ``grad_W`` sum; the bytes bound the extra memory."""
    working = x.element_size() if uses_kernel(x) else accumulation_dtype(x.dtype).itemsize
    return BLOCK_BYTES // working


def rows_per_block(num_rows: int, num_classes: int, block_elements: int) -> int:
    return max(1, min(num_rows, block_elements // max(num_classes, 1)))


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half types and fp32, fp64 kept (exact comparisons in tests)."""
    return torch.promote_types(dtype, torch.float32)


def gradient_scale(dtype: torch.dtype) -> float:
    """Factor on the logit gradients held in ``dtype`` (undone in backward): fp16's range ends at 6e-8, where the
    softmax of rare classes lives, and the fp16 loss scale is only known in backward; 2^10 keeps those
    probabilities representable while ``softmax - onehot`` (at most 1 in size) and its products stay far from
    fp16's 65,504. Other dtypes have fp32's range: 1."""
    return 1024.0 if dtype == torch.float16 else 1.0


def cross_entropy_rows(
    logits: Tensor, target: Tensor, keep: Tensor, grad: bool, scale: float = 1.0
) -> Tuple[Tensor, Optional[Tensor]]:
    """``logits: r x C`` (any float dtype), ``target: r`` (valid indices), ``keep: r`` bool -> (``r`` NLL in
    :func:`accumulation_dtype`, and with ``grad`` the logit gradient of the summed loss times ``scale``:
    ``scale * (softmax - onehot(target))`` for kept rows, 0 for the others, ``r x C`` in the logits' dtype).
    ``logits`` may be overwritten: the gradient can take its storage."""
    if uses_kernel(logits):
        return triton_cross_entropy.cross_entropy_rows(logits, target, keep, grad, scale)
    # log_softmax is one fused pass; the target's entry gives the NLL without a -log(p) underflow
    logp = torch.log_softmax(logits.to(accumulation_dtype(logits.dtype)), dim=1)
    nll = -logp.gather(1, target.unsqueeze(1)).squeeze(1)
    if not grad:
        return nll, None
    p = logp.exp_()
    p.scatter_add_(1, target.unsqueeze(1), torch.full_like(nll, -1.0).unsqueeze(1))
    p.mul_(keep.unsqueeze(1) * scale)
    return nll, p.to(logits.dtype)


_MIXED_ADDMM = {}  # device -> whether addmm with an fp32 result from half inputs works there


def mixed_addmm_works(device: torch.device) -> bool:
    """Whether ``torch.addmm(c, a, b, out_dtype=torch.float32, out=c)`` with half ``a``, ``b`` and fp32 ``c`` runs
    correctly on ``device`` (cuBLAS does; CPU builds lack the kernel), tried once per device on small tensors
    laid out as in :func:`accumulate_product`."""
    key = str(device)
    if key not in _MIXED_ADDMM:
        try:
            a = torch.arange(12, dtype=torch.bfloat16, device=device).view(4, 3) / 4
            b = torch.arange(8, dtype=torch.bfloat16, device=device).view(4, 2) / 2
            c = torch.ones(3, 2, dtype=torch.float32, device=device)
            torch.addmm(c, a.t(), b, out_dtype=torch.float32, out=c)
            _MIXED_ADDMM[key] = bool(torch.equal(c, a.t().float() @ b.float() + 1))
        except (RuntimeError, NotImplementedError, TypeError):
            _MIXED_ADDMM[key] = False
    return _MIXED_ADDMM[key]


def accumulate_product(acc: Tensor, a: Tensor, b: Tensor) -> None:
    """``acc += a @ b`` with ``acc`` in :func:`accumulation_dtype` of ``a``/``b`` (one dtype): one GEMM that adds into
    ``acc`` (fp32 accumulation inside, no half-precision partial product) where the device has it, else the product
    in the inputs' dtype (accumulated in fp32 inside the GEMM, rounded once) added in fp32."""
    if acc.dtype == a.dtype:
        acc.addmm_(a, b)
    elif mixed_addmm_works(acc.device):
        torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
    else:
        acc += a @ b


def _blocks(
    x: Tensor, weight: Tensor, target: Tensor, keep: Tensor, block: int, want_x: bool, want_w: bool, scale: float = 1.0
):
    """Per-row NLL over blocks of rows, and (if asked) the summed loss's gradients for ``x`` and ``weight``, both
    times ``scale``."""
    acc = accumulation_dtype(x.dtype)
    nll = torch.empty(x.size(0), dtype=acc, device=x.device)
    grad_x = torch.empty_like(x) if want_x else None
    grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if want_w else None
    for start in range(0, x.size(0), block):
        end = min(start + block, x.size(0))
        rows = x[start:end]
        nll[start:end], grad_logits = cross_entropy_rows(
            rows @ weight.t(), target[start:end], keep[start:end], grad=want_x or want_w, scale=scale
        )
        if want_x:
            torch.mm(grad_logits, weight, out=grad_x[start:end])
        if want_w:
            accumulate_product(grad_w, grad_logits.t(), rows)
    if grad_w is not None:
        # blocks were summed in fp32; keep the result in the weight's dtype until backward (half the memory)
        grad_w = grad_w.to(weight.dtype)
    return nll, grad_x, grad_w


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, target: Tensor, keep: Tensor, block: int):
        ctx.scale = gradient_scale(x.dtype)
        nll, grad_x, grad_w = _blocks(x, weight, target, keep, block, *ctx.needs_input_grad[:2], scale=ctx.scale)
        ctx.save_for_backward(grad_x, grad_w)
        ctx.mark_non_differentiable(nll)
        return nll.masked_fill(~keep, 0.0).sum(), nll

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_nll: Optional[Tensor]):
        # a half-precision tensor times an fp32 scalar (the loss scale under fp16, over the gradient scale):
        # computed in fp32, rounded once, in the tensor's dtype
        factor = grad_loss / ctx.scale
        grad_x, grad_w = (None if g is None else g * factor for g in ctx.saved_tensors)
        return grad_x, grad_w, None, None, None


def outside_autocast(fn):
    """For ``fn(x, weight, ...)`` whose products must see one dtype: under autocast (fairseq's ``--amp``) ``x`` and
    ``weight`` are cast to the autocast dtype, as autocast would for ``x @ W.T``, and ``fn`` runs with autocast off
    (its products write into preallocated buffers, and a custom backward runs without autocast anyway); the casts
    carry the gradients back to the inputs' own dtypes."""

    @functools.wraps(fn)
    def wrapper(x: Tensor, weight: Tensor, *args, **kwargs):
        device_type = x.device.type
        if not torch.is_autocast_enabled(device_type):
            return fn(x, weight, *args, **kwargs)
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return fn(x.to(dtype), weight.to(dtype), *args, **kwargs)

    return wrapper


@outside_autocast
def linear_cross_entropy(
    x: Tensor, weight: Tensor, target: Tensor, keep: Tensor, block_elements: Optional[int] = None
) -> Tuple[Tensor, Tensor]:
    """``x: N x d``, ``weight: C x d``, ``target: N`` (indices into C), ``keep: N`` bool ->
    (scalar ``sum_{kept i} -log softmax(x_i W^T)[t_i]``, ``N`` per-row NLL without gradient), both fp32 (fp64
    for fp64 inputs).

    The gradients are formed in the forward pass when autograd will need them; the result and the gradients
    equal those of ``F.cross_entropy(x @ W.T, t, reduction="sum")`` over the kept rows, up to float rounding."""
    if x.size(0) == 0:
        # keep both inputs in the graph (zero gradients): an empty cluster still takes part in the step
        empty = (x @ weight.t()).to(accumulation_dtype(x.dtype))
        return empty.sum(), empty.sum(1).detach()
    target = target.clamp(0, weight.size(0) - 1)
    block = rows_per_block(x.size(0), weight.size(0), block_elements or block_elements_for(x))
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(x, weight, target, keep, block)
    nll = _blocks(x, weight, target, keep, block, want_x=False, want_w=False)[0]
    return nll.masked_fill(~keep, 0.0).sum(), nll
