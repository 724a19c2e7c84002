"""Input layers shared by the language model and the translation model: plain embedding, adaptive input, DeFINE over
either; the DeFINE flags (one dataclass, so both models' configs and argparse flags come from one place); cutoff
parsing."""

from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models.transformer import Embedding
from fairseq.utils import safe_getattr
from torch import nn

from ..modules.adaptive_input import AdaptiveInput
from ..modules.define import ACTIVATIONS, TRANSFORMS, DeFINE

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
    """DeFINE (Mehta et al. 2020): the embedding of width n is expanded n -> k over N levels and reduced to the
    model width m. The width n itself is the model's own flag (``--define-dim``, ``--encoder-define-dim``, ...)."""

    define_layers: int = field(
        default=3, metadata={"help": "DeFINE: N, the number of width levels n .. k (N-1 grouped layers)"}
    )
    define_expand_dim: int = field(default=1024, metadata={"help": "DeFINE: k, the widest level"})
    define_max_groups: int = field(
        default=64, metadata={"help": "DeFINE: group count of the first grouped layer (halved at each next one)"}
    )
    define_transform: ChoiceEnum(TRANSFORMS) = field(
        default="hgt",
        metadata={
            "help": "DeFINE expansion: hgt (groups halve per layer, the paper's), glt (constant groups), "
            "glt_shuffle (constant groups, features shuffled between layers), linear (one group): Table 4's ablations"
        },
    )
    define_no_mixer: bool = field(
        default=False, metadata={"help": "DeFINE: drop the input-to-every-layer skip connection (Table 4 ablation)"}
    )
    define_activation: ChoiceEnum(list(ACTIVATIONS)) = field(
        default="gelu", metadata={"help": "DeFINE: activation after each grouped layer's normalisation"}
    )
    define_dropout: float = field(default=0.0, metadata={"help": "DeFINE: dropout after each grouped layer"})
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
        "transform": get("transform"),
        "mixer": not get("no_mixer"),
        "activation": get("activation"),
        "dropout": get("dropout"),
        "cache": get("cache"),
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
    return DeFINE(embedding, input_dim=width, output_dim=model_dim, **define)
