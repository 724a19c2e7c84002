"""A fix to fairseq, applied (and logged) when one of this package's models or tasks is built, never on import:
a process that only imports the plugin keeps fairseq exactly as it is.

fairseq-fixed 0.12.3.1's ``data_utils.batch_by_size`` drops the last, partial batch whenever
``--required-batch-size-multiple`` is above 1 (its default is 8): 61 test sentences come back as one batch of 56, so
``fairseq-generate`` translates and scores 56 of them, and validation and every epoch lose their remainder too. We
wrap the function and return the dropped indices as one more batch, in the order fairseq would have used.
"""

import logging

import numpy as np
from fairseq.data import data_utils

logger = logging.getLogger(__name__)


def _keeps_every_index(batch_by_size):
    def wrapped(indices, *args, **kwargs):
        batches = batch_by_size(indices, *args, **kwargs)
        order = np.asarray(indices, dtype=np.int64)
        covered = sum(len(b) for b in batches)
        if covered >= len(order):
            return batches
        seen = np.zeros(int(order.max()) + 1 if len(order) else 0, dtype=bool)
        for b in batches:
            seen[np.asarray(b, dtype=np.int64)] = True
        missing = order[~seen[order]]
        return list(batches) + [missing]

    wrapped.__wrapped__ = batch_by_size
    wrapped._fairseq_adaptive_fix = True
    return wrapped


def apply() -> None:
    """Wrap ``data_utils.batch_by_size`` (once per process) so that it keeps the last, partial batch."""
    if not getattr(data_utils.batch_by_size, "_fairseq_adaptive_fix", False):
        data_utils.batch_by_size = _keeps_every_index(data_utils.batch_by_size)
        logger.info("fairseq's data_utils.batch_by_size now keeps the last, partial batch (it drops it whenever "
                    "--required-batch-size-multiple is above 1)")
