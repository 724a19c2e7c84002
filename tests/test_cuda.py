"""On a CUDA GPU (skipped elsewhere): the Triton kernels and the mixed-precision GEMM against the PyTorch code, at
sizes where the kernels cut rows into spans and take whole rows (CPU runs cover the same code through Triton's
interpreter: test_linear_cross_entropy.py, test_triton_norm_act.py); Transformer-XL's attention in bf16 and fp16
against fp32; the LSTM's weight drop through cuDNN; the id check without a host synchronisation."""

import copy
import subprocess
import sys
import warnings
from collections import Counter

import pytest
import torch

from fairseq_adaptive.modules import linear_cross_entropy as lce
from fairseq_adaptive.modules import triton_support
from fairseq_adaptive.modules.adaptive_input import AdaptiveInput
from fairseq_adaptive.modules.adaptive_softmax import AdaptiveSoftmax
from fairseq_adaptive.modules.lstm import LSTMStack
from fairseq_adaptive.modules.transformer_xl import TransformerXL, next_memory
from fairseq_adaptive.modules.triton_norm_act import norm_act
from fairseq_adaptive.modules.vocab_layers import check_ids

from .helpers import ROOT

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


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want).norm() / want.norm().clamp_min(1e-12))


@pytest.mark.parametrize("head_dim", [16, 41])  # 41: Transformer-XL base's heads, a width no fused SDPA kernel takes
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_txl_attention_in_half_precision_follows_fp32(dtype, head_dim):
    """Three segments carrying the memory (it fills up to mem_len), distances clamped (clamp_len) and every query
    seeing mem_len keys (same_length: rows of the -inf mask in SDPA's additive bias), forward and backward, in bf16
    or fp16 (fairseq's --bf16 / --fp16 cast the model) against the same weights in fp32."""
    torch.manual_seed(0)
    want_model = TransformerXL(dim=64, layers=2, heads=4, head_dim=head_dim, ffn_dim=128, clamp_len=6,
                               same_length=True, mem_len=8).to(cuda)
    got_model = copy.deepcopy(want_model).to(dtype)
    segments = [torch.randn(3, 5, 64, device=cuda) for _ in range(3)]
    probes = [torch.randn(3, 5, 64, device=cuda) for _ in range(3)]  # a loss whose gradient reaches every weight

    def run(model, run_dtype):
        memory, outs = None, []
        for x in segments:
            h, inputs = model(x.to(run_dtype), memory)
            outs.append(h)
            memory = next_memory(memory, inputs, 8)
        assert memory[0].size(1) == 8
        sum((h.float() * probe).mean() for h, probe in zip(outs, probes)).backward()
        return torch.cat(outs, 1).detach().float(), {n: p.grad.float() for n, p in model.named_parameters()}

    want, want_grads = run(want_model, torch.float32)
    got, got_grads = run(got_model, dtype)
    assert torch.isfinite(got).all() and all(torch.isfinite(g).all() for g in got_grads.values())
    # relative to the norm; on CPU, bf16 / fp16 give 5e-3 / 6e-4 (outputs), 0.02 / 0.006 (all gradients together)
    # and at most 0.05 for one parameter's gradient (the small ones: v, W_R)
    tol = {torch.bfloat16: (2e-2, 8e-2), torch.float16: (3e-3, 2e-2)}[dtype]
    assert relative_error(got, want) < tol[0]
    flat = [torch.cat([g[n].flatten() for n in sorted(g)]) for g in (got_grads, want_grads)]
    assert relative_error(*flat) < tol[1]
    worst = max(got_grads, key=lambda n: relative_error(got_grads[n], want_grads[n]))
    assert relative_error(got_grads[worst], want_grads[worst]) < 0.15, worst


def test_lstm_weight_drop_runs_through_cudnn_without_copying_weights(monkeypatch):
    """AWD-LSTM's weight drop hands the fused kernel a dropped copy of each layer's hidden-to-hidden matrix: cuDNN
    must take the weights as given (its "not part of single contiguous chunk of memory" warning means it copied
    every weight of the layer into a buffer of its own, on every call), nothing asks for flatten_parameters (what a
    weight drop that rewrites module attributes does each pass), and the operators of a forward and backward pass
    do not grow with the length of the sequence (one fused call per layer: no loop over steps, no per-step copy)."""
    torch.manual_seed(0)
    stack = LSTMStack(32, 48, 32, layers=3, weight_drop=0.5, input_dropout=0.2, hidden_dropout=0.2,
                      output_dropout=0.2).to(cuda)
    flattened = []
    flatten = torch.nn.LSTM.flatten_parameters
    monkeypatch.setattr(torch.nn.LSTM, "flatten_parameters", lambda self: (flattened.append(self), flatten(self)))

    def operators(length: int, training: bool = True) -> Counter:
        stack.train(training)
        x = torch.randn(4, length, 32, device=cuda, requires_grad=True)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            out, _, _ = stack(x)
            out.float().pow(2).sum().backward()
            torch.cuda.synchronize()
        return Counter(e.name for e in prof.events() if e.name.startswith("aten::"))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        operators(8)  # warm-up: one-time work (cuDNN plans, allocations) out of the counts
        short, long = operators(8), operators(64)
        operators(8, training=False)
    copies = [str(w.message) for w in caught if "contiguous chunk of memory" in str(w.message)]
    assert not copies, copies[0]
    assert not flattened
    assert short["aten::_cudnn_rnn"] == 3, short  # one fused call per layer
    assert short == long, sorted((short - long) + (long - short))


@pytest.mark.parametrize("ignore_index", [None, -100])
def test_id_check_does_not_synchronise_with_the_host(ignore_index):
    """check_ids runs on every batch: on CUDA it asserts on the device, so a host synchronisation (which
    set_sync_debug_mode("error") turns into an error) never stalls the pipeline."""
    ids = torch.randint(0, 1000, (64, 128), device=cuda)
    if ignore_index is not None:
        ids[0, :4] = ignore_index
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        check_ids(ids, 1000, "a token id", ignore_index)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()  # the ids were inside: the device-side assert did not fire


@pytest.mark.cli
def test_an_id_outside_the_dictionary_stops_the_run_on_the_gpu():
    """The asynchronous check is not a silent one: an id past the dictionary ends the process (a device-side assert
    poisons the CUDA context, hence a process of its own)."""
    code = ("import torch\n"
            "from fairseq_adaptive.modules.vocab_layers import check_ids\n"
            "check_ids(torch.tensor([5, 1000], device='cuda'), 1000, 'a token id')\n"
            "torch.cuda.synchronize()\n"
            "print('not stopped')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode != 0 and "not stopped" not in done.stdout, done.stderr[-2000:]
