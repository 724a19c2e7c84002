"""Summed cross-entropy of ``softmax(x W^T)`` with its gradients computed during the forward pass, a block of rows
at a time, so the ``N x C`` logit matrix never exists whole.

For a summed loss the gradient with respect to the logits of row ``i`` is ``softmax(z_i) - onehot(t_i)`` times the
(scalar) incoming gradient, so it can be formed as soon as the row's log-sum-exp is known: each block of rows is
multiplied out (one GEMM), reduced to its loss and turned into its logit gradient in place (one elementwise pass,
a Triton kernel on CUDA), then multiplied back into ``grad_x`` and ``grad_W`` (two GEMMs). Backward only scales the
stored gradients. This is the fused linear cross-entropy of Liger-Kernel (Hsu et al. 2024, arXiv 2410.10989) and
the blockwise idea of Cut Cross-Entropy (Wijmans et al. 2024, arXiv 2411.09009): three GEMMs in all (no recomputation),
extra memory ``block x C`` plus the gradients, losses and log-sum-exp in fp32 whatever the input dtype.

Per-row weights, named the same in every function here and in the kernel (``triton_cross_entropy``):

- ``row_weight: N``: the weight of each row's NLL in the summed loss, bool (0 for a row that does not count, e.g. a
  padding target) or float (label smoothing's ``1 - eps - eps/(V-1)``, 0 on ignored rows);
- ``smooth_weight: N``: the weight of each row's label-smoothing term (``None``: no such term);
- ``class_weight: C``: the weight of each class in the smoothing term (``None``: ones).
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
        row_weight = torch.arange(rows, device=device) > 0
        ref_nll, _, ref_grad = cross_entropy_rows(logits.clone(), target, row_weight, True, allow_kernel=False)
        nll, grad = triton_cross_entropy.cross_entropy_rows(logits.clone(), target, row_weight, True)
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
    row_weight: Tensor,
    grad: bool,
    scale: float = 1.0,
    smooth_weight: Optional[Tensor] = None,
    class_weight: Optional[Tensor] = None,
    allow_kernel: bool = True,
) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """One block's loss terms and logit gradient: ``logits: r x C`` (any float dtype), ``target: r`` (valid indices),
    the ``r`` rows' weights (see the module docstring) -> (``r`` NLL ``lse - z[target]`` in
    :func:`accumulation_dtype`; with ``smooth_weight`` the summed smoothing term
    ``sum_i smooth_weight_i * sum_j c_j (lse_i - z_ij)`` (``c = class_weight``), else None; with ``grad`` the logit
    gradient of ``sum_i row_weight_i nll_i`` plus that term, times ``scale``:
    ``row_weight (softmax - onehot) + smooth_weight (sum(c) softmax - c)``, ``r x C`` in the logits' dtype).
    ``logits`` may be overwritten: the gradient can take its storage.

    Without a smoothing term the Triton kernel serves where :func:`uses_kernel` says so (and ``allow_kernel``: the
    kernel's self-check asks for this PyTorch code, its reference). The PyTorch code runs on every device: fp32 and
    fp64 logits are worked on in place (half ones in an fp32 copy): the target's logit and the smoothing sums are read
    first, then the row maximum is subtracted and the exponentials taken in place, so a block needs no second
    ``r x C`` buffer; ``lse = max + log(sum)``, and the gradient is the softmax times each row's weight."""
    if allow_kernel and smooth_weight is None and uses_kernel(logits):
        nll, g = triton_cross_entropy.cross_entropy_rows(logits, target, row_weight, grad, scale)
        return nll, None, g
    z = logits.to(accumulation_dtype(logits.dtype))
    index = target.unsqueeze(1)
    target_logit = z.gather(1, index).squeeze(1)
    c = None if class_weight is None else class_weight.to(z.dtype)
    total_c = z.size(1) if c is None else c.sum()
    weighted_z = None if smooth_weight is None else (z.sum(1) if c is None else z @ c)
    row_max = z.amax(1, keepdim=True)
    exp_sum = z.sub_(row_max).exp_().sum(1)
    lse = row_max.squeeze(1) + exp_sum.log()
    nll = lse - target_logit
    smoothing = None if smooth_weight is None else (smooth_weight.to(z.dtype) * (total_c * lse - weighted_z)).sum()
    if not grad:
        return nll, smoothing, None
    nll_coef = row_weight.to(z.dtype) * scale
    softmax_coef = nll_coef if smooth_weight is None else nll_coef + smooth_weight.to(z.dtype) * (total_c * scale)
    z.mul_((softmax_coef / exp_sum).unsqueeze(1))  # softmax times the row's weight
    if smooth_weight is not None:
        smooth_coef = smooth_weight.to(z.dtype).unsqueeze(1) * scale
        z.sub_(smooth_coef if c is None else smooth_coef * c.unsqueeze(0))
    z.scatter_add_(1, index, -nll_coef.unsqueeze(1))
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
class _FixedInputs:
    """The loss's inputs that take no gradient (per-row targets and weights, class weights), and how the tensors that
    do are laid out and cut into blocks."""

    target: Tensor  # N class indices (into the segments' classes, concatenated)
    row_weight: Tensor  # N weights of each row's NLL
    smooth_weight: Optional[Tensor]  # N weights of each row's smoothing term, or None
    class_weight: Optional[Tensor]  # C weights of the classes in the smoothing term (ones if None)
    block_rows: int  # rows per block
    segments: int  # how many (x, weight) pairs
    has_bias: bool = False  # whether the last tensor is a C-vector added to every row's logits


def _blockwise(fixed: _FixedInputs, xs, weights, needs_grad, scale: float = 1.0, bias: Optional[Tensor] = None):
    """Per-row NLL, the summed smoothing term (or None) and the total's gradients (times ``scale``) for each x, weight
    and the bias whose ``needs_grad`` entry is set (None for the others), over blocks of rows. The logits of a block
    are the segments' ``x_k W_k^T`` side by side (one product when there is one segment), plus ``bias`` when given."""
    acc = accumulation_dtype(xs[0].dtype)
    n = xs[0].size(0)
    nll = torch.empty(n, dtype=acc, device=xs[0].device)
    smoothing = None
    grad_xs = [torch.empty_like(x) if needs else None for x, needs in zip(xs, needs_grad[: fixed.segments])]
    weight_needs_grad = needs_grad[fixed.segments : fixed.segments + len(weights)]
    grad_bias = torch.zeros(bias.shape, dtype=acc, device=bias.device) if bias is not None and needs_grad[-1] else None
    # one block (short inputs) already in the accumulation dtype: each weight's gradient is one product, with no fp32
    # sum to zero-fill and add into
    weight_grad_in_one_product = fixed.block_rows >= n and xs[0].dtype == acc
    grad_ws = [torch.zeros(w.shape, dtype=acc, device=w.device) if needs and not weight_grad_in_one_product else None
               for w, needs in zip(weights, weight_needs_grad)]
    bounds = [0]
    for w in weights:
        bounds.append(bounds[-1] + w.size(0))
    for start in range(0, n, fixed.block_rows):
        end = min(start + fixed.block_rows, n)
        rows = [x[start:end] for x in xs]
        logits = rows[0] @ weights[0].t() if len(xs) == 1 else torch.cat([r @ w.t() for r, w in zip(rows, weights)], 1)
        if bias is not None:
            logits += bias
        nll[start:end], block_smoothing, grad_logits = cross_entropy_rows(
            logits, fixed.target[start:end], fixed.row_weight[start:end], grad=any(needs_grad), scale=scale,
            smooth_weight=None if fixed.smooth_weight is None else fixed.smooth_weight[start:end],
            class_weight=fixed.class_weight,
        )
        if block_smoothing is not None:
            smoothing = block_smoothing if smoothing is None else smoothing + block_smoothing
        if grad_bias is not None:
            grad_bias += grad_logits.sum(0, dtype=acc)
        for k, (r, w) in enumerate(zip(rows, weights)):
            g = grad_logits if len(xs) == 1 or grad_logits is None else grad_logits[:, bounds[k] : bounds[k + 1]]
            if grad_xs[k] is not None:
                torch.mm(g, w, out=grad_xs[k][start:end])
            if weight_needs_grad[k]:
                if weight_grad_in_one_product:
                    grad_ws[k] = g.t() @ r
                else:
                    accumulate_product(grad_ws[k], g.t(), r)
    # blocks were summed in fp32; keep the weights' gradients in their own dtype until backward (half the memory)
    grad_ws = [None if g is None else g.to(w.dtype) for g, w in zip(grad_ws, weights)]
    if bias is not None:
        grad_ws.append(None if grad_bias is None else grad_bias.to(bias.dtype))
    return nll, smoothing, grad_xs + grad_ws


def _summed_loss(fixed: _FixedInputs, nll: Tensor, smoothing: Optional[Tensor]) -> Tensor:
    total = (nll * fixed.row_weight.to(nll.dtype)).sum()
    return total if smoothing is None else total + smoothing


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fixed: _FixedInputs, *tensors: Tensor):
        ctx.scale = gradient_scale(tensors[0].dtype)
        xs, weights = tensors[: fixed.segments], tensors[fixed.segments :]
        bias = weights[-1] if fixed.has_bias else None
        weights = weights[:-1] if fixed.has_bias else weights
        nll, smoothing, grads = _blockwise(fixed, xs, weights, ctx.needs_input_grad[1:], scale=ctx.scale, bias=bias)
        ctx.save_for_backward(*grads)
        ctx.mark_non_differentiable(nll)
        return _summed_loss(fixed, nll, smoothing), nll

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
    row_weight: Tensor,
    smooth_weight: Optional[Tensor] = None,
    class_weight: Optional[Tensor] = None,
    block_elements: Optional[int] = None,
    bias: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """The one numeric route of every output-layer loss and score in this package.

    ``x: N x d``, ``weight: C x d`` (or sequences of them, segments whose logits ``x_k W_k^T`` stand side by side:
    a head whose words see a projection of ``x`` and whose cluster rows see ``x`` itself), ``target: N`` (indices
    into the C classes), the rows' ``row_weight`` and optional ``smooth_weight`` and ``class_weight`` (label
    smoothing; see the module docstring), optional ``bias: C`` added to every row's logits (Transformer-XL's per-word
    output bias) -> (scalar ``sum_i row_weight_i nll_i + sum_i smooth_weight_i sum_j c_j (lse_i - z_ij)``, the ``N``
    per-row NLL ``lse_i - z_i[t_i]`` of every row, whatever its weight, without gradient), both fp32 (fp64 for fp64
    inputs).

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
    block_rows = rows_per_block(xs[0].size(0), num_classes, block_elements or block_elements_for(xs[0]))
    fixed = _FixedInputs(target.clamp(0, num_classes - 1), row_weight, smooth_weight, class_weight, block_rows, len(xs),
                         bias is not None)
    tensors = (*xs, *weights) + (() if bias is None else (bias,))
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        total, nll = _LinearCrossEntropy.apply(fixed, *tensors)
    else:
        nll, smoothing, _ = _blockwise(fixed, xs, weights, [False] * len(tensors), bias=bias)
        total = _summed_loss(fixed, nll, smoothing)
    return total, nll


def label_smoothing_weights(scored: Tensor, epsilon: float, vocab_size: int) -> Tuple[Tensor, Tensor]:
    """fairseq's label smoothing (``label_smoothed_nll_loss``), ``(1 - eps - eps/(V-1)) nll + eps/(V-1) sum_w -log
    p(w)``, as the ``row_weight`` and ``smooth_weight`` of :func:`linear_cross_entropy` for the rows ``scored`` says
    (bool; 0 on the others)."""
    eps_i = epsilon / (vocab_size - 1)
    return scored * (1.0 - epsilon - eps_i), scored * eps_i
