"""Helpers for the code that ``helpers.run_interpreted`` runs under Triton's CPU interpreter (imported there)."""

import torch


def same_with_kernels(run, kernels_on, rtol: float, atol: float) -> None:
    """``run()`` (a list of tensors) on the PyTorch code, then again after ``kernels_on()``: the two must agree."""
    want = run()
    kernels_on()
    got = run()
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    print("kernel ok")
