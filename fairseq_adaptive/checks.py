"""What our models and tasks check around the layers, before a step runs: the binarised data against the dictionary,
the dictionary against the checkpoint, and the criterion against the model. Each failure names the file and the fix.

- Data: every split a task loads is looked at before fairseq reads it: its ``.idx`` must be a whole fairseq index,
  its ``.bin`` as long as the index says, the split not empty, and the largest token id below the dictionary's size
  (memory-mapped, once per file and version of it). fairseq would otherwise fail inside its indexed dataset without
  naming the file, or, for ids past the dictionary, train on them.
- Dictionary identity: a model records the size and a fingerprint of each dictionary it is built with (and the file
  it came from); a checkpoint meeting another dictionary stops with both files named, even at the same size.
  Checkpoints from before the fingerprint keep loading with the size check.
- Criterion: fairseq's ``adaptive_loss`` needs fairseq's own adaptive softmax; with our models it is refused when the
  criterion is built, naming ours.
- Checkpoint files: an empty, damaged or foreign file is named with what to do (:func:`read_checkpoint`), never with
  torch's advice to load it with ``weights_only=False``; our hub classes and scripts also check the model kind and
  the task a checkpoint holds before loading it (:func:`check_checkpoint`).

:func:`guard_task` installs the data and criterion checks on a task instance (our task does so itself; our models do
it for fairseq's ``language_modeling`` and ``translation``); nothing of fairseq's classes changes.
"""

import contextlib
import hashlib
import logging
import os
import pickle
import re
import struct
import traceback
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from fairseq.utils import safe_getattr
from omegaconf import DictConfig, open_dict

_MMAP_MAGIC = b"MMIDIDX\x00\x00"
_OTHER_MAGICS = (b"TNTIDX\x00\x00", b"HUFFIDX\x00")  # fairseq's cached/lazy and Huffman formats: read by fairseq
_HEADER = struct.Struct("<9sQBQ")  # magic, version, dtype code, number of sentences
_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.double,
           8: np.uint16, 9: np.uint32, 10: np.uint64}
_CHECKED: Dict[Tuple[str, int, int], Optional[int]] = {}  # (file, size, mtime) -> largest id


def writable(cfg):
    """A context in which ``cfg`` (an argparse Namespace or a struct-mode DictConfig) takes new attributes."""
    return open_dict(cfg) if isinstance(cfg, DictConfig) else contextlib.nullcontext()


def task_setting(task, name: str):
    """A task's setting (fairseq's tasks keep it in ``cfg``, or ``args`` for argparse-era ones), None if absent."""
    for holder in (getattr(task, "cfg", None), getattr(task, "args", None)):
        value = safe_getattr(holder, name, None) if holder is not None else None
        if value is not None:
            return value
    return None


def data_of(task) -> str:
    """The data directory a task reads (for messages)."""
    return str(task_setting(task, "data") or "the data directory")


# ------------------------------------------------------------------------------------------------------- data files
def largest_id(prefix: str) -> Optional[int]:
    """Check ``prefix.idx`` / ``prefix.bin`` (fairseq's memory-mapped format) and return the largest token id (None
    for fairseq's other formats, which fairseq reads and checks itself)."""
    idx, bin_ = prefix + ".idx", prefix + ".bin"
    redo = "re-run fairseq-preprocess for this split (the file is damaged or was cut short)"
    if not os.path.exists(bin_):
        raise ValueError(f"{idx} has no data file {bin_}: {redo}")
    stat = os.stat(bin_)
    key = (bin_, stat.st_size, stat.st_mtime_ns)
    if key in _CHECKED:
        return _CHECKED[key]
    with open(idx, "rb") as f:
        header = f.read(_HEADER.size)
    if header[:8] in _OTHER_MAGICS:
        return None
    if len(header) < _HEADER.size or header[:9] != _MMAP_MAGIC:
        raise ValueError(f"{idx} is not a fairseq index ({os.path.getsize(idx)} bytes, "
                         f"{'too short' if len(header) < _HEADER.size else 'wrong header'}): {redo}, with the default "
                         f"--dataset-impl mmap")
    _, version, code, count = _HEADER.unpack(header)
    if version != 1 or code not in _DTYPES:
        raise ValueError(f"{idx} has an index version ({version}) or token type ({code}) fairseq does not read: {redo}")
    if count == 0:
        raise ValueError(f"{bin_} holds no sentences (an empty split): give fairseq-preprocess a non-empty text file")
    need = _HEADER.size + 12 * count
    if os.path.getsize(idx) < need:
        raise ValueError(f"{idx} is cut short ({os.path.getsize(idx):,} of {need:,} bytes for {count:,} sentences): "
                         f"{redo}")
    index = np.memmap(idx, mode="r", dtype=np.uint8)
    last_size = int(np.frombuffer(index, np.int32, 1, _HEADER.size + 4 * (count - 1))[0])
    last_pointer = int(np.frombuffer(index, np.int64, 1, _HEADER.size + 4 * count + 8 * (count - 1))[0])
    dtype = np.dtype(_DTYPES[code])
    expected = last_pointer + last_size * dtype.itemsize
    if stat.st_size < expected:
        raise ValueError(f"{bin_} is cut short ({stat.st_size:,} of the {expected:,} bytes its index {idx} lists): "
                         f"{redo}")
    tokens = np.memmap(bin_, mode="r", dtype=dtype, shape=(expected // dtype.itemsize,))
    top = int(tokens.max()) if tokens.size else -1
    del tokens, index
    _CHECKED[key] = top
    return top


def check_ids(prefix: str, dictionary, dict_file: str) -> None:
    top = largest_id(prefix)
    if top is not None and top >= len(dictionary):
        raise ValueError(
            f"{prefix}.bin holds token id {top:,}, past the {len(dictionary):,}-entry dictionary {dict_file}: it was "
            f"binarised with another dictionary. Binarise it with this one (fairseq-preprocess --srcdict {dict_file}), "
            f"or point --data at the data-bin it was made with"
        )


def split_files(task, split: str) -> List[Tuple[str, object, str]]:
    """``(prefix, dictionary, dictionary file)`` of every binarised file the task reads for ``split``."""
    data = task_setting(task, "data")
    if not data:
        return []
    src, tgt = task_setting(task, "source_lang"), task_setting(task, "target_lang")
    found = []
    for directory in str(data).split(os.pathsep):
        for k in range(0, 1000):
            name = split + (str(k) if k > 0 else "")
            if src and tgt:  # translation: one file per language, the pair written either way round
                pairs = [f"{name}.{a}-{b}" for a, b in ((src, tgt), (tgt, src))]
                pair = next((p for p in pairs if os.path.exists(os.path.join(directory, f"{p}.{src}.idx"))), None)
                if pair is None:
                    break
                for lang, d in ((src, task.source_dictionary), (tgt, task.target_dictionary)):
                    if not os.path.exists(os.path.join(directory, f"{pair}.{lang}.idx")):
                        continue  # a source-only split (fairseq-generate on text without references)
                    found.append((os.path.join(directory, f"{pair}.{lang}"), d,
                                  os.path.join(directory, f"dict.{lang}.txt")))
            else:
                prefix = os.path.join(directory, name)
                if not os.path.exists(prefix + ".idx"):
                    break
                found.append((prefix, task.source_dictionary, os.path.join(directory, "dict.txt")))
    return found


def check_split(task, split: str) -> None:
    if (task_setting(task, "dataset_impl") or "mmap") not in ("mmap", "infer"):
        return  # other formats: fairseq's own reading
    for prefix, dictionary, dict_file in split_files(task, split):
        check_ids(prefix, dictionary, dict_file)


# ------------------------------------------------------------------------------------------------------- the task
def guard_task(task) -> None:
    """Check every split ``task`` loads before fairseq reads it (and those it has loaded already), and refuse
    fairseq's ``adaptive_loss`` when the criterion is built. Once per task instance."""
    if getattr(task, "_fairseq_adaptive_guarded", False) or not hasattr(task, "load_dataset"):
        return
    load_dataset, build_criterion = task.load_dataset, task.build_criterion

    def checked_load_dataset(split, *args, **kwargs):
        check_split(task, split)
        return load_dataset(split, *args, **kwargs)

    def checked_build_criterion(cfg, *args, **kwargs):
        name = safe_getattr(cfg, "_name", None) or safe_getattr(cfg, "criterion", None)
        if name == "adaptive_loss":
            raise ValueError("--criterion adaptive_loss needs fairseq's own adaptive softmax; this package's models "
                             "score through theirs: use --criterion adaptive_cross_entropy (the same loss, in fp32)")
        return build_criterion(cfg, *args, **kwargs)

    task.load_dataset, task.build_criterion = checked_load_dataset, checked_build_criterion
    task._fairseq_adaptive_guarded = True
    for split in list(getattr(task, "datasets", {}) or {}):
        check_split(task, split)


# ------------------------------------------------------------------------------------------------- the dictionary
# what a model records of each dictionary in its config (fields ``{prefix}dictionary_{name}``): name -> (type, help)
DICTIONARY_RECORD = {
    "size": (Optional[int], "size, checked when a checkpoint loads"),
    "fingerprint": (Optional[str], "words, hashed"),
    "file": (Optional[str], "file"),
}


def dictionary_fingerprint(dictionary) -> str:
    """The words of a dictionary in index order (their counts aside): equal fingerprints, equal ids."""
    return hashlib.sha1("\n".join(dictionary.symbols).encode("utf-8")).hexdigest()[:16]


def check_dictionary(args, dictionary, data: str, prefix: str = "", dict_file: str = "dict.txt",
                     preprocess_flag: str = "--only-source --srcdict") -> None:
    """A model is built for one dictionary: record its size, fingerprint and file in the config (``{prefix}
    dictionary_size`` and so on, saved with every checkpoint) and, when a checkpoint's config comes back with another
    dictionary, say so, with both files, before anything is built from it. Checkpoints from before the fingerprint
    are checked by size alone."""
    here = os.path.join(data, dict_file)
    size_field, print_field, file_field = (f"{prefix}dictionary_{x}" for x in DICTIONARY_RECORD)
    trained, trained_print = safe_getattr(args, size_field, None), safe_getattr(args, print_field, None)
    trained_file = safe_getattr(args, file_field, None) or f"<the training data-bin>/{dict_file}"
    fix = (f"binarise the text with the checkpoint's own dictionary (fairseq-preprocess {preprocess_flag} "
           f"{trained_file} ...)")
    if trained is not None and trained != len(dictionary):
        raise ValueError(f"the dictionary of {data} ({here}) has {len(dictionary):,} entries, but the checkpoint was "
                         f"trained with a {trained:,}-entry dictionary ({trained_file}): {fix}")
    fingerprint = dictionary_fingerprint(dictionary)
    if trained_print is not None and trained_print != fingerprint:
        raise ValueError(f"the dictionary of {data} ({here}) is not the one the checkpoint was trained with "
                         f"({trained_file}): both have {len(dictionary):,} entries, but other words at other ids, so "
                         f"every score would be wrong: {fix}")
    with writable(args):
        if trained is None:
            setattr(args, size_field, len(dictionary))
        if trained_print is None and trained is None:  # a checkpoint from before the fingerprint keeps the size check
            setattr(args, print_field, fingerprint)
            setattr(args, file_field, str(Path(here).resolve()) if os.path.exists(here) else here)


# ------------------------------------------------------------------------------------------------------- sizes
SIZE_FLAGS = {
    "tokens_per_sample": "the length of each sample",
    "max_target_positions": "the longest sequence the model takes",
    "max_tokens": "the tokens of a batch",
    "batch_size": "the samples (or streams) of a batch",
}


def check_sizes(settings, names=tuple(SIZE_FLAGS)) -> None:
    """The size flags among ``names`` that ``settings`` (a config, or a dict) sets must be at least 1: fairseq would
    otherwise fail deep in its positional or block code (a division by zero, an empty index list)."""
    for name in names:
        value = settings.get(name) if isinstance(settings, dict) else safe_getattr(settings, name, None)
        if value is not None and not isinstance(value, bool) and value < 1:
            hint = (" (fairseq-eval-lm subtracts --context-window from it: keep --context-window below "
                    "--tokens-per-sample)" if name == "tokens_per_sample" else "")
            raise ValueError(f"--{name.replace('_', '-')}={value} must be at least 1 ({SIZE_FLAGS[name]}){hint}; "
                             f"leave it unset for fairseq's default")


def check_context_window(tokens_per_sample: int, context_window: int) -> None:
    """eval-lm's window: ``--context-window`` tokens of context before ``--tokens-per-sample - --context-window`` new
    ones, so the window must be at least 0 and below the sample length."""
    check_sizes({"tokens_per_sample": tokens_per_sample})
    if not 0 <= context_window < tokens_per_sample:
        raise ValueError(f"--context-window={context_window} must lie in [0, --tokens-per-sample={tokens_per_sample}): "
                         f"each sample scores --tokens-per-sample minus --context-window new tokens")


# ------------------------------------------------------------------------------------------ the run's starting point
_RUN_FILES = re.compile(r"^checkpoint(_last|_best|\d+|_\d+_\d+|\.best_.*)(-[\w.-]+)?\.pt$")


def starting_checkpoint(cfg, suffix: str = "") -> Tuple[str, str, Optional[str]]:
    """fairseq-train's save directory, its ``checkpoint_last.pt``, and the checkpoint the run starts from (None: from
    scratch), as fairseq's ``load_checkpoint`` resolves them."""
    save_dir = str(safe_getattr(cfg, "save_dir", "checkpoints"))
    restore = str(safe_getattr(cfg, "restore_file", "checkpoint_last.pt"))
    last = os.path.join(save_dir, f"checkpoint_last{suffix or ''}.pt")
    if restore != "checkpoint_last.pt":
        return save_dir, last, restore.replace(".pt", suffix + ".pt") if suffix else restore
    if os.path.exists(last):
        return save_dir, last, last
    return save_dir, last, safe_getattr(cfg, "continue_once", None) or safe_getattr(cfg, "finetune_from_model", None)


def check_starting_point(cfg, suffix: str = "") -> None:
    """Before fairseq-train loads (or silently skips) the checkpoint it starts from (``cfg``: its checkpoint config):
    a ``--restore-file`` that does not exist is refused, and so is a run that would overwrite checkpoints of another
    run in ``--save-dir`` (a fresh start, or a start from elsewhere, beside their files). A start from a checkpoint
    of the save directory itself (going back to an earlier one) is the same run: it is allowed, and logged."""
    if safe_getattr(cfg, "no_save", False):
        return
    save_dir, last, start = starting_checkpoint(cfg, suffix)
    if safe_getattr(cfg, "restore_file", "checkpoint_last.pt") != "checkpoint_last.pt":
        if not os.path.isfile(start):
            raise ValueError(
                f"--restore-file {start} does not exist, so this run would start from scratch and write over "
                f"{save_dir}: nothing was loaded or written. A fresh start needs no --restore-file; to resume the run "
                f"of --save-dir {save_dir}, drop it too (fairseq resumes from {last} by itself); otherwise give the "
                f"path of an existing checkpoint")
    if start is not None and os.path.exists(start) and os.path.samefile(start, last):
        return  # a resume of this save directory's run
    existing = sorted(f for f in os.listdir(save_dir) if _RUN_FILES.match(f)) if os.path.isdir(save_dir) else []
    if not existing:
        return
    if start is not None and os.path.isfile(start) and \
            os.path.samefile(os.path.dirname(os.path.abspath(start)), save_dir):
        logging.getLogger(__name__).warning(
            f"starting from {start}, a checkpoint of --save-dir {save_dir}: this run's saves replace "
            f"{', '.join(existing)} of that directory")
        return
    origin = "from scratch" if start is None else f"from {start}"
    raise ValueError(
        f"--save-dir {save_dir} holds checkpoints of another run ({', '.join(existing[:4])}"
        f"{', ...' if len(existing) > 4 else ''}) and this run starts {origin}, so its saves would write over them: "
        f"nothing was loaded or written. Give a new --save-dir"
        + ("" if os.path.exists(last) else f", or resume one of them with --restore-file {os.path.join(save_dir, existing[0])}"))


def resume_mismatch(path: str, model_cfg, error: BaseException) -> ValueError:
    """The error for a checkpoint whose weights do not fit the model the command line builds: the model settings
    that differ from the checkpoint's, each with its saved value."""
    try:
        saved = _section(read_checkpoint(path), "model")
    except ValueError:
        saved = {}
    now = dict(model_cfg) if isinstance(model_cfg, (dict, DictConfig)) else vars(model_cfg)
    differ = [f"--{k.replace('_', '-')} {now[k]!r} (the checkpoint's: {saved[k]!r})" for k in sorted(saved)
              if k in now and not k.startswith("_") and str(now[k]) != str(saved[k])]
    shapes = str(error.__cause__ or error.__context__ or error).strip().splitlines()
    detail = (f"these model settings differ from the checkpoint's: {'; '.join(differ)}" if differ
              else f"torch says: {shapes[-1] if shapes else error}")
    return ValueError(f"{path} holds weights of other shapes than the model these flags build ({detail}): resume with "
                      f"the checkpoint's values, or train the new model in a new --save-dir")


# ------------------------------------------------------------------------------------------------- checkpoint files
def unreadable_checkpoint(path: str, reason: str) -> ValueError:
    return ValueError(f"{path} {reason}: use another checkpoint of the run (checkpoint_best.pt, or a numbered "
                      f"checkpoint*_*.pt; fairseq-train --restore-file PATH resumes from one)")


def check_checkpoint_file(path: str) -> None:
    """What can be told from the file alone: it exists and is not empty."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such checkpoint file")
    if os.path.getsize(path) == 0:
        raise unreadable_checkpoint(path, "is empty (0 bytes; a save was cut off)")


def read_failure(path: str, error: BaseException) -> ValueError:
    """The error to raise for a checkpoint torch could not read: the file named, never torch's advice to load an
    untrusted file with ``weights_only=False``."""
    if isinstance(error, EOFError):
        return unreadable_checkpoint(path, "ends early (a save was cut off)")
    if isinstance(error, OSError):
        return unreadable_checkpoint(path, f"could not be read as a checkpoint ({error}; damaged or cut short?)")
    if zipfile.is_zipfile(path):
        return unreadable_checkpoint(path, "holds objects a fairseq checkpoint does not (it is not one, or was "
                                           "written by other code)")
    return unreadable_checkpoint(path, f"is not a checkpoint torch can read (damaged, cut short, or another kind "
                                       f"of file; torch's loader raised {type(error).__name__})")


def read_checkpoint(path: str) -> dict:
    """A fairseq checkpoint (``torch.load``, weights only, memory-mapped), or a ValueError naming the file and the
    fix."""
    check_checkpoint_file(path)
    try:
        state = torch.load(path, map_location="cpu", mmap=zipfile.is_zipfile(path))
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, OSError) as e:
        raise read_failure(path, e) from None
    except Exception as e:  # random bytes reach the unpickler as any opcode: KeyError, IndexError, TypeError, ...
        if raised_while_reading(e):
            raise read_failure(path, e) from None
        raise
    return fairseq_state(path, state)


def raised_while_reading(error: BaseException) -> bool:
    """Whether ``error`` was raised inside torch's loader or the unpickler (the file is unreadable), not after."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and any(part in frames[-1].filename for part in ("serialization.py", "unpickler", "pickle"))


def fairseq_state(path: str, state) -> dict:
    if not isinstance(state, dict) or "model" not in state or not ({"cfg", "args"} & set(state)):
        raise unreadable_checkpoint(path, "is not a fairseq checkpoint (it has no model weights and config)")
    return state


def named_load_failures(load_checkpoint_to_cpu):
    """fairseq's ``load_checkpoint_to_cpu``, whose read failures name the file (installed by ``fairseq_fixes``)."""

    def wrapped(path, *args, **kwargs):
        if os.path.isfile(path):
            check_checkpoint_file(path)
        try:
            return fairseq_state(path, load_checkpoint_to_cpu(path, *args, **kwargs))
        except (pickle.UnpicklingError, EOFError, OSError) as e:
            if isinstance(e, FileNotFoundError):
                raise
            raise read_failure(path, e) from None
        except Exception as e:
            # random bytes reach the unpickler as any opcode (KeyError, IndexError, TypeError, ...), as in
            # read_checkpoint; torch names a damaged archive in a RuntimeError
            archive = isinstance(e, RuntimeError) and ("zip archive" in str(e) or "PytorchStreamReader" in str(e))
            if archive or raised_while_reading(e):
                raise read_failure(path, e) from None
            if isinstance(e, KeyError):  # fairseq's upgrade of the loaded state missed a field of its checkpoints
                raise unreadable_checkpoint(path, f"is not a fairseq checkpoint (it has no {e})") from None
            raise

    wrapped.__wrapped__ = load_checkpoint_to_cpu
    wrapped._fairseq_adaptive_fix = True
    return wrapped


def _section(state: dict, name: str) -> dict:
    """A section of a checkpoint's config as a dict (argparse-era models keep a Namespace there, or in ``args``)."""
    cfg = state.get("cfg")
    section = cfg.get(name) if cfg is not None else state.get("args")
    return vars(section) if hasattr(section, "__dict__") and not isinstance(section, dict) else dict(section or {})


def model_name(state: dict) -> str:
    model = _section(state, "model")
    return str(model.get("_name") or model.get("arch") or "?")


def task_name(state: dict) -> str:
    task = _section(state, "task")
    return str(task.get("_name") or task.get("task") or "?")


def check_checkpoint(path: str, model_class, tasks: Sequence[str], loader: str) -> dict:
    """Before loading ``path`` for ``model_class``: a readable fairseq checkpoint of that kind of model, trained with one
    of ``tasks``; otherwise say what it is and what loads it."""
    from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY

    state = read_checkpoint(path)
    name, task = model_name(state), task_name(state)
    cls = ARCH_MODEL_REGISTRY.get(name) or MODEL_REGISTRY.get(name)
    if cls is None or not issubclass(cls, model_class) or task not in tasks:
        raise ValueError(f"{path} holds a {name} model trained with --task {task}, not a {model_class.__name__} "
                         f"({', '.join(tasks)}): {loader}")
    return state


def check_hub_paths(model_class, model_name_or_path, checkpoint_file: str, data_name_or_path: str,
                    tasks: Sequence[str], dict_files, loader: str) -> None:
    """``from_pretrained`` on local paths: the folder, the checkpoint (readable, of ``model_class``, trained with one
    of ``tasks``) and the dictionaries (``dict_files(state)``) in the data folder, checked before fairseq loads
    anything. Names of downloadable models are left to fairseq."""
    if not isinstance(model_name_or_path, (str, Path)) or model_name_or_path in (model_class.hub_models() or {}):
        return
    folder = Path(model_name_or_path)
    if folder.is_file() or "://" in str(folder):
        return  # an archive or a URL: fairseq unpacks or downloads it
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: give the folder that holds the checkpoint "
                         f"(from_pretrained(FOLDER, checkpoint_file=NAME, data_name_or_path=DATA_BIN))")
    states = [check_checkpoint(str(folder / name), model_class, tasks, loader)
              for name in str(checkpoint_file).split(os.pathsep)]  # an ensemble: a.pt:b.pt
    data = folder / data_name_or_path if str(data_name_or_path).startswith(".") else Path(data_name_or_path)
    if data.is_file() or "://" in str(data):
        return
    for name in dict_files(states[0]):
        if not (data / name).is_file():
            raise ValueError(f"{data / name} does not exist: give the data-bin folder the model was trained with "
                             f"(the one holding its {name}) as data_name_or_path")
