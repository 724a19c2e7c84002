"""Flags -> model description, in one place for the language model, the translation model and the task.

fairseq's own config split (a dataclass per model, small architecture functions that fill defaults) stays; what this
module adds is every derived setting and every cross-flag check, each written once:

- the flag groups our models add (:class:`DefineConfig`, :class:`FastPathConfig`) and :func:`parse_cutoff`;
- :func:`set_defaults` (what architecture functions call), :func:`is_tied`, the DeFINE widths
  (:func:`decoder_define_dim`, :func:`input_layer_width`) and :func:`resolve_dims` (a tied softmax over DeFINE scores
  at the DeFINE width n);
- :func:`validate_config`: the checks that span several flags, before anything is built; each module still checks its
  own invariants (cutoffs against the vocabulary, tied cutoffs equal, band widths) with the flag named;
- :func:`check_dictionary_size`: a checkpoint meets the dictionary it was trained with.
"""

import contextlib
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.utils import safe_getattr
from omegaconf import DictConfig, open_dict

from ..modules.adaptive_input import band_dims, check_cutoff
from ..modules.define import ACTIVATIONS, CONNECTIONS, TRANSFORMS

AUTO = "auto"
TIE_FLAGS = ("tie_adaptive_weights", "share_decoder_input_output_embed", "share_all_embeddings")


def set_defaults(args, **defaults) -> None:
    """``args.name = value`` for each name the user (or an earlier architecture function) left unset."""
    for name, value in defaults.items():
        setattr(args, name, safe_getattr(args, name, value))


def fill_dataclass_defaults(args, config, inherited=()) -> None:
    """fairseq adds a model's flags without defaults (architecture functions fill them): fill the fields ``config``
    adds to the ``inherited`` dataclasses from its own defaults."""
    known = {name for base in inherited for name in base.__dataclass_fields__}
    fields_ = config.__dataclass_fields__
    set_defaults(args, **{name: fields_[name].default for name in sorted(set(fields_) - known)})


def is_tied(args) -> bool:
    """Whether the output layer shares the input layer's weights (adaptive tying, a tied full softmax, or one
    embedding for the encoder, the decoder and the output)."""
    return any(safe_getattr(args, flag, False) for flag in TIE_FLAGS)


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


@dataclass
class FastPathConfig:
    """Speed switches shared by ``adaptive_lm`` and ``adaptive_transformer``; each keeps the math unchanged."""

    adaptive_softmax_chunk: Optional[int] = field(
        default=None,
        metadata={"help": "removed: every loss and score runs through the blockwise engine, whose memory is bounded "
                          "without it (a value above 0 is an error)"},
    )
    no_causal_sdpa: bool = field(
        default=False,
        metadata={
            "help": "run the decoder's self-attention through fairseq's MultiheadAttention with an explicit future "
            "mask instead of scaled_dot_product_attention(is_causal=True) (same math; the latter reaches the "
            "flash kernels)"
        },
    )


def decoder_define_dim(args) -> Optional[int]:
    """n of the decoder-side DeFINE: ``--define-dim`` (language model) or ``--decoder-define-dim`` (translation)."""
    return safe_getattr(args, "decoder_define_dim", None) or safe_getattr(args, "define_dim", None) or None


def define_flag(args) -> str:
    return "--decoder-define-dim" if safe_getattr(args, "decoder_define_dim", None) else "--define-dim"


def uses_define(args) -> bool:
    return decoder_define_dim(args) is not None


def default_output_to_define_width(args) -> None:
    """A tied output layer over DeFINE scores at the DeFINE width n: the output dimension's default (architecture
    functions call this before fairseq's base fills it with the model width)."""
    if uses_define(args) and is_tied(args):
        set_defaults(args, decoder_output_dim=decoder_define_dim(args))


def resolve_dims(args) -> None:
    """Fill the dimensions that default to the decoder width, in place (Namespace or DictConfig).

    With DeFINE the input layer ends at the decoder width (no input projection) and a tied softmax scores at
    the DeFINE width n, so the output dimension defaults to n there."""
    if uses_define(args):
        if safe_getattr(args, "decoder_input_dim", None) not in (None, args.decoder_embed_dim):
            raise ValueError(
                f"--decoder-input-dim={args.decoder_input_dim} has no meaning with --define-dim: DeFINE maps "
                f"tokens to --define-dim and reduces them to --decoder-embed-dim; drop --decoder-input-dim"
            )
        default_output_to_define_width(args)
    for name in ("decoder_input_dim", "decoder_output_dim"):
        if safe_getattr(args, name, None) is None:
            setattr(args, name, args.decoder_embed_dim)


def input_layer_width(args) -> int:
    """Width of the plain or adaptive embedding (the one a tied softmax shares): n with DeFINE."""
    return decoder_define_dim(args) if uses_define(args) else args.decoder_input_dim


def check_dictionary_size(args, dictionary, data: str) -> None:
    """A model is built for one dictionary: record its size in the config (saved with every checkpoint) and, when a
    checkpoint's config comes back with another dictionary, say so before anything is built from it."""
    trained = safe_getattr(args, "dictionary_size", None)
    if trained is None:
        with open_dict(args) if isinstance(args, DictConfig) else contextlib.nullcontext():
            args.dictionary_size = len(dictionary)  # a checkpoint's config from before this field: add it
    elif trained != len(dictionary):
        raise ValueError(
            f"the dictionary of {data} has {len(dictionary):,} entries, but the checkpoint was trained with a "
            f"{trained:,}-entry dictionary: score text binarised with the checkpoint's own dict.txt "
            f"(fairseq-preprocess --only-source --srcdict <the training data-bin>/dict.txt ...)"
        )


def validate_config(args, vocab_size: int) -> None:
    """Fail at build time, naming the flag and the fix, on combinations that would break deep in a forward."""
    input_cutoff = parse_cutoff(safe_getattr(args, "adaptive_input_cutoff"), "--adaptive-input-cutoff")
    softmax_cutoff = parse_cutoff(safe_getattr(args, "adaptive_softmax_cutoff"), "--adaptive-softmax-cutoff")
    if args.adaptive_input and input_cutoff is None:
        raise ValueError("--adaptive-input needs --adaptive-input-cutoff (e.g. 20000,60000, or auto)")
    for cutoff, flag in ((input_cutoff, "--adaptive-input-cutoff"), (softmax_cutoff, "--adaptive-softmax-cutoff")):
        if cutoff is not None:
            check_cutoff(cutoff, vocab_size, flag)
    if args.adaptive_input:
        band_dims(input_layer_width(args), args.adaptive_input_factor, len(input_cutoff) + 1, "--adaptive-input-factor")
    if softmax_cutoff is not None:
        band_dims(args.decoder_output_dim, args.adaptive_softmax_factor, len(softmax_cutoff) + 1,
                  "--adaptive-softmax-factor")
    if args.tie_adaptive_weights:
        if not args.adaptive_input or softmax_cutoff is None:
            raise ValueError(
                "--tie-adaptive-weights ties the adaptive softmax to the adaptive input: it needs both "
                "--adaptive-input and --adaptive-softmax-cutoff"
            )
        if args.adaptive_input_factor != args.adaptive_softmax_factor:
            raise ValueError(
                f"--tie-adaptive-weights needs --adaptive-softmax-factor ({args.adaptive_softmax_factor}) equal to "
                f"--adaptive-input-factor ({args.adaptive_input_factor})"
            )
        adaptive_width = decoder_define_dim(args) if uses_define(args) else args.decoder_embed_dim
        if args.decoder_output_dim != adaptive_width:
            flag = define_flag(args) if uses_define(args) else "--decoder-embed-dim"
            raise ValueError(
                f"--tie-adaptive-weights shares the adaptive input's projections, which end at {flag} "
                f"({adaptive_width}): --decoder-output-dim ({args.decoder_output_dim}) must equal it"
            )
    elif args.tie_adaptive_proj:
        raise ValueError("--tie-adaptive-proj needs --tie-adaptive-weights")
    if args.share_decoder_input_output_embed and (args.adaptive_input or softmax_cutoff is not None):
        raise ValueError(
            "--share-decoder-input-output-embed ties a full softmax to a plain embedding; with adaptive "
            "layers use --tie-adaptive-weights instead"
        )
    if args.share_decoder_input_output_embed and input_layer_width(args) != args.decoder_output_dim:
        flag = define_flag(args) if uses_define(args) else "--decoder-input-dim"
        raise ValueError(
            f"--share-decoder-input-output-embed needs {flag} ({input_layer_width(args)}) equal to "
            f"--decoder-output-dim ({args.decoder_output_dim})"
        )
    if (safe_getattr(args, "adaptive_softmax_chunk", None) or 0) > 0:
        raise ValueError(
            f"--adaptive-softmax-chunk={args.adaptive_softmax_chunk} was removed: every loss and score now runs "
            f"block by block through one engine, which bounds memory without it; drop the flag"
        )
    if not 0.0 <= args.adaptive_softmax_dropout < 1.0:
        raise ValueError(f"--adaptive-softmax-dropout={args.adaptive_softmax_dropout} must lie in [0, 1)")


def data_of(task) -> str:
    """The data directory a task reads (for messages)."""
    return str(safe_getattr(safe_getattr(task, "args", None), "data", None) or "the data directory")
