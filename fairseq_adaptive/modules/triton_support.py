"""Whether the Triton kernels of this package may run: Triton importable, not turned off by
``FAIRSEQ_ADAPTIVE_NO_TRITON=1`` (which selects the PyTorch code everywhere, for comparisons and debugging), and,
for a given tensor, a CUDA device Triton supports (compute capability 8.0 or newer: A100, H100 and later; older GPUs
such as the V100 and T4 keep the PyTorch code)."""

import os
from typing import Dict

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs
    triton, tl = None, None

MIN_CAPABILITY = (8, 0)
_CAPABLE: Dict[int, bool] = {}


def available() -> bool:
    return triton is not None and os.environ.get("FAIRSEQ_ADAPTIVE_NO_TRITON", "0") != "1"


def runs_on(tensor: Tensor) -> bool:
    """Whether this package's kernels take ``tensor``: a CUDA tensor on a capable device, Triton available."""
    if not (tensor.is_cuda and available()):
        return False
    index = tensor.device.index if tensor.device.index is not None else torch.cuda.current_device()
    if index not in _CAPABLE:
        _CAPABLE[index] = tuple(torch.cuda.get_device_capability(index)) >= MIN_CAPABILITY
    return _CAPABLE[index]
