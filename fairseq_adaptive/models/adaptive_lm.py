"""``adaptive_lm``: fairseq's Transformer language model with our adaptive input, adaptive softmax and DeFINE.

The architectures reproduce the word-level rows of Table 3 of Baevski & Auli 2019 (https://arxiv.org/abs/1809.10853)
on WikiText-103 and the DeFINE language models of Mehta et al. 2020 (https://arxiv.org/abs/1911.12385, Tables 2
and 5); see README.md for the parameter-count derivation of each.
"""

import contextlib
from dataclasses import dataclass, field
from typing import Optional

from fairseq.models import register_model
from fairseq.models.transformer import Linear, TransformerConfig, TransformerDecoder
from fairseq.models.transformer_lm import (
    DEFAULT_MAX_TARGET_POSITIONS,
    TransformerLanguageModel,
    TransformerLanguageModelConfig,
)
from fairseq.utils import safe_getattr

from omegaconf import DictConfig, open_dict
from torch import nn

from ..modules.adaptive_input import band_dims, check_cutoff
from ..modules.adaptive_softmax import AdaptiveSoftmax
from .. import fairseq_fixes
from ..modules.define import DeFINE
from .causal_attention import build_causal_decoder_layer
from .input_layers import AUTO, DefineConfig, adaptive_input_of, build_input_layer, define_options, parse_cutoff

__all__ = ["AUTO", "AdaptiveLMConfig", "AdaptiveDecoder", "AdaptiveLanguageModel", "parse_cutoff"]

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


@dataclass
class AdaptiveLMConfig(TransformerLanguageModelConfig, DefineConfig, FastPathConfig):
    # fairseq's dataclass defaults these to 512 whatever the width, which silently adds projections to any
    # config that sets --decoder-embed-dim alone (hydra configs); None means "the decoder width".
    decoder_input_dim: Optional[int] = field(
        default=None, metadata={"help": "decoder input dimension (adaptive input: the first band's width)"}
    )
    decoder_output_dim: Optional[int] = field(
        default=None, metadata={"help": "decoder output dimension (the softmax input width)"}
    )
    dictionary_size: Optional[int] = field(
        default=None,
        metadata={"help": "set when the model is first built: its dictionary's size, checked when a checkpoint loads"},
    )
    define_dim: Optional[int] = field(
        default=None,
        metadata={
            "help": "DeFINE: width n of the token embedding (plain, or adaptive input with --adaptive-input) that "
            "DeFINE expands and reduces to --decoder-embed-dim; a tied softmax then scores at n. Unset: no DeFINE"
        },
    )


def decoder_define_dim(args) -> Optional[int]:
    """n of the decoder-side DeFINE: ``--define-dim`` (language model) or ``--decoder-define-dim`` (translation)."""
    return safe_getattr(args, "decoder_define_dim", None) or safe_getattr(args, "define_dim", None) or None


def define_flag(args) -> str:
    return "--decoder-define-dim" if safe_getattr(args, "decoder_define_dim", None) else "--define-dim"


def uses_define(args) -> bool:
    return decoder_define_dim(args) is not None


def resolve_dims(args) -> None:
    """Fill the dimensions that default to the decoder width, in place (Namespace or DictConfig).

    With DeFINE the input layer ends at the decoder width (no input projection) and a tied softmax scores at
    the DeFINE width n, so the output dimension defaults to n there."""
    tied = safe_getattr(args, "tie_adaptive_weights", False) or safe_getattr(
        args, "share_decoder_input_output_embed", False
    )
    if uses_define(args):
        if safe_getattr(args, "decoder_input_dim", None) not in (None, args.decoder_embed_dim):
            raise ValueError(
                f"--decoder-input-dim={args.decoder_input_dim} has no meaning with --define-dim: DeFINE maps "
                f"tokens to --define-dim and reduces them to --decoder-embed-dim; drop --decoder-input-dim"
            )
        if safe_getattr(args, "decoder_output_dim", None) is None and tied:
            args.decoder_output_dim = decoder_define_dim(args)
    for name in ("decoder_input_dim", "decoder_output_dim"):
        if safe_getattr(args, name, None) is None:
            setattr(args, name, args.decoder_embed_dim)


def input_layer_width(args) -> int:
    """Width of the plain or adaptive embedding (the one a tied softmax shares): n with DeFINE."""
    return decoder_define_dim(args) if uses_define(args) else args.decoder_input_dim


def build_lm_input_layer(args, dictionary) -> nn.Module:
    """Plain embedding, adaptive input, or DeFINE over either, from the model's config."""
    define = uses_define(args)
    return build_input_layer(
        dictionary,
        input_layer_width(args),
        args.decoder_embed_dim,
        adaptive_cutoff=parse_cutoff(args.adaptive_input_cutoff, "--adaptive-input-cutoff") if args.adaptive_input else None,
        adaptive_factor=args.adaptive_input_factor,
        define=define_options(args) if define else None,
    )


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


def validate_lm_config(args, vocab_size: int) -> None:
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
        if input_cutoff != softmax_cutoff:
            raise ValueError(
                f"--tie-adaptive-weights needs --adaptive-softmax-cutoff ({softmax_cutoff}) equal to "
                f"--adaptive-input-cutoff ({input_cutoff})"
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


class AdaptiveDecoder(TransformerDecoder):
    """fairseq's Transformer decoder whose adaptive softmax is ours (fp32 loss, DDP-safe, target-only scoring).

    fairseq drops the projection from the decoder width to ``--decoder-output-dim`` whenever adaptive weights are
    tied; DeFINE scores at its narrow width n < m through exactly that projection, so we keep it. Its
    full-sequence self-attention runs through causal SDPA (``causal_attention.py``) unless ``--no-causal-sdpa``.
    """

    def __init__(self, args, dictionary, embed_tokens, no_encoder_attn=False):
        super().__init__(args, dictionary, embed_tokens, no_encoder_attn=no_encoder_attn)
        if isinstance(embed_tokens, DeFINE):
            self.embed_scale = 1.0  # DeFINE scales its own map layer (--no-scale-embedding) and ends normalised
        if self.project_out_dim is None and self.embed_dim != self.output_embed_dim:
            self.project_out_dim = Linear(self.embed_dim, self.output_embed_dim, bias=False)

    def build_decoder_layer(self, args, no_encoder_attn=False):
        """Layers whose full-sequence self-attention runs through causal SDPA (``causal_attention.py``), unless
        ``--no-causal-sdpa`` or ``--cross-self-attention``."""
        if safe_getattr(args, "no_causal_sdpa", False) or safe_getattr(args, "cross_self_attention", False):
            return super().build_decoder_layer(args, no_encoder_attn)
        return build_causal_decoder_layer(TransformerConfig.from_namespace(args), no_encoder_attn)

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        """With a ``sample`` holding targets (fairseq's scorers: eval-lm, --score-reference), only the targets'
        entries are meaningful, as in fairseq's adaptive softmax; we compute those alone (no vocabulary-wide
        matrix) and return them as a stride-0 ``B x T x V`` view, which the scorers' ``gather`` reads."""
        adaptive_softmax = getattr(self, "adaptive_softmax", None)
        target = None if sample is None else sample.get("target")
        if adaptive_softmax is None or target is None:
            return super().get_normalized_probs(net_output, log_probs, sample)
        scores = adaptive_softmax.target_log_prob(net_output[0], target)
        scores = scores if log_probs else scores.exp()
        return scores.unsqueeze(-1).expand(*scores.shape, adaptive_softmax.vocab_size)

    def build_output_projection(self, cfg, dictionary, embed_tokens):
        cutoff = parse_cutoff(cfg.adaptive_softmax_cutoff, "--adaptive-softmax-cutoff")
        if cutoff is None and isinstance(embed_tokens, DeFINE) and cfg.share_decoder_input_output_embed:
            # the full softmax shares DeFINE's map table (V x n), not its output
            self.output_projection = nn.Linear(embed_tokens.input_dim, len(dictionary), bias=False)
            self.output_projection.weight = embed_tokens.map.weight
            return
        if cutoff is None:
            return super().build_output_projection(cfg, dictionary, embed_tokens)
        tied = cfg.tie_adaptive_weights
        self.adaptive_softmax = AdaptiveSoftmax(
            len(dictionary),
            self.output_embed_dim,
            cutoff,
            dropout=cfg.adaptive_softmax_dropout,
            factor=cfg.adaptive_softmax_factor,
            adaptive_input=adaptive_input_of(embed_tokens) if tied else None,
            tie_proj=cfg.tie_adaptive_proj,
        )


@register_model("adaptive_lm", dataclass=AdaptiveLMConfig)
class AdaptiveLanguageModel(TransformerLanguageModel):
    """Transformer LM (pre-norm, as in the paper) with adaptive input / adaptive softmax / full softmax."""

    @classmethod
    def build_model(cls, args, task):
        fairseq_fixes.apply()
        dictionary = task.source_dictionary
        check_dictionary_size(args, dictionary, data_of(task))
        resolve_dims(args)
        validate_lm_config(args, len(dictionary))
        if args.decoder_layers_to_keep:
            args.decoder_layers = len(args.decoder_layers_to_keep.split(","))
        if safe_getattr(args, "max_target_positions", None) is None:
            args.max_target_positions = safe_getattr(args, "tokens_per_sample", DEFAULT_MAX_TARGET_POSITIONS)
        if args.character_embeddings:
            raise ValueError("adaptive_lm does not support --character-embeddings: use transformer_lm for those")
        embed_tokens = build_lm_input_layer(args, dictionary)
        decoder = AdaptiveDecoder(args, task.target_dictionary, embed_tokens, no_encoder_attn=True)
        return cls(decoder)
