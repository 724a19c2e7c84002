"""DeFINE's fused LayerNorm + activation kernels (run by Triton's CPU interpreter) against PyTorch in float64, and
their compilation to H100 machine code."""

import textwrap

import pytest
import torch

from fairseq_adaptive.modules.define import GroupLinear
from fairseq_adaptive.modules.triton_norm_act import norm_act, reference

from .helpers import compile_for_h100, run_interpreted

KERNEL_CHECK = textwrap.dedent(
    """
    import torch
    from fairseq_adaptive.modules import triton_norm_act as kernel
    from fairseq_adaptive.modules.triton_support import available
    assert available()
    kernel.BACKWARD_PROGRAMS = 3  # several tiles per backward program, the last program's tiles ragged
    torch.manual_seed(0)
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2), (torch.float16, 4e-3)):
        for activation in ("gelu", "relu", "swish"):
            # rows of 33 (several rows per tile), 128, 300 (one padded row per tile), none at all
            for shape in ((3, 150, 33), (2, 5, 128), (1, 9, 300), (0, 4, 16)):
                x = (torch.randn(shape) * 3 + 1).to(dtype).requires_grad_()
                w = torch.randn(shape[-1]).to(dtype).requires_grad_()
                b = torch.randn(shape[-1]).to(dtype).requires_grad_()
                grad = torch.randn(shape).to(dtype)
                out = kernel.fused_norm_act(x, w, b, 1e-5, activation)
                got = (out, *torch.autograd.grad(out, (x, w, b), grad))
                exact = [t.detach().double().requires_grad_() for t in (x, w, b)]
                ref = kernel.reference(*exact, 1e-5, activation)
                want = (ref, *torch.autograd.grad(ref, exact, grad.double()))
                for name, a, r in zip(("output", "grad_x", "grad_w", "grad_b"), got, want):
                    assert a.dtype == dtype and a.shape == r.shape, (name, a.dtype, a.shape)
                    if r.numel():
                        err = (a.double() - r).abs().max().item()
                        assert err <= tol * max(1.0, r.abs().max().item()), (dtype, activation, shape, name, err)

    # a whole DeFINE unit (group-major layers whose LayerNorm weights the groups share) through the kernels
    from torch import nn
    from fairseq_adaptive.modules import define as define_module
    from tests.interpreted import same_with_kernels
    options = define_module.DefineOptions(expand_dim=64, n_layers=3, max_groups=4, dropout=0.0, embed_dropout=0.0)
    unit = define_module.DeFINE(nn.Embedding(50, 16, padding_idx=1), 16, 24, options)
    tokens = torch.randint(2, 50, (3, 7))
    def outputs_and_grads():
        unit.zero_grad()
        out = unit(tokens)
        out.pow(2).sum().backward()
        return [out.detach()] + [p.grad.clone() for p in unit.parameters()]
    same_with_kernels(outputs_and_grads, lambda: setattr(define_module, "norm_act", kernel.fused_norm_act),
                      rtol=1e-4, atol=1e-5)
    """
)


@pytest.mark.cli
def test_fused_norm_act_equals_layer_norm_then_activation():
    run_interpreted(KERNEL_CHECK)


@pytest.mark.parametrize("activation", ["gelu", "relu", "swish"])
def test_norm_act_off_cuda_is_pytorch_and_group_linear_uses_it(activation):
    torch.manual_seed(0)
    layer = GroupLinear(8, 12, 2, activation)
    norm = layer.norm
    x = torch.randn(2, 5, 4)
    y = torch.baddbmm(layer.bias, x, layer.weight)
    expected = {"gelu": torch.nn.GELU(), "relu": torch.nn.ReLU(), "swish": torch.nn.SiLU()}[activation](norm(y))
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(norm_act(y, norm.weight, norm.bias, norm.eps, activation),
                               reference(y, norm.weight, norm.bias, norm.eps, activation))


@pytest.mark.parametrize("dtype,activation,block", [("bf16", "gelu", 64), ("bf16", "gelu", 4096), ("fp16", "swish", 128),
                                                   ("fp32", "relu", 512)])
def test_norm_act_kernels_compile_to_h100_machine_code(dtype, activation, block):
    pytest.importorskip("triton")
    from fairseq_adaptive.modules import triton_norm_act as kernel

    code = kernel.ACTIVATION_CODES[activation]
    rows = max(1, kernel.TILE_ELEMENTS // block)
    tile = {"ACT": code, "ROWS": rows, "BLOCK": block}
    forward = {"x_ptr": f"*{dtype}", "w_ptr": f"*{dtype}", "b_ptr": f"*{dtype}", "out_ptr": f"*{dtype}",
               "mean_ptr": "*fp32", "rstd_ptr": "*fp32", "n_rows": "i32", "d": "i32", "eps": "fp32"}
    compile_for_h100(kernel._norm_act_forward_kernel, forward, tile, num_warps=kernel.NUM_WARPS)
    backward = {"x_ptr": f"*{dtype}", "w_ptr": f"*{dtype}", "b_ptr": f"*{dtype}", "grad_out_ptr": f"*{dtype}",
                "grad_x_ptr": f"*{dtype}", "mean_ptr": "*fp32", "rstd_ptr": "*fp32", "grad_w_part_ptr": "*fp32",
                "grad_b_part_ptr": "*fp32", "n_rows": "i32", "d": "i32", "tiles_per_program": "i32"}
    compile_for_h100(kernel._norm_act_backward_kernel, backward, tile, num_warps=kernel.NUM_WARPS)
