"""On a CUDA GPU (skipped elsewhere): the Triton kernels and the mixed-precision GEMM against the PyTorch code, at
sizes where the kernels cut rows into spans and take whole rows. CPU runs cover the same code through Triton's
interpreter (test_linear_cross_entropy.py, test_triton_norm_act.py)."""

import pytest
import torch

from fairseq_adaptive.modules import linear_cross_entropy as lce
from fairseq_adaptive.modules import triton_support
from fairseq_adaptive.modules.adaptive_input import AdaptiveInput
from fairseq_adaptive.modules.adaptive_softmax import AdaptiveSoftmax
from fairseq_adaptive.modules.triton_norm_act import norm_act

cuda = torch.device("cuda") if torch.cuda.is_available() else None
pytestmark = pytest.mark.cuda  # skipped by conftest.py without a capable GPU


def with_and_without_kernels(monkeypatch, run):
    got = run()
    monkeypatch.setenv("FAIRSEQ_ADAPTIVE_NO_TRITON", "1")
    want = run()
    monkeypatch.delenv("FAIRSEQ_ADAPTIVE_NO_TRITON")
    return got, want


@pytest.mark.parametrize("dtype,amp", [(torch.float32, False), (torch.bfloat16, False), (torch.float32, True)])
def test_adaptive_softmax_kernels_equal_pytorch(monkeypatch, dtype, amp):
    """Weights in fp32 or bf16, and fp32 weights under fp16 autocast (fairseq's --amp)."""
    torch.manual_seed(0)
    cut = [2000, 6000]
    emb = AdaptiveInput(30000, 1, 256, 4.0, 256, cut)
    layer = AdaptiveSoftmax(30000, 256, cut, 0.0, 4.0, emb, tie_proj=True).to(cuda, dtype)
    x = torch.randn(4096, 256, device=cuda, dtype=dtype)
    target = torch.randint(2, 30000, (4096,), device=cuda)

    def run():
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = layer(xi, target, ignore_index=1)
        loss.backward()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            scores = layer.target_log_prob(x, target)
        return [loss.detach(), xi.grad, scores] + [p.grad.clone() for p in layer.parameters()]

    got, want = with_and_without_kernels(monkeypatch, run)
    tol = 2e-2 if dtype == torch.bfloat16 or amp else 1e-4
    for a, b in zip(got, want):
        torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol)


def test_mixed_precision_gemm_accumulates_on_the_gpu():
    assert lce.mixed_addmm_works(cuda)
    a, b = torch.randn(512, 300, device=cuda).bfloat16(), torch.randn(512, 200, device=cuda).bfloat16()
    acc = torch.zeros(300, 200, device=cuda)
    lce.accumulate_product(acc, a.t(), b)
    torch.testing.assert_close(acc, a.t().float() @ b.float(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("activation", ["gelu", "relu", "swish"])
def test_norm_act_kernel_equals_pytorch(monkeypatch, activation):
    torch.manual_seed(0)
    x = torch.randn(64, 2048, 33, device=cuda, dtype=torch.bfloat16)
    w = torch.randn(33, device=cuda, dtype=torch.bfloat16)
    b = torch.randn(33, device=cuda, dtype=torch.bfloat16)
    grad = torch.randn_like(x)

    def run():
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
        out = norm_act(xs, ws, bs, 1e-5, activation)
        return [out.detach(), *torch.autograd.grad(out, (xs, ws, bs), grad)]

    got, want = with_and_without_kernels(monkeypatch, run)
    for a, r in zip(got, want):
        torch.testing.assert_close(a.float(), r.float(), rtol=3e-2, atol=3e-2 * max(1.0, r.float().abs().max().item()))
