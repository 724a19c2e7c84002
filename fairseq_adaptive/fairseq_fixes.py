"""Fixes to fairseq, applied (and logged) when one of this package's models or tasks is built; on import, only the
naming of unreadable checkpoints (:func:`name_read_failures`), because fairseq's commands read their checkpoint
before any model of ours is built. A process that only imports the plugin keeps everything else of fairseq as it is.

- Batching: fairseq-fixed 0.12.3.1's ``data_utils.batch_by_size`` drops the last, partial batch whenever
  ``--required-batch-size-multiple`` is above 1 (its default is 8): 61 test sentences come back as one batch of 56,
  so ``fairseq-generate`` translates and scores 56 of them, and validation and every epoch lose their remainder too.
  We wrap the function and return the dropped indices as one more batch, in the order fairseq would have used.
- Checkpoint copies: fairseq writes the first checkpoint file of a save through a temporary file and a rename, then
  copies it onto the others (``checkpoint_last.pt``, ``checkpoint_best.pt``) in place, so a kill or a full disk during
  the copy leaves a truncated ``checkpoint_last.pt`` and the next plain resume fails. Our copy writes a temporary
  file beside the target, flushes it to disk and renames it into place: the target is always the old or the new
  complete file.
- Checkpoint reads (also on import): an empty, damaged or foreign checkpoint (a resume's ``checkpoint_last.pt``,
  ``fairseq-eval-lm --path``) is named with what to do (``checks.named_load_failures``), instead of a bare
  ``EOFError`` or torch's advice to load it with ``weights_only=False``.
- numpy 2: fairseq 0.12 builds the datasets of generation, the hub interface and eval-lm's sentence modes
  (``TokenBlockDataset`` with ``--sample-break-mode eos``) and of bucketed translation batches with
  ``np.compat.long``, which numpy 2 removed. Under numpy 2 those two fairseq modules are given a view of numpy that
  also answers ``compat.long`` (numpy 1's alias of ``int``), and TokenBlockDataset signed index types (its ``e - 2``
  on unsigned numpy-2 scalars wrapped around); numpy itself, and every other module, are left alone.
- The start of fairseq-train: fairseq treats a ``--restore-file`` that does not exist as a fresh start (one INFO
  line) and then writes over the save directory's checkpoints; a run that starts from scratch beside another run's
  checkpoints overwrites them too. Both stop before anything is loaded or written
  (``checks.check_starting_point``).
"""

import contextlib
import importlib
import inspect
import logging
import os
import shutil
import types

import numpy as np
from fairseq import checkpoint_utils
from fairseq.data import data_utils
from fairseq.file_io import PathManager

from .checks import check_sizes, check_starting_point, named_load_failures, resume_mismatch, starting_checkpoint

logger = logging.getLogger(__name__)


def _keeps_every_index(batch_by_size):
    signature = inspect.signature(batch_by_size)

    def wrapped(indices, *args, **kwargs):
        given = signature.bind(indices, *args, **kwargs).arguments
        check_sizes({"max_tokens": given.get("max_tokens"), "batch_size": given.get("max_sentences")})
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


def checks_starting_point(load_checkpoint):
    """fairseq's ``load_checkpoint`` (fairseq-train's start), after :func:`checks.check_starting_point`; weights that
    do not fit the model are named with the settings that differ (:func:`checks.resume_mismatch`)."""

    def wrapped(cfg, trainer, **kwargs):
        check_starting_point(cfg, trainer.checkpoint_suffix)
        try:
            return load_checkpoint(cfg, trainer, **kwargs)
        except Exception as e:  # fairseq's trainer wraps torch's size-mismatch list in a bare Exception
            if type(e) is Exception and "Cannot load model parameters" in str(e):
                start = starting_checkpoint(cfg, trainer.checkpoint_suffix)[2]
                raise resume_mismatch(start, trainer.cfg.model, e) from None
            raise

    wrapped.__wrapped__ = load_checkpoint
    wrapped._fairseq_adaptive_fix = True
    return wrapped


class _NumpyWithCompat:
    """numpy as a fairseq module sees it: every name of numpy, and ``compat.long`` (``int``), which numpy 2 removed."""

    compat = types.SimpleNamespace(long=int)

    def __getattr__(self, name):
        return getattr(np, name)


# fairseq's modules that call np.compat on our users' paths (generation, hub, eval-lm, translation batching)
_NUMPY_COMPAT_USERS = ("fairseq.data.token_block_dataset", "fairseq.data.language_pair_dataset")


def signed_int_dtype(max_int_to_represent):
    """fairseq's ``best_fitting_int_dtype`` with signed types: TokenBlockDataset computes ``e - 2`` on its index
    scalars, which numpy 2 keeps unsigned (wrapping 1 - 2 around, with an overflow warning) where numpy 1 promoted
    them to a signed type."""
    if max_int_to_represent is not None and max_int_to_represent < 2**31 - 1:
        return np.int32
    return np.int64


def numpy_compat() -> None:
    """Under numpy 2, give the fairseq modules that still call ``np.compat.long`` a numpy that has it, and
    TokenBlockDataset signed index types."""
    if hasattr(np, "compat"):
        return
    for name in _NUMPY_COMPAT_USERS:
        module = importlib.import_module(name)
        if not isinstance(module.np, _NumpyWithCompat):
            module.np = _NumpyWithCompat()
            logger.info(f"{name} now reads numpy through a view that keeps np.compat.long (numpy "
                        f"{np.__version__} removed it)")
    blocks = importlib.import_module("fairseq.data.token_block_dataset")
    if blocks.best_fitting_int_dtype is not signed_int_dtype:
        blocks.best_fitting_int_dtype = signed_int_dtype
        logger.info("fairseq's TokenBlockDataset now indexes its blocks with signed integers (numpy 2 keeps unsigned "
                    "ones unsigned, so its past target of a sentence's first token wrapped around)")


def name_read_failures() -> None:
    """The one fix applied when the plugin is imported (``--user-dir`` imports it before fairseq-eval-lm,
    fairseq-generate and fairseq-interactive read their checkpoint): a checkpoint fairseq cannot read is named, with
    what to do. It changes nothing else: a readable checkpoint loads as before."""
    if not getattr(checkpoint_utils.load_checkpoint_to_cpu, "_fairseq_adaptive_fix", False):
        checkpoint_utils.load_checkpoint_to_cpu = named_load_failures(checkpoint_utils.load_checkpoint_to_cpu)
        logger.info("fairseq's checkpoint reads now name an empty, damaged or foreign file (fairseq_adaptive)")


def apply() -> None:
    """Apply the fixes of the module docstring (once per process), logging each."""
    if not getattr(data_utils.batch_by_size, "_fairseq_adaptive_fix", False):
        data_utils.batch_by_size = _keeps_every_index(data_utils.batch_by_size)
        logger.info("fairseq's data_utils.batch_by_size now keeps the last, partial batch (it drops it whenever "
                    "--required-batch-size-multiple is above 1)")
    if not getattr(checkpoint_utils.PathManager, "_fairseq_adaptive_fix", False):
        checkpoint_utils.PathManager = AtomicCopyPathManager
        logger.info("fairseq's checkpoint copies (checkpoint_last.pt, checkpoint_best.pt) are now written to a "
                    "temporary file and renamed into place, so a kill or a full disk cannot leave them truncated")
    name_read_failures()
    numpy_compat()
    if not getattr(checkpoint_utils.load_checkpoint, "_fairseq_adaptive_fix", False):
        checkpoint_utils.load_checkpoint = checks_starting_point(checkpoint_utils.load_checkpoint)
        logger.info("fairseq-train's start now refuses a --restore-file that does not exist and a start that would "
                    "write over checkpoints of another run in --save-dir")
