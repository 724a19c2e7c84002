"""The fused linear cross-entropy (gradients formed in the forward pass, block by block) against autograd through
a materialised ``F.cross_entropy``, and its Triton kernel (run by Triton's CPU interpreter) against the PyTorch code."""

import textwrap

import pytest
import torch
import torch.nn.functional as F

from fairseq_adaptive.modules.linear_cross_entropy import cross_entropy_rows, linear_cross_entropy

from .helpers import compile_for_h100, run_interpreted


def reference(x, w, t, keep):
    nll = F.cross_entropy(x @ w.t(), t, reduction="none")
    return nll.masked_fill(~keep, 0.0).sum(), nll


def problem(n=37, c=53, d=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(c, d, generator=g, dtype=dtype, requires_grad=True)
    t = torch.randint(0, c, (n,), generator=g)
    keep = torch.rand(n, generator=g) > 0.2
    return x, w, t, keep


@pytest.mark.parametrize("block_elements", [1, 3 * 53, 10**9])  # one row per block, three rows, all rows at once
def test_loss_and_gradients_equal_autograd(block_elements):
    x, w, t, keep = problem()
    assert not keep.all() and keep.any()
    ref, ref_nll = reference(x, w, t, keep)
    ref_grads = torch.autograd.grad(2.5 * ref, (x, w))  # a scale other than 1 reaches backward
    got, got_nll = linear_cross_entropy(x, w, t, keep, block_elements=block_elements)
    got_grads = torch.autograd.grad(2.5 * got, (x, w))
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(got_nll, ref_nll.detach())
    assert not got_nll.requires_grad
    for a, b in zip(got_grads, ref_grads):
        torch.testing.assert_close(a, b)
    assert got_grads[0][~keep].abs().max() == 0, "ignored rows must get no gradient"


@pytest.mark.parametrize("block_elements", [1, 3 * 53, 10**9])
def test_bias_equals_autograd(block_elements):
    """A per-class bias (Transformer-XL's output bias): loss and gradients of x, W and b as autograd gives them."""
    x, w, t, keep = problem()
    b = torch.randn(w.size(0), dtype=w.dtype, generator=torch.Generator().manual_seed(1), requires_grad=True)
    ref = (F.cross_entropy(x @ w.t() + b, t, reduction="none") * keep).sum()
    ref_grads = torch.autograd.grad(ref, (x, w, b))
    got, _ = linear_cross_entropy(x, w, t, keep, block_elements=block_elements, bias=b)
    for a, r in zip(torch.autograd.grad(got, (x, w, b)), ref_grads):
        torch.testing.assert_close(a, r)
    torch.testing.assert_close(got, ref)
    with torch.no_grad():  # the same numbers without autograd
        torch.testing.assert_close(linear_cross_entropy(x, w, t, keep, bias=b)[0], ref)


def test_bf16_within_rounding_of_fp32_and_accumulated_in_fp32():
    x, w, t, keep = problem(n=256, c=1000, d=32, dtype=torch.float32)
    ref, _ = reference(x, w, t, keep)
    ref_gx, ref_gw = torch.autograd.grad(ref, (x, w))
    xb = x.detach().bfloat16().requires_grad_()
    wb = w.detach().bfloat16().requires_grad_()
    got, nll = linear_cross_entropy(xb, wb, t, keep, block_elements=64 * 1000)
    got.backward()
    assert got.dtype == nll.dtype == torch.float32
    assert xb.grad.dtype == wb.grad.dtype == torch.bfloat16
    torch.testing.assert_close(got, ref, rtol=2e-2, atol=0)
    torch.testing.assert_close(xb.grad.float(), ref_gx, rtol=5e-2, atol=5e-2)
    torch.testing.assert_close(wb.grad.float(), ref_gw, rtol=5e-2, atol=5e-2)


def test_empty_input_keeps_the_weight_in_the_graph():
    x, w, t, keep = problem()
    loss, nll = linear_cross_entropy(x[:0], w, t[:0], keep[:0])
    loss.backward()
    assert loss.item() == 0 and nll.shape == (0,)
    assert w.grad is not None and torch.count_nonzero(w.grad) == 0


def test_without_autograd_no_gradients_are_formed():
    x, w, t, keep = problem()
    with torch.no_grad():
        loss, nll = linear_cross_entropy(x, w, t, keep, block_elements=100)
    ref, ref_nll = reference(x.detach(), w.detach(), t, keep)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(nll, ref_nll)


def test_rows_helper_gives_the_logit_gradient():
    x, w, t, keep = problem(dtype=torch.float32)
    logits = (x @ w.t()).detach()
    expected = (torch.softmax(logits, 1) - F.one_hot(t, logits.size(1))) * keep.unsqueeze(1)
    nll, smoothing, grad = cross_entropy_rows(logits.clone(), t, keep, grad=True)
    torch.testing.assert_close(grad, expected)
    assert smoothing is None and cross_entropy_rows(logits, t, keep, grad=False)[2] is None
    torch.testing.assert_close(nll, F.cross_entropy(x @ w.t(), t, reduction="none").detach())


KERNEL_CHECK = textwrap.dedent(
    """
    import itertools
    import torch
    import triton
    from fairseq_adaptive.modules import triton_cross_entropy as kernel
    from fairseq_adaptive.modules import linear_cross_entropy as lce
    from fairseq_adaptive.modules.triton_support import available
    assert available()
    torch.manual_seed(0)
    # lanes per block, blocks per span: whole rows with 4096 lanes, then rows cut into spans of 64-lane blocks (the
    # few-long-rows case, made small); classes: one partial block, several blocks of lanes
    settings, paths = ((4096, 4), (64, 1)), set()
    for setting, dtype, classes in itertools.product(settings, (torch.float32, torch.bfloat16), (5, 300, 5000)):
        kernel.MAX_BLOCK, kernel.MIN_SPAN_BLOCKS = setting
        paths.add(kernel.spans(6, classes, min(kernel.MAX_BLOCK, triton.next_power_of_2(classes)))[0] > 1)
        logits = (torch.randn(6, classes) * 4).to(dtype)
        logits[3, 1] = 60.0  # a dominant logit
        target = torch.randint(0, classes, (6,))
        keep = torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool)
        nll, ours = kernel.cross_entropy_rows(logits.clone(), target, keep, True)
        ref, _, theirs = lce.cross_entropy_rows(logits.clone(), target, keep, True)  # CPU tensors: the PyTorch code
        plain, none = kernel.cross_entropy_rows(logits.clone(), target, keep, False)
        tol = 1e-5 if dtype == torch.float32 else 8e-3
        torch.testing.assert_close(nll, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(plain, ref, rtol=1e-5, atol=1e-5)
        assert none is None and ours.dtype == theirs.dtype == dtype
        torch.testing.assert_close(ours.float(), theirs.float(), rtol=0, atol=tol)
        assert ours[2].abs().max() == 0
        scaled = kernel.cross_entropy_rows(logits.clone(), target, keep, True, 4.0)[1]
        torch.testing.assert_close(scaled.float(), 4 * theirs.float(), rtol=0, atol=4 * tol)
        strided = torch.stack([logits, logits], 2)[:, :, 0]  # the same values, column stride 2
        torch.testing.assert_close(kernel.cross_entropy_rows(strided, target, keep, False)[0], ref)
    assert paths == {False, True}  # both the whole-row kernel and the span kernels ran
    print("kernel ok")
    """
)


@pytest.mark.cli
def test_triton_kernel_equals_pytorch_rows():
    run_interpreted(KERNEL_CHECK)


LAYER_CHECK = textwrap.dedent(
    """
    import torch
    from fairseq_adaptive.modules import linear_cross_entropy as lce
    from fairseq_adaptive.modules import triton_cross_entropy as kernel
    from fairseq_adaptive.modules.adaptive_input import AdaptiveInput
    from fairseq_adaptive.modules.adaptive_softmax import AdaptiveSoftmax
    from tests.interpreted import same_with_kernels

    torch.manual_seed(0)
    cut = [40, 120]
    emb = AdaptiveInput(300, 1, 16, 2.0, 16, cut)
    layer = AdaptiveSoftmax(300, 16, cut, 0.0, 2.0, emb, tie_proj=True)
    x = torch.randn(2, 25, 16)
    target = torch.randint(0, 300, (2, 25))
    target[0, :3] = 1  # padding

    def run():
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        loss, per_cluster, counts = layer.loss(xi, target, ignore_index=1)
        loss.backward()
        with torch.no_grad():
            scores = layer.target_log_prob(x, target)
        return [loss.detach(), per_cluster, counts, xi.grad, scores] + [p.grad.clone() for p in layer.parameters()]

    def kernels_on():  # first run: CPU tensors take the PyTorch code; then the CUDA route, interpreted
        lce.uses_kernel = lambda logits: logits.dtype != torch.float64
        kernel.MAX_BLOCK, kernel.MIN_SPAN_BLOCKS = 16, 1  # short blocks of lanes: the rows are cut into spans
        lce.BLOCK_BYTES = 2 * 16 * 200  # blocks of about 16 rows of the tail of 180 classes, several per cluster

    same_with_kernels(run, kernels_on, rtol=1e-5, atol=1e-5)
    """
)


@pytest.mark.cli
def test_adaptive_softmax_through_the_kernel_equals_the_pytorch_path():
    """The training loss, its gradients and the scoring path of a whole layer, the kernels taking every block."""
    run_interpreted(LAYER_CHECK)


@pytest.mark.parametrize("dtype,grad", [("bf16", True), ("bf16", False), ("fp16", True), ("fp32", True)])
def test_triton_kernel_compiles_to_h100_machine_code(dtype, grad):
    pytest.importorskip("triton")
    from fairseq_adaptive.modules.triton_cross_entropy import _cross_entropy_rows_kernel

    signature = {"logits_ptr": f"*{dtype}", "stride": "i64", "target_ptr": "*i64", "row_weight_ptr": "*i1",
                 "nll_ptr": "*fp32", "num_classes": "i32", "scale": "fp32"}
    compile_for_h100(_cross_entropy_rows_kernel, signature, {"GRAD": grad, "BLOCK": 4096}, num_warps=8)


@pytest.mark.parametrize("dtype,grad", [("bf16", True), ("bf16", False), ("fp32", True)])
def test_span_kernels_compile_to_h100_machine_code(dtype, grad):
    pytest.importorskip("triton")
    from fairseq_adaptive.modules.triton_cross_entropy import _span_finish_kernel, _span_lse_kernel

    common = {"logits_ptr": f"*{dtype}", "stride": "i64"}
    spans = {"num_classes": "i32", "span": "i32", "splits": "i32"}
    compile_for_h100(_span_lse_kernel, {**common, "target_ptr": "*i64", "part_ptr": "*fp32", "nll_ptr": "*fp32",
                                        **spans}, {"BLOCK": 4096}, num_warps=8)
    compile_for_h100(_span_finish_kernel, {**common, "target_ptr": "*i64", "row_weight_ptr": "*i1",
                                           "part_ptr": "*fp32", "nll_ptr": "*fp32", **spans, "scale": "fp32"},
                     {"GRAD": grad, "BLOCK": 4096, "SPLITS": 8}, num_warps=8)


def test_half_products_accumulate_into_fp32_on_every_device():
    """``accumulate_product`` adds a bf16 product into an fp32 sum: one mixed-precision GEMM where the device has it
    (CUDA), the product rounded once then added in fp32 elsewhere (CPU builds lack the kernel: the probe says so)."""
    from fairseq_adaptive.modules.linear_cross_entropy import accumulate_product, mixed_addmm_works

    assert not mixed_addmm_works(torch.device("cpu"))
    torch.manual_seed(0)
    a, b = torch.randn(40, 7).bfloat16(), torch.randn(40, 5).bfloat16()
    acc = torch.full((7, 5), 0.5)
    accumulate_product(acc, a.t(), b)
    accumulate_product(acc, a.t(), b)
    exact = 0.5 + 2 * (a.t().double() @ b.double())
    assert acc.dtype == torch.float32
    torch.testing.assert_close(acc.double(), exact, rtol=1e-2, atol=5e-2)
    same = torch.zeros(7, 5, dtype=torch.float64)
    accumulate_product(same, a.t().double(), b.double())
    torch.testing.assert_close(same, a.t().double() @ b.double())


def test_blocks_hold_the_same_bytes_in_the_dtype_they_are_worked_in(monkeypatch):
    """The PyTorch path works in fp32 (fp64 for fp64), the in-place kernel in the logits' dtype: a bf16 block of the
    kernel holds twice the logits of the PyTorch path's block in the same memory."""
    from fairseq_adaptive.modules import linear_cross_entropy as lce

    bf16, fp64 = torch.zeros(2, 3, dtype=torch.bfloat16), torch.zeros(2, 3, dtype=torch.float64)
    assert lce.block_elements_for(bf16) * 4 == lce.block_elements_for(fp64) * 8 == lce.BLOCK_BYTES
    monkeypatch.setattr(lce, "uses_kernel", lambda logits: True)
    assert lce.block_elements_for(bf16) * 2 == lce.BLOCK_BYTES
    assert lce.rows_per_block(10_000, 20_002, lce.block_elements_for(bf16)) == lce.BLOCK_BYTES // 2 // 20_002


def test_kernels_run_only_on_cuda_devices_triton_supports(monkeypatch):
    """Compute capability 8.0 or newer (A100, H100); a V100 or T4 keeps the PyTorch code, as do CPU tensors and
    FAIRSEQ_ADAPTIVE_NO_TRITON=1."""
    pytest.importorskip("triton")
    from fairseq_adaptive.modules import triton_support

    assert not triton_support.runs_on(torch.zeros(2))
    fake = torch.empty(2, device="meta")
    monkeypatch.setattr(type(fake), "is_cuda", property(lambda t: True))
    for capability, expected in (((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)):
        monkeypatch.setattr(triton_support, "_CAPABLE", {})
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index, c=capability: c)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        assert triton_support.runs_on(fake) is expected
        monkeypatch.setenv("FAIRSEQ_ADAPTIVE_NO_TRITON", "1")
        assert not triton_support.runs_on(fake)
        monkeypatch.delenv("FAIRSEQ_ADAPTIVE_NO_TRITON")


def test_fp16_gradients_of_rare_classes_survive():
    """Under fp16 the softmax of rare classes (here 1e-12 to 6e-8) lies at or below fp16's smallest value, and the
    fp16 loss scale that autograd would apply to it is only known in backward: the logit gradients are held times
    2^10 (undone in backward), so a rare class's weight gradient matches float64 as closely as autograd through a
    materialised fp16 loss does."""
    torch.manual_seed(0)
    x = (1 + 0.3 * torch.randn(64, 8)).half()  # every row near the all-ones direction
    w = torch.cat([0.5 * torch.randn(40, 8), -2 + 0.1 * torch.randn(10, 8)]).half()  # classes 40..: logits near -16
    t = torch.randint(0, 10, (64,))
    keep = torch.ones(64, dtype=torch.bool)
    xr, wr = x.detach().requires_grad_(), w.detach().requires_grad_()
    loss, _ = linear_cross_entropy(xr, wr, t, keep)
    (loss * 4096).backward()
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    (F.cross_entropy(x64 @ w64.t(), t, reduction="sum") * 4096).backward()
    rare = w64.grad[40:]  # includes the scale
    assert rare.abs().max() / 4096 < 2**-14  # unscaled, below fp16's normal range
    xa, wa = x.detach().requires_grad_(), w.detach().requires_grad_()
    (F.cross_entropy(xa @ wa.t(), t, reduction="sum") * 4096).backward()  # autograd, fp16 logits

    def error(grad):
        return ((grad[40:].double() - rare).abs() / rare.abs()).max().item()

    assert error(wr.grad) < max(2 * error(wa.grad), 1e-2)
    x_error = [((g.double() - x64.grad).abs().max() / x64.grad.abs().max()).item() for g in (xr.grad, xa.grad)]
    assert x_error[0] < max(2 * x_error[1], 1e-2)


# ------------------------------------------------------------------------------------------ kernel self-check
@pytest.fixture
def fake_device(monkeypatch):
    """CPU tensors treated as a device the kernels run on, with a fresh self-check record."""
    from fairseq_adaptive.modules import linear_cross_entropy as lce
    from fairseq_adaptive.modules import triton_norm_act, triton_support

    monkeypatch.setattr(triton_support, "_TRUSTED", {})
    monkeypatch.setattr(lce, "runs_on", lambda t: True)
    monkeypatch.setattr(triton_norm_act, "runs_on", lambda t: True)
    return lce, triton_norm_act


@pytest.mark.parametrize("broken", [True, False])
def test_cross_entropy_kernel_is_checked_once_and_dropped_on_a_mismatch(fake_device, monkeypatch, caplog, broken):
    lce, _ = fake_device
    calls = []

    def kernel(logits, target, keep, grad, scale=1.0):  # the PyTorch code, off by 1e-2 in the NLL when broken
        calls.append(logits.shape)
        nll, _, g = lce.cross_entropy_rows(logits, target, keep, grad, scale, allow_kernel=False)
        return nll + (1e-2 if broken else 0.0), g

    monkeypatch.setattr(lce.triton_cross_entropy, "cross_entropy_rows", kernel)
    x, w, t, keep = problem(dtype=torch.float32)
    ref, _ = reference(x, w, t, keep)
    with caplog.at_level("WARNING"):
        for _ in range(2):
            got, _ = linear_cross_entropy(x, w, t, keep)
            torch.testing.assert_close(got, ref)  # right either way: a broken kernel is not used
    warned = [r.getMessage() for r in caplog.records if "cross_entropy_rows" in r.getMessage()]
    assert len(warned) == (1 if broken else 0)
    if broken:
        assert "largest difference 0.01" in warned[0] and "PyTorch code for the rest of the run" in warned[0]
        assert len(calls) == 2  # the check's two blocks, nothing after
    else:
        assert len(calls) > 2  # trusted: it serves the real blocks


def test_norm_act_kernel_that_fails_is_replaced_by_pytorch(fake_device, monkeypatch, caplog):
    _, kernel = fake_device

    def failing(*args):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(kernel, "fused_norm_act", failing)
    x = torch.randn(5, 16)
    w, b = torch.randn(16), torch.randn(16)
    with caplog.at_level("WARNING"):
        out = kernel.norm_act(x, w, b, 1e-5, "swish")
    torch.testing.assert_close(out, kernel.reference(x, w, b, 1e-5, "swish"))
    assert "norm_act[swish]" in caplog.text and "no kernel image" in caplog.text
