"""The flag groups our models add, and the small helpers architecture functions and models share.

Flags become the typed description of the vocabulary layers in ``vocab_flags.describe`` (the one place that reads
and checks them); this module declares them (defaults from the modules that own them) and holds what is not about
those layers: filling architecture defaults.
"""

from dataclasses import dataclass, field, make_dataclass
from typing import Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.utils import safe_getattr

from ..checks import DICTIONARY_RECORD, writable
from ..modules.define import ACTIVATIONS, CONNECTIONS, TRANSFORMS
from .vocab_flags import DEFINE_DEFAULTS

# the widths the vocabulary description derives when they are unset (see vocab_flags.describe)
DERIVED_WIDTHS = ("decoder_input_dim", "decoder_output_dim")


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


def keep_widths_unset(base_architecture, args) -> None:
    """Run fairseq's ``base_architecture`` but leave the input and output widths the user did not give unset: fairseq
    fills them with the model width, while the vocabulary description derives them (a softmax tied to DeFINE's table
    scores at its width n)."""
    unset = [name for name in DERIVED_WIDTHS if safe_getattr(args, name, None) is None]
    base_architecture(args)
    with writable(args):
        for name in unset:
            setattr(args, name, None)


@dataclass
class DefineConfig(FairseqDataclass):
    """DeFINE (Mehta et al. 2020) as its authors released it: the embedding of width n is projected to d, run through
    N grouped layers whose widths grow from d to k (the last one ends at the model width m) and an output layer.
    The width n itself is the model's own flag (``--define-dim``, ``--encoder-define-dim``, ...). Defaults are the
    released unit's."""

    define_layers: int = field(
        default=DEFINE_DEFAULTS.n_layers, metadata={"help": "DeFINE: N, the number of grouped layers"}
    )
    define_expand_dim: int = field(
        default=DEFINE_DEFAULTS.expand_dim, metadata={"help": "DeFINE: k, the widest grouped layer"}
    )
    define_max_groups: int = field(
        default=DEFINE_DEFAULTS.max_groups,
        metadata={
            "help": "DeFINE: group counts double from 1 and restart at 1 past this, then run in reverse "
            "(N=3: 4, 2, 1)"
        },
    )
    define_proj_dim: Optional[int] = field(
        default=DEFINE_DEFAULTS.proj_dim, metadata={"help": "DeFINE: d, the width of the input layer n -> d (default: model width / 2)"}
    )
    define_transform: ChoiceEnum(TRANSFORMS) = field(
        default=DEFINE_DEFAULTS.transform,
        metadata={
            "help": "DeFINE's group rule: hgt (the paper's), glt (--define-max-groups in every layer), glt_shuffle "
            "(the same, features shuffled between groups), linear (one group): Table 4's ablations"
        },
    )
    define_connection: ChoiceEnum(CONNECTIONS) = field(
        default=DEFINE_DEFAULTS.connection,
        metadata={
            "help": "DeFINE: how each grouped layer after the first reads the projected input: mixer (chunk by "
            "chunk, the paper's), concat (joined whole: 'w/o mixer'), none (not at all): Table 4's ablations; "
            "residual (every layer k/2 wide, adding its input to its output: Table 6a)"
        },
    )
    define_activation: ChoiceEnum(list(ACTIVATIONS)) = field(
        default=DEFINE_DEFAULTS.activation, metadata={"help": "DeFINE: activation after each layer's normalisation"}
    )
    define_dropout: float = field(default=DEFINE_DEFAULTS.dropout, metadata={"help": "DeFINE: dropout after each layer"})
    define_embed_dropout: float = field(
        default=DEFINE_DEFAULTS.embed_dropout,
        metadata={"help": "DeFINE: dropout on the mapped embedding, one mask per sequence shared by its time steps"},
    )
    define_cache: bool = field(
        default=DEFINE_DEFAULTS.cache,
        metadata={
            "help": "DeFINE: in eval mode, compute every token's output once into a V x m table and look it up "
            "(same outputs; rebuilt after any weight change). For eval-lm / generation"
        },
    )
    define_no_reduce: bool = field(
        default=not DEFINE_DEFAULTS.reduce,
        metadata={
            "help": "DeFINE without the reduction to the model width: the body reads the k-wide output (an LSTM's "
            "first layer; Table 6b's '- Reduce')"
        },
    )



@dataclass
class LanguageModelDefineConfig(DefineConfig):
    define_dim: Optional[int] = field(
        default=None,
        metadata={
            "help": "DeFINE: width n of the token embedding (plain, or adaptive input with --adaptive-input) that "
            "DeFINE expands and reduces to --decoder-embed-dim; a tied softmax then scores at n. Unset or 0: no DeFINE"
        },
    )


@dataclass
class TranslationDefineConfig(DefineConfig):
    encoder_define_dim: Optional[int] = field(
        default=None, metadata={"help": "DeFINE on the encoder side: embedding width n (unset or 0: no DeFINE)"}
    )
    decoder_define_dim: Optional[int] = field(
        default=None,
        metadata={"help": "DeFINE on the decoder side: embedding width n; a tied output layer then scores at n "
                          "through an m -> n projection (unset or 0: no DeFINE)"},
    )


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


def dictionary_record(prefix: str = "") -> type:
    """The config fields in which a model records a dictionary when first built (``checks.check_dictionary``):
    ``{prefix}dictionary_size``, ``_fingerprint`` and ``_file``."""
    what = f"the {prefix.rstrip('_') + ' ' if prefix else ''}dictionary's"
    fields_ = [(f"{prefix}dictionary_{name}", kind,
                field(default=None, metadata={"help": f"set when the model is first built: {what} {help_}"}))
               for name, (kind, help_) in DICTIONARY_RECORD.items()]
    return make_dataclass(f"{prefix.title().replace('_', '')}DictionaryRecordConfig", fields_)


DictionaryRecordConfig = dictionary_record()  # a language model's one dictionary


@dataclass
class VocabularyConfig:
    """The vocabulary-layer flags of a language model that does not inherit them from fairseq's
    ``TransformerLanguageModelConfig`` (Transformer-XL, LSTM): fairseq's names, read by ``vocab_flags.describe``."""

    adaptive_input: bool = field(default=False, metadata={"help": "adaptive input representations"})
    adaptive_input_factor: float = field(default=4, metadata={"help": "adaptive input: width divisor per band"})
    adaptive_input_cutoff: Optional[str] = field(default=None, metadata={"help": "adaptive input band boundaries"})
    adaptive_softmax_cutoff: Optional[str] = field(
        default=None, metadata={"help": "adaptive (clustered) softmax cluster boundaries, e.g. 20000,40000,200000"}
    )
    adaptive_softmax_factor: float = field(
        default=4, metadata={"help": "width divisor per cluster (1: Transformer-XL's clusters at full width)"}
    )
    adaptive_softmax_dropout: float = field(default=0, metadata={"help": "dropout in the adaptive softmax tail"})
    tie_adaptive_weights: bool = field(
        default=False,
        metadata={"help": "tie the softmax's word rows to the input layer (a plain table: with factor 1)"},
    )
    tie_adaptive_proj: bool = field(default=False, metadata={"help": "tie the tail projections too"})
    share_decoder_input_output_embed: bool = field(
        default=False, metadata={"help": "tie a full softmax to the plain input table"}
    )
    decoder_input_dim: Optional[int] = field(
        default=None, metadata={"help": "width of the plain table (projected to the model width)"}
    )
    decoder_output_dim: Optional[int] = field(default=None, metadata={"help": "softmax input width"})
    no_scale_embedding: bool = field(default=False, metadata={"help": "do not scale embeddings by sqrt(d)"})
    output_bias: bool = field(default=False, metadata={"help": "a learned bias per output word (Transformer-XL's)"})
    tie_projs: Optional[str] = field(
        default=None,
        metadata={"help": "a clustered softmax tied to a plain table narrower than the model: per cluster, head first, "
                          "1 to read the table's input projection, 0 for its own (Transformer-XL's tie_projs; its "
                          "train.py sets 0,1,1,1 on WikiText-103). Unset: one projection before the softmax, shared"},
    )
    adaptive_input_no_square_proj: bool = field(
        default=False,
        metadata={"help": "no projection for an adaptive input's first band when it is as wide as its output (fairseq "
                          "projects it; DeFINE's Table 1a R2 counts none)"},
    )
    adaptive_softmax_head_proj: bool = field(
        default=False,
        metadata={"help": "an own projection before the adaptive softmax's head, read by its words and its cluster "
                          "logits (Transformer-XL's div_val > 1 layout: its untied out_projs[0], even at full width)"},
    )
