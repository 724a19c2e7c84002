"""Fixes to fairseq, applied (and logged) when one of this package's models or tasks is built, never on import:
a process that only imports the plugin keeps fairseq exactly as it is.

- Batching: fairseq-fixed 0.12.3.1's ``data_utils.batch_by_size`` drops the last, partial batch whenever
  ``--required-batch-size-multiple`` is above 1 (its default is 8): 61 test sentences come back as one batch of 56,
  so ``fairseq-generate`` translates and scores 56 of them, and validation and every epoch lose their remainder too.
  We wrap the function and return the dropped indices as one more batch, in the order fairseq would have used.
- Checkpoint copies: fairseq writes the first checkpoint file of a save through a temporary file and a rename, then
  copies it onto the others (``checkpoint_last.pt``, ``checkpoint_best.pt``) in place, so a kill or a full disk during
  the copy leaves a truncated ``checkpoint_last.pt`` and the next plain resume fails. Our copy writes a temporary
  file beside the target, flushes it to disk and renames it into place: the target is always the old or the new
  complete file.
- Checkpoint reads: an empty, damaged or foreign checkpoint (a resume's ``checkpoint_last.pt``) is named with what to
  do (``checks.named_load_failures``), instead of torch's advice to load it with ``weights_only=False``.
"""

import contextlib
import logging
import os
import shutil

import numpy as np
from fairseq import checkpoint_utils
from fairseq.data import data_utils
from fairseq.file_io import PathManager

from .checks import named_load_failures

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


def atomic_copy(src: str, dst: str) -> None:
    """Copy ``src`` onto ``dst`` so that ``dst`` is at every moment the old or the new complete file."""
    tmp = dst + ".tmp"
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 16 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dst)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise OSError(e.errno, f"copying the checkpoint {src} to {dst} failed ({e.strerror}); {dst} was left as "
                                   f"it was, and {src} is complete") from e
        raise


class AtomicCopyPathManager(PathManager):
    """fairseq's ``PathManager`` whose ``copy`` of local files is atomic (see the module docstring)."""

    _fairseq_adaptive_fix = True

    @staticmethod
    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if not PathManager.supports_rename(dst_path):
            return PathManager.copy(src_path, dst_path, overwrite=overwrite)
        if not overwrite and os.path.exists(dst_path):
            return False
        atomic_copy(src_path, dst_path)
        return True


def apply() -> None:
    """Wrap ``data_utils.batch_by_size`` so that it keeps the last, partial batch, and make the checkpoint copies of
    ``checkpoint_utils`` atomic (once per process)."""
    if not getattr(data_utils.batch_by_size, "_fairseq_adaptive_fix", False):
        data_utils.batch_by_size = _keeps_every_index(data_utils.batch_by_size)
        logger.info("fairseq's data_utils.batch_by_size now keeps the last, partial batch (it drops it whenever "
                    "--required-batch-size-multiple is above 1)")
    if not getattr(checkpoint_utils.PathManager, "_fairseq_adaptive_fix", False):
        checkpoint_utils.PathManager = AtomicCopyPathManager
        logger.info("fairseq's checkpoint copies (checkpoint_last.pt, checkpoint_best.pt) are now written to a "
                    "temporary file and renamed into place, so a kill or a full disk cannot leave them truncated")
    if not getattr(checkpoint_utils.load_checkpoint_to_cpu, "_fairseq_adaptive_fix", False):
        checkpoint_utils.load_checkpoint_to_cpu = named_load_failures(checkpoint_utils.load_checkpoint_to_cpu)
