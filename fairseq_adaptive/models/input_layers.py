"""Input layers shared by the language model and the translation model: plain embedding, adaptive input, DeFINE over
either; the DeFINE flags (one dataclass, so both models' configs and argparse flags come from one place); cutoff
parsing."""

import math
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models.transformer import Embedding
from fairseq.utils import safe_getattr
from torch import nn

from ..modules.adaptive_input import AdaptiveInput
from ..modules.define import ACTIVATIONS, CONNECTIONS, TRANSFORMS, DeFINE

AUTO = "auto"


def parse_cutoff(value, flag: str) -> Optional[List[int]]:
    """``"20000,60000"`` (or a list) -> ``[20000, 60000]``; ``None``/empty -> ``None``."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return None
    if isinstance(value, str):
        if value.strip() == AUTO:
            raise ValueError(
                f"{flag}=auto needs the dictionary's counts: train with --task adaptive_language_modeling, "
                f"which derives the cutoffs (see --cutoff-coverage), or give explicit cutoffs"
            )
        items = value.strip().strip("[]()").split(",")
    else:
        items = list(value)
    try:
        return [int(str(x).strip()) for x in items if str(x).strip()]
    except ValueError:
        raise ValueError(f"{flag}={value!r} is not a comma-separated list of integers such as 20000,60000") from None


@dataclass
class DefineConfig(FairseqDataclass):
    """DeFINE (Mehta et al. 2020) as its authors released it: the embedding of width n is projected to d, run through
    N grouped layers whose widths grow from d to k (the last one ends at the model width m) and an output layer.
    The width n itself is the model's own flag (``--define-dim``, ``--encoder-define-dim``, ...). Defaults are the
    released unit's."""

    define_layers: int = field(default=3, metadata={"help": "DeFINE: N, the number of grouped layers"})
    define_expand_dim: int = field(default=1024, metadata={"help": "DeFINE: k, the widest grouped layer"})
    define_max_groups: int = field(
        default=8,
        metadata={
            "help": "DeFINE: group counts double from 1 and restart at 1 past this, then run in reverse "
            "(N=3: 4, 2, 1)"
        },
    )
    define_proj_dim: Optional[int] = field(
        default=None, metadata={"help": "DeFINE: d, the width of the input layer n -> d (default: model width / 2)"}
    )
    define_transform: ChoiceEnum(TRANSFORMS) = field(
        default="hgt",
        metadata={
            "help": "DeFINE's group rule: hgt (the paper's), glt (--define-max-groups in every layer), glt_shuffle "
            "(the same, features shuffled between groups), linear (one group): Table 4's ablations"
        },
    )
    define_connection: ChoiceEnum(CONNECTIONS) = field(
        default="mixer",
        metadata={
            "help": "DeFINE: how each grouped layer after the first reads the projected input: mixer (chunk by "
            "chunk, the paper's), concat (joined whole: 'w/o mixer'), none (not at all): Table 4's ablations"
        },
    )
    define_activation: ChoiceEnum(list(ACTIVATIONS)) = field(
        default="swish", metadata={"help": "DeFINE: activation after each layer's normalisation"}
    )
    define_dropout: float = field(default=0.1, metadata={"help": "DeFINE: dropout after each layer"})
    define_embed_dropout: float = field(
        default=0.1,
        metadata={"help": "DeFINE: dropout on the mapped embedding, one mask per sequence shared by its time steps"},
    )
    define_cache: bool = field(
        default=False,
        metadata={
            "help": "DeFINE: in eval mode, compute every token's output once into a V x m table and look it up "
            "(same outputs; rebuilt after any weight change). For eval-lm / generation"
        },
    )


DEFINE_DEFAULTS = {f.name[len("define_"):]: f.default for f in fields(DefineConfig)}


def adaptive_input_of(embed_tokens: nn.Module) -> Optional[AdaptiveInput]:
    """The adaptive input inside an input layer (itself, or the map layer of a DeFINE), if any."""
    inner = embed_tokens.map if isinstance(embed_tokens, DeFINE) else embed_tokens
    return inner if isinstance(inner, AdaptiveInput) else None


def define_options(args) -> Dict[str, Any]:
    """DeFINE's keyword arguments from a config holding ``DefineConfig``'s fields (defaults where absent)."""
    get = lambda name: safe_getattr(args, f"define_{name}", DEFINE_DEFAULTS[name])  # noqa: E731
    return {
        "expand_dim": get("expand_dim"),
        "n_layers": get("layers"),
        "max_groups": get("max_groups"),
        "proj_dim": get("proj_dim"),
        "transform": get("transform"),
        "connection": get("connection"),
        "activation": get("activation"),
        "dropout": get("dropout"),
        "embed_dropout": get("embed_dropout"),
        "cache": get("cache"),
        "scale_embedding": not safe_getattr(args, "no_scale_embedding", False),
    }


def build_input_layer(
    dictionary,
    width: int,
    model_dim: int,
    adaptive_cutoff: Optional[List[int]] = None,
    adaptive_factor: float = 4.0,
    define: Optional[Dict[str, Any]] = None,
) -> nn.Module:
    """tokens -> ``model_dim``: a plain ``V x width`` embedding or an adaptive input (``adaptive_cutoff``) of first-band
    width ``width``; with ``define`` (``define_options``), a DeFINE from ``width`` to ``model_dim`` over it, otherwise
    the adaptive input projects to ``model_dim`` itself (a plain embedding of another width is projected by fairseq's
    decoder)."""
    if adaptive_cutoff is not None:
        out = width if define is not None else model_dim
        embedding = AdaptiveInput(len(dictionary), dictionary.pad(), width, adaptive_factor, out, adaptive_cutoff)
    else:
        embedding = Embedding(len(dictionary), width, dictionary.pad())
    if define is None:
        return embedding
    define = dict(define)
    # the released wiring: a plain table (N(0, 1/n) entries) is scaled by sqrt(n) unless --no-scale-embedding; an
    # adaptive input is not (its bands are projected to n)
    scale = define.pop("scale_embedding") and adaptive_cutoff is None
    return DeFINE(embedding, input_dim=width, output_dim=model_dim, embed_scale=math.sqrt(width) if scale else 1.0,
                  **define)
