"""Whether the Triton kernels of this package may run: Triton importable and not turned off by
``FAIRSEQ_ADAPTIVE_NO_TRITON=1`` (which selects the PyTorch code everywhere, for comparisons and debugging)."""

import os

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs
    triton, tl = None, None


def available() -> bool:
    return triton is not None and os.environ.get("FAIRSEQ_ADAPTIVE_NO_TRITON", "0") != "1"
