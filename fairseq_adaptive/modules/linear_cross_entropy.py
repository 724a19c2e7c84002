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
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import triton_cross_entropy
from .triton_support import runs_on, trusted

# rows per block: as many as keep one block's logits at about this size in the dtype they are worked in (fp32 in
# the PyTorch code, the logits' own dtype in the in-place Triton kernel); at least one row
BLOCK_BYTES = 64 << 20


def uses_kernel(logits: Tensor) -> bool:
    """Whether :func:`cross_entropy_rows` runs the Triton kernel (in place, in the logits' dtype) for these logits: the
    one place that decides. The kernel must also have passed its self-check on the device, for the dtype."""
    return (
        logits.dtype != torch.float64
        and runs_on(logits)
        and trusted("cross_entropy_rows", logits.device, logits.dtype, lambda: kernel_error(logits.device, logits.dtype),
                    tolerance=1e-4 if logits.dtype == torch.float32 else 2e-2)
    )


def kernel_error(device: torch.device, dtype: torch.dtype) -> float:
    """Largest difference between the kernel and the PyTorch code (NLL and logit gradient) on small random blocks
    that take both kernel routes (a program per row; rows cut into spans)."""
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for rows, classes in ((64, 1000), (3, 40000)):
        logits = (3 * torch.randn(rows, classes, generator=g)).to(device, dtype)
        target = torch.randint(0, classes, (rows,), generator=g).to(device)
        keep = torch.arange(rows, device=device) > 0
        ref_nll, _, ref_grad = pytorch_rows(logits.clone(), target, keep, True)
        nll, grad = triton_cross_entropy.cross_entropy_rows(logits.clone(), target, keep, True)
        worst = max(worst, float((nll.float() - ref_nll.float()).abs().max()),
                    float((grad.float() - ref_grad.float()).abs().max()))
    return worst


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
    logits: Tensor,
    target: Tensor,
    keep: Tensor,
    grad: bool,
    scale: float = 1.0,
    smooth: Optional[Tensor] = None,
    class_weight: Optional[Tensor] = None,
) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """``logits: r x C`` (any float dtype), ``target: r`` (valid indices), ``keep: r`` (bool, or a float weight of
    each row's NLL) -> (``r`` NLL ``lse - z[target]`` in :func:`accumulation_dtype`; with ``smooth`` (``r`` weights) the
    summed smoothing term ``sum_i smooth_i * sum_j c_j (lse_i - z_ij)`` (``c = class_weight``, ones by default),
    else None; with ``grad`` the logit gradient of ``sum_i keep_i nll_i`` plus that term, times ``scale``:
    ``keep (softmax - onehot) + smooth (sum(c) softmax - c)``, ``r x C`` in the logits' dtype).
    ``logits`` may be overwritten: the gradient can take its storage."""
    if smooth is None and uses_kernel(logits):
        nll, g = triton_cross_entropy.cross_entropy_rows(logits, target, keep, grad, scale)
        return nll, None, g
    return pytorch_rows(logits, target, keep, grad, scale, smooth, class_weight)


def pytorch_rows(
    logits: Tensor,
    target: Tensor,
    keep: Tensor,
    grad: bool,
    scale: float = 1.0,
    smooth: Optional[Tensor] = None,
    class_weight: Optional[Tensor] = None,
) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """:func:`cross_entropy_rows` in PyTorch (every device; the smoothing term; the reference of the kernel).

    fp32 and fp64 logits are worked on in place (half ones in an fp32 copy): the target's logit and the smoothing
    sums are read first, then the row maximum is subtracted and the exponentials taken in place, so a block needs no
    second ``r x C`` buffer; ``lse = max + log(sum)``, and the gradient is the softmax times each row's weight."""
    z = logits.to(accumulation_dtype(logits.dtype))
    index = target.unsqueeze(1)
    target_logit = z.gather(1, index).squeeze(1)
    c = None if class_weight is None else class_weight.to(z.dtype)
    total_c = z.size(1) if c is None else c.sum()
    weighted_z = None if smooth is None else (z.sum(1) if c is None else z @ c)
    row_max = z.amax(1, keepdim=True)
    exp_sum = z.sub_(row_max).exp_().sum(1)
    lse = row_max.squeeze(1) + exp_sum.log()
    nll = lse - target_logit
    smoothing = None if smooth is None else (smooth.to(z.dtype) * (total_c * lse - weighted_z)).sum()
    if not grad:
        return nll, smoothing, None
    a = keep.to(z.dtype) * scale
    coef = a if smooth is None else a + smooth.to(z.dtype) * (total_c * scale)
    z.mul_((coef / exp_sum).unsqueeze(1))  # softmax times the row's weight
    if smooth is not None:
        s = smooth.to(z.dtype).unsqueeze(1) * scale
        z.sub_(s if c is None else s * c.unsqueeze(0))
    z.scatter_add_(1, index, -a.unsqueeze(1))
    return nll, smoothing, z.to(logits.dtype)


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


@dataclass(frozen=True)
class _Terms:
    """What the blocks compute besides the logits' inputs: per-row targets and weights (not differentiated)."""

    target: Tensor  # N class indices (into the segments' classes, concatenated)
    keep: Tensor  # N: bool or float weight of each row's NLL in the total
    smooth: Optional[Tensor]  # N weights of each row's smoothing term, or None
    class_weight: Optional[Tensor]  # C weights of the classes in the smoothing term (ones if None)
    block: int  # rows per block
    segments: int  # how many (x, weight) pairs
    bias: bool = False  # whether the last tensor is a C-vector added to every row's logits


def _blocks(terms: _Terms, xs, weights, wants, scale: float = 1.0, bias: Optional[Tensor] = None):
    """Per-row NLL, the summed smoothing term (or None) and, where ``wants`` says, the total's gradients for each x,
    weight and the bias (times ``scale``), over blocks of rows. The logits of a block are the segments' ``x_k W_k^T``
    side by side (one product when there is one segment), plus ``bias`` when given."""
    acc = accumulation_dtype(xs[0].dtype)
    n = xs[0].size(0)
    nll = torch.empty(n, dtype=acc, device=xs[0].device)
    smoothing = None
    grad_xs = [torch.empty_like(x) if want else None for x, want in zip(xs, wants[: terms.segments])]
    want_ws = wants[terms.segments : terms.segments + len(weights)]
    grad_bias = torch.zeros(bias.shape, dtype=acc, device=bias.device) if bias is not None and wants[-1] else None
    # one block (short inputs): each weight's gradient is one product, no fp32 sum to zero-fill and add into
    direct = terms.block >= n and xs[0].dtype == acc
    grad_ws = [torch.zeros(w.shape, dtype=acc, device=w.device) if want and not direct else None
               for w, want in zip(weights, want_ws)]
    bounds = [0]
    for w in weights:
        bounds.append(bounds[-1] + w.size(0))
    for start in range(0, n, terms.block):
        end = min(start + terms.block, n)
        rows = [x[start:end] for x in xs]
        logits = rows[0] @ weights[0].t() if len(xs) == 1 else torch.cat([r @ w.t() for r, w in zip(rows, weights)], 1)
        if bias is not None:
            logits += bias
        nll[start:end], block_smoothing, grad_logits = cross_entropy_rows(
            logits, terms.target[start:end], terms.keep[start:end], grad=any(wants), scale=scale,
            smooth=None if terms.smooth is None else terms.smooth[start:end], class_weight=terms.class_weight,
        )
        if block_smoothing is not None:
            smoothing = block_smoothing if smoothing is None else smoothing + block_smoothing
        if grad_bias is not None:
            grad_bias += grad_logits.sum(0, dtype=acc)
        for k, (r, w) in enumerate(zip(rows, weights)):
            g = grad_logits if len(xs) == 1 or grad_logits is None else grad_logits[:, bounds[k] : bounds[k + 1]]
            if grad_xs[k] is not None:
                torch.mm(g, w, out=grad_xs[k][start:end])
            if want_ws[k]:
                if direct:
                    grad_ws[k] = g.t() @ r
                else:
                    accumulate_product(grad_ws[k], g.t(), r)
    # blocks were summed in fp32; keep the weights' gradients in their own dtype until backward (half the memory)
    grad_ws = [None if g is None else g.to(w.dtype) for g, w in zip(grad_ws, weights)]
    if bias is not None:
        grad_ws.append(None if grad_bias is None else grad_bias.to(bias.dtype))
    return nll, smoothing, grad_xs + grad_ws


def _total(terms: _Terms, nll: Tensor, smoothing: Optional[Tensor]) -> Tensor:
    total = (nll * terms.keep.to(nll.dtype)).sum()
    return total if smoothing is None else total + smoothing


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, terms: _Terms, *tensors: Tensor):
        ctx.scale = gradient_scale(tensors[0].dtype)
        xs, weights = tensors[: terms.segments], tensors[terms.segments :]
        bias = weights[-1] if terms.bias else None
        weights = weights[:-1] if terms.bias else weights
        nll, smoothing, grads = _blocks(terms, xs, weights, ctx.needs_input_grad[1:], scale=ctx.scale, bias=bias)
        ctx.save_for_backward(*grads)
        ctx.mark_non_differentiable(nll)
        return _total(terms, nll, smoothing), nll

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_nll: Optional[Tensor]):
        # a half-precision tensor times an fp32 scalar (the loss scale under fp16, over the gradient scale):
        # computed in fp32, rounded once, in the tensor's dtype
        factor = grad_loss / ctx.scale
        return (None, *(None if g is None else g * factor for g in ctx.saved_tensors))


def outside_autocast(fn):
    """For ``fn(x, weight, ...)`` whose products must see one dtype (``x`` and ``weight`` tensors or sequences of
    them): under autocast (fairseq's ``--amp``) they are cast to the autocast dtype, as autocast would for
    ``x @ W.T``, and ``fn`` runs with autocast off (its products write into preallocated buffers, and a custom backward
    runs without autocast anyway); the casts carry the gradients back to the inputs' own dtypes."""

    def cast(t, dtype):
        return t.to(dtype) if isinstance(t, Tensor) else [u.to(dtype) for u in t]

    @functools.wraps(fn)
    def wrapper(x, weight, *args, **kwargs):
        device_type = (x if isinstance(x, Tensor) else x[0]).device.type
        if not torch.is_autocast_enabled(device_type):
            return fn(x, weight, *args, **kwargs)
        dtype = torch.get_autocast_dtype(device_type)
        if kwargs.get("bias") is not None:
            kwargs["bias"] = kwargs["bias"].to(dtype)
        with torch.autocast(device_type, enabled=False):
            return fn(cast(x, dtype), cast(weight, dtype), *args, **kwargs)

    return wrapper


@outside_autocast
def linear_cross_entropy(
    x: Union[Tensor, Sequence[Tensor]],
    weight: Union[Tensor, Sequence[Tensor]],
    target: Tensor,
    keep: Tensor,
    smooth: Optional[Tensor] = None,
    class_weight: Optional[Tensor] = None,
    block_elements: Optional[int] = None,
    bias: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """The one numeric route of every output-layer loss and score in this package.

    ``x: N x d``, ``weight: C x d`` (or sequences of them, segments whose logits ``x_k W_k^T`` stand side by side:
    a head whose words see a projection of ``x`` and whose cluster rows see ``x`` itself), ``target: N`` (indices
    into the C classes), ``keep: N`` (bool, or a float weight of each row's NLL), optional ``smooth: N`` weights of
    each row's smoothing term over ``class_weight``-weighted classes (label smoothing), optional ``bias: C`` added to
    every row's logits (Transformer-XL's per-word output bias) ->
    (scalar ``sum_i keep_i nll_i + sum_i smooth_i sum_j c_j (lse_i - z_ij)``, the ``N`` per-row NLL
    ``lse_i - z_i[t_i]`` of every row, kept or not, without gradient), both fp32 (fp64 for fp64 inputs).

    The gradients are formed in the forward pass when autograd will need them; the result and the gradients equal
    those of the materialised computation (``F.cross_entropy`` over ``x @ W.T``) up to float rounding."""
    xs = (x,) if isinstance(x, Tensor) else tuple(x)
    weights = (weight,) if isinstance(weight, Tensor) else tuple(weight)
    num_classes = sum(w.size(0) for w in weights)
    if xs[0].size(0) == 0:
        # keep every input in the graph (zero gradients): an empty cluster still takes part in the step
        empty = sum((r @ w.t()).sum() for r, w in zip(xs, weights))
        empty = (empty if bias is None else empty + bias.sum() * 0).to(accumulation_dtype(xs[0].dtype))
        return empty, empty.new_zeros(0)
    block = rows_per_block(xs[0].size(0), num_classes, block_elements or block_elements_for(xs[0]))
    terms = _Terms(target.clamp(0, num_classes - 1), keep, smooth, class_weight, block, len(xs), bias is not None)
    tensors = (*xs, *weights) + (() if bias is None else (bias,))
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        total, nll = _LinearCrossEntropy.apply(terms, *tensors)
    else:
        nll, smoothing, _ = _blocks(terms, xs, weights, [False] * len(tensors), bias=bias)
        total = _total(terms, nll, smoothing)
    return total, nll


def label_smoothing_weights(keep: Tensor, epsilon: float, vocab_size: int) -> Tuple[Tensor, Tensor]:
    """fairseq's label smoothing (``label_smoothed_nll_loss``), ``(1 - eps - eps/(V-1)) nll + eps/(V-1) sum_w -log
    p(w)``, as the per-row ``keep`` and ``smooth`` weights of :func:`linear_cross_entropy` (0 on ignored rows)."""
    eps_i = epsilon / (vocab_size - 1)
    return keep * (1.0 - epsilon - eps_i), keep * eps_i
