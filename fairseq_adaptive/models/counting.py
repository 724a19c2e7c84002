"""Build a registered architecture from command-line flags over a dictionary (:func:`build_arch`: the benchmarks), or
at a given vocabulary size without allocating its weights (:func:`build_on_meta`, meta device), to count its
parameters. Used by scripts/param_table.py, the benchmarks and the tests."""

import contextlib
from types import SimpleNamespace

import torch
from fairseq import options
from fairseq.data import Dictionary
from fairseq.models import ARCH_MODEL_REGISTRY


def dictionary_of_size(size: int) -> Dictionary:
    d = Dictionary()
    for i in range(size - len(d)):
        d.add_symbol(f"w{i}", n=size - i)  # counts decrease: a frequency-sorted dictionary
    assert len(d) == size
    return d


def build_arch(arch: str, dictionary: Dictionary, extra_args=(), task: str = "language_modeling", device=None):
    """``arch`` with ``extra_args`` (command-line flags) over ``dictionary`` (both sides of a translation model), built
    on ``device`` (default: torch's): ``(model, the task stand-in it was built with)``."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, ["/nonexistent", "--task", task, "--arch", arch, *extra_args])
    stand_in = SimpleNamespace(source_dictionary=dictionary, target_dictionary=dictionary, dictionary=dictionary)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return ARCH_MODEL_REGISTRY[arch].build_model(args, stand_in), stand_in


def build_on_meta(arch: str, vocab_size: int, extra_args=(), task: str = "language_modeling") -> torch.nn.Module:
    """A language model (or, with ``task="translation"``, a translation model with one joined dictionary)."""
    return build_arch(arch, dictionary_of_size(vocab_size), extra_args, task, device="meta")[0]


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied weights counted once), as fairseq reports them."""
    return sum(p.numel() for p in model.parameters())
