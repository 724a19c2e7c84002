"""``adaptive_lm``: fairseq's Transformer language model with our adaptive input, adaptive softmax and DeFINE.

The architectures reproduce the word-level rows of Table 3 of Baevski & Auli 2019 (https://arxiv.org/abs/1809.10853)
on WikiText-103 and the DeFINE language models of Mehta et al. 2020 (https://arxiv.org/abs/1911.12385, Tables 2
and 5); see docs/architectures.md for the parameter-count derivation of each. Flags become the description of
the vocabulary layers in ``vocab_flags.py``, built by ``modules/vocab_layers.py``; what every language model shares
(the vocabulary step, the hub loader) is ``lm_base.LanguageModelBase``.
"""

from dataclasses import dataclass, field
from typing import Optional

from fairseq.models import register_model
from fairseq.models.transformer_lm import (
    DEFAULT_MAX_TARGET_POSITIONS,
    TransformerLanguageModel,
    TransformerLanguageModelConfig,
)
from fairseq.utils import safe_getattr

from .config import DictionaryRecordConfig, FastPathConfig, LanguageModelDefineConfig
from .lm_base import LanguageModelBase
from .transformer_body import AdaptiveDecoder

__all__ = ["AdaptiveLMConfig", "AdaptiveLanguageModel"]


@dataclass
class AdaptiveLMConfig(TransformerLanguageModelConfig, LanguageModelDefineConfig, FastPathConfig,
                       DictionaryRecordConfig):
    # fairseq's dataclass defaults these to 512 whatever the width, which silently adds projections to any
    # config that sets --decoder-embed-dim alone (hydra configs); None lets the vocabulary description derive them
    decoder_input_dim: Optional[int] = field(
        default=None, metadata={"help": "decoder input dimension (adaptive input: the first band's width)"}
    )
    decoder_output_dim: Optional[int] = field(
        default=None, metadata={"help": "decoder output dimension (the softmax input width)"}
    )


@register_model("adaptive_lm", dataclass=AdaptiveLMConfig)
class AdaptiveLanguageModel(LanguageModelBase, TransformerLanguageModel):
    """Transformer LM (pre-norm, as in the paper) between our embedder and scorer."""

    @classmethod
    def build_body(cls, args, task, layers, embedder):
        if args.decoder_layers_to_keep:
            args.decoder_layers = len(args.decoder_layers_to_keep.split(","))
        if safe_getattr(args, "max_target_positions", None) is None:
            args.max_target_positions = safe_getattr(args, "tokens_per_sample", DEFAULT_MAX_TARGET_POSITIONS)
        decoder = AdaptiveDecoder(args, task.target_dictionary, embedder, layers.output, no_encoder_attn=True)
        return cls(decoder)


