"""Build a registered architecture at a given vocabulary size without allocating its weights (meta device),
to count its parameters. Used by scripts/param_table.py and the tests."""

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


def build_on_meta(arch: str, vocab_size: int, extra_args=(), task: str = "language_modeling") -> torch.nn.Module:
    """A language model (or, with ``task="translation"``, a translation model with one joined dictionary)."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, ["/nonexistent", "--task", task, "--arch", arch, *extra_args])
    d = dictionary_of_size(vocab_size)
    task = SimpleNamespace(source_dictionary=d, target_dictionary=d, dictionary=d)
    with torch.device("meta"):
        return ARCH_MODEL_REGISTRY[arch].build_model(args, task)


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied weights counted once), as fairseq reports them."""
    return sum(p.numel() for p in model.parameters())
