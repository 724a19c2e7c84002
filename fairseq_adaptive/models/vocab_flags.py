"""Flags and dictionary -> the typed description of one side's vocabulary layers (``modules/vocab_layers.py``).

:func:`describe` is the one place that reads ``--adaptive-input*``, ``--adaptive-softmax-*``, ``--define-*``, the tying
flags and the input/output widths, and the one place that checks them together: every message names the flag of the
side being described (``--encoder-adaptive-input-cutoff`` for a translation encoder, ``--decoder-define-dim`` for its
decoder, ``--define-dim`` for a language model), the value, and the fix. Modules keep their own invariants only.
"""

import ast
import logging
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from fairseq.utils import safe_getattr

from ..modules.adaptive_input import band_dims, check_cutoff
from ..modules.char_cnn import CharCNNOptions
from ..modules.define import ACTIVATIONS, DefineOptions, define_layout
from ..modules.vocab_layers import TIE_ALL, TIE_NONE, TIE_WEIGHTS, InputSpec, OutputSpec

logger = logging.getLogger(__name__)
AUTO = "auto"
DEFINE_DEFAULTS = DefineOptions()


@dataclass(frozen=True)
class Side:
    """The flags (attribute names) that describe one side, and how that side gets cutoffs."""

    adaptive_input: str
    cutoffs: Tuple[str, ...]  # read in order: the first one set wins
    define_dim: str
    model_dim: str
    input_dim: Optional[str]
    scores: bool  # a decoder: it has an output layer
    cutoff_hint: str


LM = Side("adaptive_input", ("adaptive_input_cutoff",), "define_dim", "decoder_embed_dim", "decoder_input_dim", True,
          "e.g. 20000,60000, or auto with --task adaptive_language_modeling (see --cutoff-coverage)")
_MT_HINT = "e.g. 4000,12000: scripts/prepare_mt.py writes cutoffs for your dictionary to cutoffs.txt"
MT_ENCODER = Side("encoder_adaptive_input", ("encoder_adaptive_input_cutoff", "adaptive_input_cutoff"),
                  "encoder_define_dim", "encoder_embed_dim", None, False, _MT_HINT)
MT_DECODER = Side("adaptive_input", ("adaptive_input_cutoff",), "decoder_define_dim", "decoder_embed_dim",
                  "decoder_input_dim", True, _MT_HINT)


@dataclass(frozen=True)
class VocabLayers:
    input: InputSpec
    output: Optional[OutputSpec]
    derived: Tuple[str, ...] = ()  # the cutoff flags given as auto (or left unset with adaptive input), derived


AutoCutoffs = Optional[Callable[[], List[int]]]


def read_cutoff(args, name: str, hint: str, auto: AutoCutoffs, derived: List[str], unset_is_auto: bool = False):
    """The cutoffs of flag ``name``: parsed, or derived by ``auto`` where they are ``auto`` (or unset, where that
    means auto); the flags derived are appended to ``derived``."""
    value = _get(args, name)
    if auto is not None and (is_auto(value) or (unset_is_auto and value in (None, ""))):
        derived.append(name)
        return list(auto())
    return parse_cutoff(value, name, hint)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def is_auto(value) -> bool:
    return isinstance(value, str) and value.strip() == AUTO


def parse_cutoff(value, name: str, hint: str) -> Optional[List[int]]:
    """``"20000,60000"`` (or a list) -> ``[20000, 60000]``; ``None``/empty -> ``None``."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return None
    if is_auto(value):
        raise ValueError(f"{flag(name)}=auto needs the dictionary's counts, which only --task "
                         f"adaptive_language_modeling derives cutoffs from: give explicit cutoffs ({hint})")
    items = value.strip().strip("[]()").split(",") if isinstance(value, str) else list(value)
    try:
        return [int(str(x).strip()) for x in items if str(x).strip()]
    except ValueError:
        raise ValueError(f"{flag(name)}={value!r} is not a comma-separated list of integers ({hint})") from None


def _get(args, name: str, default=None):
    return safe_getattr(args, name, default)


def fraction(args, name: str, default: float) -> float:
    """A dropout probability flag, checked to lie in [0, 1)."""
    value = _get(args, name, default)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{flag(name)}={value} must lie in [0, 1): it is a dropout probability")
    return value


def define_options(args) -> DefineOptions:
    """DeFINE's options from the ``--define-*`` flags (the released unit's defaults where absent)."""
    d = DEFINE_DEFAULTS
    options = DefineOptions(
        expand_dim=_get(args, "define_expand_dim", d.expand_dim),
        n_layers=_get(args, "define_layers", d.n_layers),
        max_groups=_get(args, "define_max_groups", d.max_groups),
        proj_dim=_get(args, "define_proj_dim", d.proj_dim),
        transform=_get(args, "define_transform", d.transform),
        connection=_get(args, "define_connection", d.connection),
        activation=_get(args, "define_activation", d.activation),
        dropout=fraction(args, "define_dropout", d.dropout),
        embed_dropout=fraction(args, "define_embed_dropout", d.embed_dropout),
        cache=bool(_get(args, "define_cache", d.cache)),
        reduce=not _get(args, "define_no_reduce", not d.reduce),
    )
    # the transform and the connection are checked by define_layout (see _define), which names the same flags
    if options.activation not in ACTIVATIONS:
        raise ValueError(f"--define-activation={options.activation!r}: choose one of {', '.join(ACTIVATIONS)}")
    if options.proj_dim is not None and options.proj_dim <= 0:
        raise ValueError(f"--define-proj-dim={options.proj_dim} must be positive (unset: the model width / 2)")
    return options


def _define(args, side: Side, width: int, model_dim: int, wide_input: bool) -> DefineOptions:
    """DeFINE's options, checked together with the widths they meet (``wide_input``: the body reads an input of any
    width, so the unit may end at k)."""
    options = define_options(args)
    if not options.reduce and not wide_input:
        raise ValueError(
            f"--define-no-reduce feeds DeFINE's k-wide output ({options.expand_dim}) to the body, which only the LSTM "
            f"reads (its first layer takes any width); this model's layers all run at {flag(side.model_dim)}: drop "
            f"--define-no-reduce"
        )
    if options.expand_dim < width:
        raise ValueError(
            f"--define-expand-dim={options.expand_dim} is narrower than {flag(side.define_dim)}={width}: DeFINE "
            f"expands the n-wide embedding to k, so k must be at least n (the paper: n=128, k=1024 or 4096)"
        )
    # the unit's own layout checks (group counts that split every width, k at least d, the transform and the
    # connection), before anything is built
    layout = define_layout(options.projected_width(model_dim), options.expand_dim, options.unit_width(model_dim),
                           options.n_layers, options.max_groups, options.transform, options.connection)
    reached = max(spec.groups for spec in layout)
    if options.transform == "hgt" and reached < options.max_groups:
        # the released default (8 groups at N=3) is such a case: named, not refused
        logger.info(f"--define-max-groups={options.max_groups} with --define-layers={options.n_layers}: the group rule "
                    f"reaches {reached} (groups {', '.join(str(spec.groups) for spec in layout)}): the unit of "
                    f"--define-max-groups={reached}")
    return options


def check_frequency_sorted(dictionary, what: str = "dict.txt") -> None:
    """Adaptive bands are ranges of dictionary indices: the dictionary must list words by decreasing count."""
    counts = [int(c) for c in dictionary.count[dictionary.nspecial:]]
    for i in range(1, len(counts)):
        if counts[i] > counts[i - 1]:
            k = dictionary.nspecial + i
            raise ValueError(
                f"the dictionary ({what}) is not sorted by frequency: entry {k} '{dictionary[k]}' has count "
                f"{counts[i]} > {counts[i - 1]} of entry {k - 1} '{dictionary[k - 1]}'. Adaptive bands are index "
                f"ranges, so rebuild it with fairseq-preprocess (without --srcdict), or sort {what} by count"
            )


def describe(args, dictionary, side: Side = LM, auto_cutoffs: AutoCutoffs = None,
             dict_file: str = "dict.txt", wide_input: bool = False) -> VocabLayers:
    """One side's vocabulary layers from the flags and the dictionary (``dict_file``, for messages), validated.
    ``auto_cutoffs`` derives the cutoffs given as ``auto`` (our language-modelling task passes one; elsewhere ``auto``
    is refused with the fix). ``wide_input``: the body reads an input wider than its model width (the LSTM), which
    DeFINE without its reduction gives."""
    check_removed_flags(args)
    vocab = len(dictionary)
    model_dim = _get(args, side.model_dim)
    raw_define = _get(args, side.define_dim)
    if raw_define is not None and raw_define < 0:
        raise ValueError(f"{flag(side.define_dim)}={raw_define} must be positive: the width n of the embedding that "
                         f"DeFINE expands (0 or unset: no DeFINE)")
    define_dim = raw_define or None
    adaptive = bool(_get(args, side.adaptive_input, False))
    input_dim = _get(args, side.input_dim) if side.input_dim else None
    if define_dim is not None and input_dim not in (None, model_dim):
        raise ValueError(
            f"{flag(side.input_dim)}={input_dim} has no meaning with {flag(side.define_dim)}: DeFINE maps tokens to "
            f"{flag(side.define_dim)} and reduces them to {flag(side.model_dim)}; drop {flag(side.input_dim)}"
        )
    width = define_dim or input_dim or model_dim
    factor = _get(args, "adaptive_input_factor", 4.0)

    cutoff, derived = None, []
    if adaptive:
        name = next((n for n in side.cutoffs if _get(args, n) not in (None, "")), side.cutoffs[0])
        cutoff = read_cutoff(args, name, side.cutoff_hint, auto_cutoffs, derived, unset_is_auto=True)
        if cutoff is None:
            raise ValueError(f"{flag(side.adaptive_input)} needs {' or '.join(map(flag, side.cutoffs))} "
                             f"({side.cutoff_hint})")
        check_cutoff(cutoff, vocab, flag(name))
        band_dims(width, factor, len(cutoff) + 1, "--adaptive-input-factor")
    define = _define(args, side, width, model_dim, wide_input) if define_dim is not None else None
    chars = character_cnn(args, side, adaptive, define_dim, input_dim, model_dim)
    square_proj = not _get(args, "adaptive_input_no_square_proj", False)
    if not square_proj and (not adaptive or (define is None and width != model_dim)):
        raise ValueError(f"--adaptive-input-no-square-proj leaves out the projection of an adaptive input's first band "
                         f"when it is as wide as the band's output: it needs {flag(side.adaptive_input)} with a first "
                         f"band of {flag(side.model_dim)} ({model_dim}; now {width})")
    spec = InputSpec(vocab, dictionary.pad(), model_dim, width, tuple(cutoff) if cutoff else None, factor, define,
                     not _get(args, "no_scale_embedding", False), chars, square_proj)
    output = _describe_output(args, vocab, side, spec, auto_cutoffs, derived) if side.scores else None
    if spec.adaptive or (output is not None and output.adaptive):
        check_frequency_sorted(dictionary, dict_file)
    return VocabLayers(spec, output, tuple(derived))


def character_cnn(args, side: Side, adaptive: bool, define_dim, input_dim, model_dim) -> Optional[CharCNNOptions]:
    """``--character-embeddings`` (fairseq's flags): word vectors from a character CNN, which replaces the table."""
    if not _get(args, "character_embeddings", False):
        return None
    if side is not LM:
        raise ValueError("--character-embeddings is supported for language models only")
    for name, value in ((side.adaptive_input, adaptive), (side.define_dim, define_dim)):
        if value:
            raise ValueError(f"--character-embeddings builds word vectors from characters: drop {flag(name)}")
    if input_dim not in (None, model_dim):
        raise ValueError(f"--character-embeddings projects to {flag(side.model_dim)}: drop {flag(side.input_dim)}")
    raw = _get(args, "character_filters", None)
    try:
        filters = tuple((int(w), int(c)) for w, c in ast.literal_eval(str(raw)))
    except (ValueError, SyntaxError, TypeError):
        raise ValueError(f"--character-filters={raw!r} is not a list of (width, features) pairs, e.g. "
                         f"\"[(1, 128), (2, 256), (3, 384)]\"") from None
    if not filters or any(w < 1 or c < 1 for w, c in filters):
        raise ValueError(f"--character-filters={raw!r}: give positive (width, features) pairs")
    char_dim = _get(args, "character_embedding_dim", 4)
    highway = _get(args, "char_embedder_highway_layers", 2)
    if char_dim < 1 or highway < 0:
        raise ValueError(f"--character-embedding-dim={char_dim} must be positive and --char-embedder-highway-layers="
                         f"{highway} at least 0")
    return CharCNNOptions(filters, char_dim, highway)


def check_one_input_layer(args, src_dict, tgt_dict) -> None:
    """``--share-all-embeddings``: one input layer serves the encoder, the decoder and (as the flags say) the output
    layer, so both sides' flags must describe the same layer over one joined dictionary."""
    if src_dict != tgt_dict:
        raise ValueError("--share-all-embeddings needs a joined dictionary: preprocess with --joined-dictionary "
                         "(scripts/prepare_mt.py does)")
    pairs = [("--encoder-embed-dim", args.encoder_embed_dim, "--decoder-embed-dim", args.decoder_embed_dim),
             ("--encoder-adaptive-input", args.encoder_adaptive_input, "--adaptive-input", args.adaptive_input),
             ("--encoder-define-dim", args.encoder_define_dim, "--decoder-define-dim", args.decoder_define_dim)]
    for enc_flag, enc, dec_flag, dec in pairs:
        if bool(enc) != bool(dec) or (enc and enc != dec):
            raise ValueError(f"--share-all-embeddings uses one input layer for both sides: {enc_flag} ({enc}) must "
                             f"equal {dec_flag} ({dec})")
    if args.encoder_adaptive_input_cutoff not in (None, args.adaptive_input_cutoff):
        raise ValueError("--share-all-embeddings: drop --encoder-adaptive-input-cutoff (one adaptive input serves "
                         "both sides, with --adaptive-input-cutoff)")
    if _get(args, "decoder_input_dim") not in (None, args.encoder_embed_dim):
        raise ValueError(f"--share-all-embeddings uses one input layer for both sides, of --encoder-embed-dim "
                         f"({args.encoder_embed_dim}): drop --decoder-input-dim ({args.decoder_input_dim})")


def check_removed_flags(args) -> None:
    """Flags still accepted (``models/config.py``) so that an old command fails with the fix, not silently."""
    chunk = _get(args, "adaptive_softmax_chunk") or 0
    if chunk > 0:
        raise ValueError(f"--adaptive-softmax-chunk={chunk} was removed: every loss and score now runs block by block "
                         "through one engine, which bounds memory without it; drop the flag")


@dataclass(frozen=True)
class _OutputFlags:
    """The output layer's flags, read and checked among themselves."""

    cutoff: Optional[List[int]]
    factor: float
    dropout: float
    tie_weights: bool  # --tie-adaptive-weights
    tie_proj: bool  # --tie-adaptive-proj
    share: bool  # a full softmax shares the input table
    share_flag: str  # the flag that asks for ``share``, for messages


def _describe_output(args, vocab: int, side: Side, tied_to: InputSpec, auto_cutoffs: AutoCutoffs,
                     derived: List[str]) -> OutputSpec:
    """The output layer of a side whose input layer is ``tied_to`` (what a tied output shares): its flags, what it
    shares with ``tied_to``, and the width it scores at, each checked in that order."""
    flags = _read_output_flags(args, vocab, side, auto_cutoffs, derived)
    tie = _decide_tie(flags, tied_to)
    width = _output_width(args, flags, tie, tied_to)
    if flags.tie_weights:
        _check_tied_clusters(flags, side, tied_to)
    if tie != TIE_NONE:
        _check_tied_width(width, flags, side, tied_to)
    cluster_projs = _cluster_projs(args, flags, tie, tied_to, width)
    head_proj = bool(_get(args, "adaptive_softmax_head_proj", False))
    if head_proj and (flags.cutoff is None or (tie != TIE_NONE and not tied_to.adaptive)):
        raise ValueError("--adaptive-softmax-head-proj projects the head of an adaptive softmax over its own or an "
                         "adaptive input's word rows: give --adaptive-softmax-cutoff, and --adaptive-input where it is "
                         "tied (Transformer-XL's div_val 1 clusters over a plain table have no head projection)")
    return OutputSpec(vocab, tied_to.model_dim, width, tuple(flags.cutoff) if flags.cutoff else None, flags.factor,
                      flags.dropout, tie, bool(_get(args, "output_bias", False)), head_proj, cluster_projs)


def _cluster_projs(args, flags: _OutputFlags, tie: str, tied_to: InputSpec, width: int) -> Optional[Tuple[bool, ...]]:
    """``--tie-projs``: per cluster, head first, whether it reads the plain input table's projection (1) or its own
    (0); only where the clusters are tied to a plain table narrower than the model (which it projects)."""
    raw = _get(args, "tie_projs", None)
    if raw in (None, ""):
        return None
    items = [x.strip() for x in str(raw).split(",")]
    if any(x not in ("0", "1") for x in items):
        raise ValueError(f"--tie-projs={raw!r}: give 0 or 1 per softmax cluster, head first, e.g. 0,1,1,1")
    plain_narrower = (tie != TIE_NONE and flags.cutoff is not None and not tied_to.adaptive
                      and tied_to.define is None and tied_to.char_cnn is None and width != tied_to.model_dim)
    if not plain_narrower:
        raise ValueError("--tie-projs chooses each cluster's projection for a clustered softmax tied to a plain table "
                         "narrower than the model (--decoder-input-dim below --decoder-embed-dim, "
                         "--tie-adaptive-weights, --adaptive-softmax-factor 1): this model has no such projection")
    if len(items) != len(flags.cutoff) + 1:
        raise ValueError(f"--tie-projs={raw}: one entry per softmax cluster, head first ({len(flags.cutoff) + 1} for "
                         f"--adaptive-softmax-cutoff {','.join(map(str, flags.cutoff))})")
    return tuple(x == "1" for x in items)


def _read_output_flags(args, vocab: int, side: Side, auto_cutoffs: AutoCutoffs, derived: List[str]) -> _OutputFlags:
    """The output layer's cutoffs (parsed, or derived where ``auto``), factor, dropout and tying flags."""
    hint = side.cutoff_hint.replace("20000,60000", "20000,60000 as --adaptive-input-cutoff")
    cutoff = read_cutoff(args, "adaptive_softmax_cutoff", hint, auto_cutoffs, derived)
    tie_weights = bool(_get(args, "tie_adaptive_weights", False))
    tie_proj = bool(_get(args, "tie_adaptive_proj", False))
    share = bool(_get(args, "share_decoder_input_output_embed", False))
    share_all = bool(_get(args, "share_all_embeddings", False))
    dropout = fraction(args, "adaptive_softmax_dropout", 0.0)
    factor = _get(args, "adaptive_softmax_factor", 4.0)
    if tie_proj and not tie_weights:
        raise ValueError("--tie-adaptive-proj needs --tie-adaptive-weights")
    if cutoff is not None:
        check_cutoff(cutoff, vocab, "--adaptive-softmax-cutoff")
        if share and not share_all:  # with --share-all-embeddings, earlier versions dropped the flag here
            raise ValueError("--share-decoder-input-output-embed ties a full softmax to a plain embedding; with an "
                             "adaptive softmax use --tie-adaptive-weights instead")
    # a full softmax shares the one input layer of --share-all-embeddings (translation)
    share_flag = "--share-all-embeddings" if share_all else "--share-decoder-input-output-embed"
    return _OutputFlags(cutoff, factor, dropout, tie_weights, tie_proj, cutoff is None and (share or share_all),
                        share_flag)


def _decide_tie(flags: _OutputFlags, tied_to: InputSpec) -> str:
    """What the output layer shares with the input layer ``tied_to`` (``TIE_NONE``, ``TIE_WEIGHTS``, ``TIE_ALL``),
    checked against that layer."""
    if flags.share and tied_to.adaptive:
        raise ValueError(f"{flags.share_flag} ties a full softmax to a plain embedding; with adaptive input add "
                         f"--adaptive-softmax-cutoff (equal to the input's) and --tie-adaptive-weights")
    if flags.tie_weights:
        tie = TIE_ALL if flags.tie_proj else TIE_WEIGHTS
    else:
        tie = TIE_WEIGHTS if flags.share else TIE_NONE
    if tie != TIE_NONE and tied_to.char_cnn is not None:
        raise ValueError("--character-embeddings has no word table to tie the output layer to: drop "
                         "--tie-adaptive-weights / --share-decoder-input-output-embed")
    return tie


def _check_tied_clusters(flags: _OutputFlags, side: Side, tied_to: InputSpec) -> None:
    """``--tie-adaptive-weights``: the clusters' word rows are the input's, so their bands must be the input's."""
    cutoff, factor = flags.cutoff, flags.factor
    if cutoff is None:
        raise ValueError("--tie-adaptive-weights ties the adaptive softmax to the input layer: it needs "
                         "--adaptive-softmax-cutoff")
    if not tied_to.adaptive:
        # Transformer-XL's clustered softmax (div_val 1): every cluster scores at the plain table's width
        if factor != 1:
            raise ValueError(
                f"--tie-adaptive-weights without {flag(side.adaptive_input)} ties the clusters' word rows to the plain "
                f"embedding table (Transformer-XL's layers), so every cluster scores at its width: give "
                f"--adaptive-softmax-factor 1 (now {factor}), or add {flag(side.adaptive_input)} for bands that shrink")
        if flags.tie_proj:
            raise ValueError(f"--tie-adaptive-proj has no projection to tie without {flag(side.adaptive_input)}: "
                             f"drop it")
        return
    if list(cutoff) != list(tied_to.cutoff):
        raise ValueError(f"--tie-adaptive-weights needs --adaptive-softmax-cutoff ({','.join(map(str, cutoff))}) "
                         f"equal to --adaptive-input-cutoff ({','.join(map(str, tied_to.cutoff))})")
    if tied_to.factor != factor:
        raise ValueError(f"--tie-adaptive-weights needs --adaptive-softmax-factor ({factor}) equal to "
                         f"--adaptive-input-factor ({tied_to.factor})")


def _shared_width(tied_to: InputSpec) -> int:
    """The width of what a tied output layer shares: the plain table's, n under DeFINE (through an m -> n
    projection), m for an adaptive input's projections."""
    return tied_to.width if tied_to.define is not None or not tied_to.adaptive else tied_to.model_dim


def _output_width(args, flags: _OutputFlags, tie: str, tied_to: InputSpec) -> int:
    """The width the softmax scores at (tied: that of what it shares; untied: the model width, unless
    --decoder-output-dim), checked against its bands."""
    width = _get(args, "decoder_output_dim") or (_shared_width(tied_to) if tie != TIE_NONE else tied_to.model_dim)
    if flags.cutoff is not None:
        band_dims(width, flags.factor, len(flags.cutoff) + 1, "--adaptive-softmax-factor")
    return width


def _check_tied_width(width: int, flags: _OutputFlags, side: Side, tied_to: InputSpec) -> None:
    """A tied output layer scores at the width of the table it shares."""
    shared = _shared_width(tied_to)
    if width != shared:
        source = flag(side.define_dim) if tied_to.define is not None else (
            flag(side.model_dim) if tied_to.adaptive else flag(side.input_dim or side.model_dim))
        tie_flag = "--tie-adaptive-weights" if flags.tie_weights else flags.share_flag
        raise ValueError(f"{tie_flag} shares an input table that ends at {source} ({shared}): "
                         f"--decoder-output-dim ({width}) must equal it")
