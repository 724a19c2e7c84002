"""``adaptive_lm``: fairseq's Transformer language model with our adaptive input and adaptive softmax.

The architectures reproduce the word-level rows of Table 3 of Baevski & Auli 2019 (https://arxiv.org/abs/1809.10853)
on WikiText-103; see README.md for the parameter-count derivation of each.
"""

from dataclasses import dataclass, field
from typing import List, Optional

from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import Embedding, TransformerDecoder
from fairseq.models.transformer_lm import (
    DEFAULT_MAX_TARGET_POSITIONS,
    TransformerLanguageModel,
    TransformerLanguageModelConfig,
    base_lm_architecture,
)
from fairseq.utils import safe_getattr

from ..modules.adaptive_input import AdaptiveInput
from ..modules.adaptive_softmax import AdaptiveSoftmax

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
class AdaptiveLMConfig(TransformerLanguageModelConfig):
    # fairseq's dataclass defaults these to 512 whatever the width, which silently adds projections to any
    # config that sets --decoder-embed-dim alone (hydra configs); None means "the decoder width".
    decoder_input_dim: Optional[int] = field(
        default=None, metadata={"help": "decoder input dimension (adaptive input: the first band's width)"}
    )
    decoder_output_dim: Optional[int] = field(
        default=None, metadata={"help": "decoder output dimension (the softmax input width)"}
    )
    adaptive_softmax_chunk: int = field(
        default=0,
        metadata={
            "help": "score the adaptive softmax's targets in chunks of this many classes, recomputing logits in "
            "backward instead of storing them (saves memory at large vocabularies; 0: materialise the logits)"
        },
    )


def resolve_dims(args) -> None:
    """Fill the dimensions that default to the decoder width, in place (Namespace or DictConfig)."""
    for name in ("decoder_input_dim", "decoder_output_dim"):
        if safe_getattr(args, name, None) is None:
            setattr(args, name, args.decoder_embed_dim)


def validate_lm_config(args, vocab_size: int) -> None:
    """Fail at build time, naming the flag and the fix, on combinations that would break deep in a forward."""
    input_cutoff = parse_cutoff(safe_getattr(args, "adaptive_input_cutoff"), "--adaptive-input-cutoff")
    softmax_cutoff = parse_cutoff(safe_getattr(args, "adaptive_softmax_cutoff"), "--adaptive-softmax-cutoff")
    if args.adaptive_input and input_cutoff is None:
        raise ValueError("--adaptive-input needs --adaptive-input-cutoff (e.g. 20000,60000, or auto)")
    for cutoff, flag in ((input_cutoff, "--adaptive-input-cutoff"), (softmax_cutoff, "--adaptive-softmax-cutoff")):
        if cutoff is not None and (cutoff != sorted(set(cutoff)) or cutoff[0] <= 0 or cutoff[-1] > vocab_size):
            raise ValueError(
                f"{flag}={','.join(map(str, cutoff))} must be positive, strictly increasing and at most the "
                f"dictionary size {vocab_size}"
            )
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
        if args.decoder_output_dim != args.decoder_embed_dim:
            raise ValueError(
                f"--tie-adaptive-weights scores the decoder's features directly: --decoder-output-dim "
                f"({args.decoder_output_dim}) must equal --decoder-embed-dim ({args.decoder_embed_dim})"
            )
    elif args.tie_adaptive_proj:
        raise ValueError("--tie-adaptive-proj needs --tie-adaptive-weights")
    if args.share_decoder_input_output_embed and (args.adaptive_input or softmax_cutoff is not None):
        raise ValueError(
            "--share-decoder-input-output-embed ties a full softmax to a plain embedding; with adaptive "
            "layers use --tie-adaptive-weights instead"
        )
    if args.share_decoder_input_output_embed and args.decoder_input_dim != args.decoder_output_dim:
        raise ValueError(
            f"--share-decoder-input-output-embed needs --decoder-input-dim ({args.decoder_input_dim}) equal to "
            f"--decoder-output-dim ({args.decoder_output_dim})"
        )
    if not 0.0 <= args.adaptive_softmax_dropout < 1.0:
        raise ValueError(f"--adaptive-softmax-dropout={args.adaptive_softmax_dropout} must lie in [0, 1)")


class AdaptiveLMDecoder(TransformerDecoder):
    """fairseq's Transformer decoder whose adaptive softmax is ours (fp32 loss, DDP-safe, target-only scoring)."""

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
        if cutoff is None:
            return super().build_output_projection(cfg, dictionary, embed_tokens)
        tied = cfg.tie_adaptive_weights
        self.adaptive_softmax = AdaptiveSoftmax(
            len(dictionary),
            self.embed_dim if tied else self.output_embed_dim,
            cutoff,
            dropout=cfg.adaptive_softmax_dropout,
            factor=cfg.adaptive_softmax_factor,
            adaptive_input=embed_tokens if tied else None,
            tie_proj=cfg.tie_adaptive_proj,
            # fairseq's TransformerConfig drops fields it does not know: read ours from the original args
            chunk_size=safe_getattr(self.args, "adaptive_softmax_chunk", 0) or 0,
        )


@register_model("adaptive_lm", dataclass=AdaptiveLMConfig)
class AdaptiveLanguageModel(TransformerLanguageModel):
    """Transformer LM (pre-norm, as in the paper) with adaptive input / adaptive softmax / full softmax."""

    @classmethod
    def build_model(cls, args, task):
        resolve_dims(args)
        dictionary = task.source_dictionary
        validate_lm_config(args, len(dictionary))
        if args.decoder_layers_to_keep:
            args.decoder_layers = len(args.decoder_layers_to_keep.split(","))
        if safe_getattr(args, "max_target_positions", None) is None:
            args.max_target_positions = safe_getattr(args, "tokens_per_sample", DEFAULT_MAX_TARGET_POSITIONS)
        if args.character_embeddings:
            raise ValueError("adaptive_lm does not support --character-embeddings: use transformer_lm for those")
        if args.adaptive_input:
            embed_tokens = AdaptiveInput(
                len(dictionary),
                dictionary.pad(),
                args.decoder_input_dim,
                args.adaptive_input_factor,
                args.decoder_embed_dim,
                parse_cutoff(args.adaptive_input_cutoff, "--adaptive-input-cutoff"),
            )
        else:
            embed_tokens = Embedding(len(dictionary), args.decoder_input_dim, dictionary.pad())
        decoder = AdaptiveLMDecoder(args, task.target_dictionary, embed_tokens, no_encoder_attn=True)
        return cls(decoder)


# ----------------------------------------------------------------------------------------------- architectures
def _set(args, **defaults) -> None:
    for name, value in defaults.items():
        setattr(args, name, safe_getattr(args, name, value))


@register_model_architecture("adaptive_lm", "adaptive_lm_tiny")
def adaptive_lm_tiny(args):
    """A few-thousand-parameter body for tests and CPU demos; cutoffs derived from the dictionary."""
    _set(
        args,
        decoder_layers=2,
        decoder_embed_dim=32,
        decoder_ffn_embed_dim=64,
        decoder_attention_heads=2,
        dropout=0.0,
        adaptive_input=True,
        adaptive_input_cutoff=AUTO,
        adaptive_softmax_cutoff=AUTO,
        adaptive_input_factor=2,
        adaptive_softmax_factor=2,
        tie_adaptive_weights=True,
        tie_adaptive_proj=True,
    )
    base_lm_architecture(args)


def _wiki103_body(args):
    """Table 3 of Baevski & Auli 2019: 16 pre-norm blocks, d=1024, FFN 4096, 8 heads, dropout 0.3/0.1/0.1."""
    _set(
        args,
        decoder_layers=16,
        decoder_embed_dim=1024,
        decoder_ffn_embed_dim=4096,
        decoder_attention_heads=8,
        dropout=0.3,
        attention_dropout=0.1,
        activation_dropout=0.1,
        no_decoder_final_norm=True,
    )


def _wiki103_adaptive_softmax(args):
    """Bands of 20K / 40K / rest, shrinking by a factor of 4, tail dropout 0.2 (Section 4.3 of the paper)."""
    _set(args, adaptive_softmax_cutoff="20000,60000", adaptive_softmax_factor=4, adaptive_softmax_dropout=0.2)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_sm")
def adaptive_lm_wiki103_sm(args):
    """SM: 512-d word embeddings projected to 1024, full softmax over a 1024 -> 512 projection (476.8M)."""
    _wiki103_body(args)
    _set(args, decoder_input_dim=512, decoder_output_dim=512)
    base_lm_architecture(args)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_sm_t")
def adaptive_lm_wiki103_sm_t(args):
    """SM-T: SM with the input embedding and the softmax weights tied (339.7M)."""
    _set(args, share_decoder_input_output_embed=True)
    adaptive_lm_wiki103_sm(args)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_asm")
def adaptive_lm_wiki103_asm(args):
    """ASM: 64-d word embeddings projected to 1024, adaptive softmax at 1024 (263.1M)."""
    _wiki103_body(args)
    _wiki103_adaptive_softmax(args)
    _set(args, decoder_input_dim=64)
    base_lm_architecture(args)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_adp")
def adaptive_lm_wiki103_adp(args):
    """ADP: adaptive input and adaptive softmax with the same bands, nothing shared (291.3M)."""
    _wiki103_body(args)
    _wiki103_adaptive_softmax(args)
    _set(args, adaptive_input=True, adaptive_input_cutoff="20000,60000", adaptive_input_factor=4)
    base_lm_architecture(args)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_adp_t")
@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103")
def adaptive_lm_wiki103_adp_t(args):
    """ADP-T, the paper's WikiText-103 model: embeddings and all but the head projection shared (246.9M)."""
    _set(args, tie_adaptive_weights=True, tie_adaptive_proj=True)
    adaptive_lm_wiki103_adp(args)


@register_model_architecture("adaptive_lm", "adaptive_lm_gbw_adp_t")
@register_model_architecture("adaptive_lm", "adaptive_lm_gbw")
def adaptive_lm_gbw_adp_t(args):
    """Billion Word ADP-T: bands of 60K / 100K / rest, tied embeddings, projections not shared.

    The body follows fairseq's ``transformer_lm_gbw`` (12 blocks, FFN 4096, 16 heads, dropout 0.1) at width 1024.
    """
    _set(
        args,
        decoder_layers=12,
        decoder_embed_dim=1024,
        decoder_ffn_embed_dim=4096,
        decoder_attention_heads=16,
        dropout=0.1,
        attention_dropout=0.1,
        no_decoder_final_norm=True,
        adaptive_input=True,
        adaptive_input_cutoff="60000,160000",
        adaptive_input_factor=4,
        adaptive_softmax_cutoff="60000,160000",
        adaptive_softmax_factor=4,
        tie_adaptive_weights=True,
        tie_adaptive_proj=False,
    )
    base_lm_architecture(args)
