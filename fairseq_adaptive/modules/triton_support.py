"""Whether the Triton kernels of this package may run: Triton importable, not turned off by
``FAIRSEQ_ADAPTIVE_NO_TRITON=1`` (which selects the PyTorch code everywhere, for comparisons and debugging), and,
for a given tensor, a CUDA device Triton supports (compute capability 8.0 or newer: A100, H100 and later; older GPUs
such as the V100 and T4 keep the PyTorch code)."""

import logging
import os
from typing import Callable, Dict, Tuple

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs
    triton, tl = None, None

MIN_CAPABILITY = (8, 0)
_CAPABLE: Dict[int, bool] = {}
_TRUSTED: Dict[Tuple[str, str, torch.dtype], bool] = {}
logger = logging.getLogger(__name__)


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


def trusted(name: str, device: torch.device, dtype: torch.dtype, error: Callable[[], float], tolerance: float) -> bool:
    """Whether kernel ``name`` may be used on ``device`` for ``dtype``: the first time it is asked, ``error()`` runs
    the kernel once on a small random input against the PyTorch code and returns the largest difference; above
    ``tolerance`` (or if the kernel fails) a warning names the kernel and the error, and the PyTorch code serves the
    rest of the run."""
    key = (name, str(device), dtype)
    if key not in _TRUSTED:
        try:
            worst = float(error())
            problem = None if worst <= tolerance else f"largest difference {worst:.3g} (tolerance {tolerance:g})"
        except Exception as e:  # noqa: BLE001  (any failure of a compiled kernel means: do not use it)
            problem = f"{type(e).__name__}: {e}"
        if problem is not None:
            logger.warning(f"Triton kernel {name} on {device} ({dtype}) disagrees with the PyTorch code: {problem}; "
                           f"using the PyTorch code for the rest of the run")
        _TRUSTED[key] = problem is None
    return _TRUSTED[key]
