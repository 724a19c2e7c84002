"""Reading files that others released (HuggingFace, fastai), without running their code, and writing converted ones
whole: the shared part of ``scripts/convert_transfo_xl.py`` and ``scripts/convert_fastai_awd_lstm.py``.

- Pickles (a tokenizer's state, a vocabulary list) are read by an unpickler that builds builtin containers, numbers
  and strings only (and ``collections``' dicts); any other class becomes an inert placeholder and torch's tensor
  references become None, so no pickled code runs. torch's archive format (a zip holding ``data.pkl``) and its
  legacy format (pickles one after another) are read the same way.
- Weights are read by torch's weights-only loader, or as safetensors directly (a JSON header, then the buffers).
"""

import json
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Callable, Optional

import torch

SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bool", "bytes", "bytearray",
                 "complex", "slice", "range"}
SAFE_COLLECTIONS = {"OrderedDict", "Counter", "defaultdict", "deque"}
SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
                      "I64": torch.int64, "I32": torch.int32}


class ReleasedFileError(ValueError):
    """A released file that cannot be read, or does not fit the others: the message says which and what to do."""


class _Opaque:
    """What the unpickler builds for any class it does not know: nothing runs, nothing is kept."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class PlainUnpickler(pickle.Unpickler):
    """Builds builtin containers and numbers (and collections' dicts); every other class becomes a placeholder, and
    torch's tensor references become None."""

    def find_class(self, module, name):
        if (module == "builtins" and name in SAFE_BUILTINS) or (module == "collections" and name in SAFE_COLLECTIONS):
            return super().find_class(module, name)
        if module == "_codecs" and name == "encode":  # bytes written under protocol 2
            return lambda text, encoding="latin1": text.encode(encoding)
        return _Opaque

    def persistent_load(self, pid):
        return None


def _first(stream, accept: Callable[[object], bool]):
    """The first unpickled object ``accept`` takes (a plain pickle holds it first; torch's legacy format after its
    magic number, protocol and system information)."""
    for _ in range(5):
        try:
            obj = PlainUnpickler(stream).load()
        except EOFError:
            break
        if accept(obj):
            return obj
    return None


def read_plain_pickle(path: Path, accept: Callable[[object], bool], what: str):
    """The first object of ``path`` (a pickle, or a torch file of either format) that ``accept`` takes; an error
    naming ``what`` the file should hold otherwise."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                found = None if member is None else _first(archive.open(member), accept)
        else:
            with open(path, "rb") as f:
                found = _first(f, accept)
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError, OSError) as e:
        raise ReleasedFileError(f"{path} is damaged or not {what} ({type(e).__name__}: {e}): download it "
                                f"again") from None
    if found is None:
        raise ReleasedFileError(f"{path} holds no {what}: download it again, or give the right file")
    return found


def read_safetensors(path: Path) -> dict:
    data = path.read_bytes()
    try:
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + size])
        tensors = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            start, end = (8 + size + int(o) for o in entry["data_offsets"])
            dtype = SAFETENSORS_DTYPES[entry["dtype"]]
            buffer = bytearray(data[start:end])
            tensors[name] = (torch.frombuffer(buffer, dtype=dtype).reshape(entry["shape"]).clone() if buffer
                             else torch.zeros(entry["shape"], dtype=dtype))
        return tensors
    except (struct.error, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise ReleasedFileError(f"{path} is damaged or not a safetensors file ({type(e).__name__}: {e}): download it "
                                f"again") from None


def read_torch_weights(path: Path, key: Optional[str] = None) -> dict:
    """A state dict of tensors from a torch file, by torch's weights-only loader (``key``: the entry that holds it,
    where the file wraps it, as fastai's ``{"model": ..., "opt": ...}``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same message
        raise ReleasedFileError(f"{path} cannot be read as model weights ({type(e).__name__}): it is damaged or cut "
                                f"short; download it again") from None
    if key is not None and isinstance(state, dict) and isinstance(state.get(key), dict):
        state = state[key]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ReleasedFileError(f"{path} holds no state dict of tensors: it is not a model's weights")
    return state


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` beside ``path``, then renamed into place: ``path`` is never a partial file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def refuse_existing(out_dir: Path, names=("model.pt", "dict.txt")) -> None:
    existing = [n for n in names if (out_dir / n).exists()]
    if existing:
        raise ReleasedFileError(f"{out_dir} already holds {', '.join(existing)}: give a new output folder (nothing is "
                                f"overwritten)")


def build_over_dictionary(dictionary_text: str, argv: list):
    """(the parsed flags, the model) that fairseq-train's option parsing and the task build from ``argv`` (``--task``,
    ``--arch``, sizes) over a dictionary with ``dictionary_text`` as its dict.txt."""
    import tempfile

    import fairseq_adaptive  # noqa: F401  (registers the models and tasks)
    from fairseq import options, tasks

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "dict.txt").write_text(dictionary_text, encoding="utf-8")
        args = options.parse_args_and_arch(options.get_training_parser(), [tmp, *argv, "--cpu"])
        return args, tasks.setup_task(args).build_model(args)


def write_converted(out_dir: Path, dictionary_text: str, args, model, source: str) -> None:
    """``out_dir/dict.txt`` and ``out_dir/model.pt`` (a fairseq checkpoint of ``model``, its config pointing at
    ``out_dir``, no optimizer state), each written whole."""
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    args.data = str(out_dir.resolve())
    args.dictionary_file = str((out_dir / "dict.txt").resolve())
    checkpoint = {"cfg": OmegaConf.to_container(convert_namespace_to_omegaconf(args)), "model": model.state_dict(),
                  "criterion": {}, "optimizer_history": [{"criterion_name": "AdaptiveCrossEntropyCriterion",
                                                          "optimizer_name": "none", "lr_scheduler_state": {},
                                                          "num_updates": 0}],
                  "task_state": {}, "extra_state": {"converted_from": source}, "last_optimizer_state": None}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(out_dir / "dict.txt", lambda p: p.write_text(dictionary_text, encoding="utf-8"))
    write_atomically(out_dir / "model.pt", lambda p: torch.save(checkpoint, p))
