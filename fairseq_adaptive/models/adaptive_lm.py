"""``adaptive_lm``: fairseq's Transformer language model with our adaptive input, adaptive softmax and DeFINE.

The architectures reproduce the word-level rows of Table 3 of Baevski & Auli 2019 (https://arxiv.org/abs/1809.10853)
on WikiText-103 and the DeFINE language models of Mehta et al. 2020 (https://arxiv.org/abs/1911.12385, Tables 2
and 5); see docs/architectures.md for the parameter-count derivation of each. Flags become a model description in
``config.py``.
"""

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
from torch import nn

from .. import fairseq_fixes
from ..modules.adaptive_softmax import AdaptiveSoftmax
from ..modules.define import DeFINE
from .causal_attention import build_causal_decoder_layer
from .config import (
    DefineConfig,
    FastPathConfig,
    check_dictionary_size,
    data_of,
    define_options,
    input_layer_width,
    parse_cutoff,
    resolve_dims,
    uses_define,
    validate_config,
)
from .input_layers import adaptive_input_of, build_input_layer

__all__ = ["AdaptiveLMConfig", "AdaptiveDecoder", "AdaptiveLanguageModel"]


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
        validate_config(args, len(dictionary))
        if args.decoder_layers_to_keep:
            args.decoder_layers = len(args.decoder_layers_to_keep.split(","))
        if safe_getattr(args, "max_target_positions", None) is None:
            args.max_target_positions = safe_getattr(args, "tokens_per_sample", DEFAULT_MAX_TARGET_POSITIONS)
        if args.character_embeddings:
            raise ValueError("adaptive_lm does not support --character-embeddings: use transformer_lm for those")
        embed_tokens = build_lm_input_layer(args, dictionary)
        decoder = AdaptiveDecoder(args, task.target_dictionary, embed_tokens, no_encoder_attn=True)
        return cls(decoder)
