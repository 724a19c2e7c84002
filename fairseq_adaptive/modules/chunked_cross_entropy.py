"""Log-probability of a target under ``softmax(x W^T)`` without materialising the ``N x C`` logit matrix.

The classes are visited in chunks with an online log-sum-exp (the technique of Cut Cross-Entropy, arXiv 2411.09009,
and Liger-Kernel's fused linear cross-entropy); the backward pass recomputes each chunk's logits instead of storing
them. Peak extra memory is ``N x chunk`` instead of ``N x C``; the result equals the materialised computation up to
float rounding. Logits, log-sum-exp and the returned scores are fp32 whatever the input dtype.
"""

import torch
from torch import Tensor

from .linear_cross_entropy import outside_autocast


def _chunks(num_classes: int, chunk: int):
    for start in range(0, num_classes, chunk):
        yield start, min(start + chunk, num_classes)


def _target_in_chunk(target: Tensor, start: int, end: int):
    """Which targets fall in classes ``[start, end)``, and their index in the chunk (clamped for the others)."""
    return (target >= start) & (target < end), (target - start).clamp(0, end - start - 1)


class _ChunkedTargetLogProb(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, target: Tensor, chunk: int) -> Tensor:
        n = x.size(0)
        lse = torch.full((n,), float("-inf"), device=x.device, dtype=torch.float32)
        target_logit = torch.zeros(n, device=x.device, dtype=torch.float32)
        for start, end in _chunks(weight.size(0), chunk):
            logits = (x @ weight[start:end].t()).float()
            lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=1))
            inside, local = _target_in_chunk(target, start, end)
            target_logit += torch.where(inside, logits.gather(1, local.unsqueeze(1)).squeeze(1), 0.0)
        ctx.save_for_backward(x, weight, target, lse)
        ctx.chunk = chunk
        return target_logit - lse

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight, target, lse = ctx.saved_tensors
        grad = grad.float()
        grad_x = torch.zeros_like(x, dtype=torch.float32) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        for start, end in _chunks(weight.size(0), ctx.chunk):
            w = weight[start:end]
            logits = (x @ w.t()).float()
            # d(logit_t - lse)/d logits = onehot(t) - softmax
            g = torch.exp(logits - lse.unsqueeze(1)).mul_(-grad.unsqueeze(1))
            inside, local = _target_in_chunk(target, start, end)
            g.scatter_add_(1, local.unsqueeze(1), torch.where(inside, grad, 0.0).unsqueeze(1))
            if grad_x is not None:
                grad_x += g @ w.float()
            if grad_w is not None:
                grad_w[start:end] = g.t() @ x.float()
        return (
            None if grad_x is None else grad_x.to(x.dtype),
            None if grad_w is None else grad_w.to(weight.dtype),
            None,
            None,
        )


@outside_autocast
def chunked_target_log_prob(x: Tensor, weight: Tensor, target: Tensor, chunk: int = 8192) -> Tensor:
    """``x: N x d``, ``weight: C x d``, ``target: N`` (indices into C) -> ``N`` fp32 ``log softmax(x W^T)[target]``."""
    if x.size(0) == 0:
        # keep the weight in the graph (zero gradient): an empty cluster still takes part in the step
        return (x @ weight.t()).float().sum(1)
    return _ChunkedTargetLogProb.apply(x, weight, target, chunk)
