"""fairseq_adaptive: adaptive input / adaptive softmax (Baevski & Auli 2019) and DeFINE (Mehta et al. 2020)
for fairseq. Load with ``--user-dir /path/to/fairseq_adaptive``."""

import argparse

import torch

# fairseq checkpoints written with argparse-era configs hold an argparse.Namespace; torch >= 2.6 loads with
# weights_only=True by default and refuses it unless it is registered as a safe global.
if hasattr(torch.serialization, "add_safe_globals"):
    torch.serialization.add_safe_globals([argparse.Namespace])

from . import fairseq_fixes  # noqa: E402

fairseq_fixes.apply()

from . import criterions, models, tasks  # noqa: E402,F401

__version__ = "0.1.0"
