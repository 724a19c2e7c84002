"""fairseq_adaptive: adaptive input / adaptive softmax (Baevski & Auli 2019) and DeFINE (Mehta et al. 2020)
for fairseq. Load with ``--user-dir /path/to/fairseq_adaptive``."""

import argparse

import torch

# fairseq checkpoints written with argparse-era configs hold an argparse.Namespace; torch >= 2.6 loads with
# weights_only=True by default and refuses it unless it is registered as a safe global.
if hasattr(torch.serialization, "add_safe_globals"):
    torch.serialization.add_safe_globals([argparse.Namespace])

from . import criterions, fairseq_fixes, models, optim, tasks  # noqa: E402,F401

# fairseq-eval-lm, fairseq-generate and fairseq-interactive read their checkpoint before building any model of ours:
# name an unreadable one with what to do (fairseq_fixes.py; nothing else of fairseq changes on import)
fairseq_fixes.name_read_failures()

__version__ = "0.1.0"
