"""fairseq_adaptive: adaptive input / adaptive softmax (Baevski & Auli 2019) and DeFINE (Mehta et al. 2020)
for fairseq. Load with ``--user-dir /path/to/fairseq_adaptive``."""

import argparse
import logging

import numpy
import torch

# fairseq 0.12 (fairseq-fixed 0.12.3.1 included) builds datasets with ``np.compat.long``, which numpy 2 removed:
# generation, the hub interface and eval-lm's sentence-level modes then fail deep inside fairseq. Say so up front.
if not hasattr(numpy, "compat"):
    logging.getLogger(__name__).warning(
        f"numpy {numpy.__version__}: fairseq calls numpy.compat, removed in numpy 2, so fairseq-interactive, "
        f"fairseq-generate, the hub interface and fairseq-eval-lm --sample-break-mode eos|complete|complete_doc will "
        f"fail; install numpy<2 (requirements/constraints.txt pins numpy==1.26.4)"
    )

# fairseq checkpoints written with argparse-era configs hold an argparse.Namespace; torch >= 2.6 loads with
# weights_only=True by default and refuses it unless it is registered as a safe global.
if hasattr(torch.serialization, "add_safe_globals"):
    torch.serialization.add_safe_globals([argparse.Namespace])

from . import criterions, models, optim, tasks  # noqa: E402,F401

__version__ = "0.1.0"
