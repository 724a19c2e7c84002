"""``adaptive_lm``: fairseq's Transformer language model with our adaptive input, adaptive softmax and DeFINE.

The architectures reproduce the word-level rows of Table 3 of Baevski & Auli 2019 (https://arxiv.org/abs/1809.10853)
on WikiText-103 and the DeFINE language models of Mehta et al. 2020 (https://arxiv.org/abs/1911.12385, Tables 2
and 5); see docs/architectures.md for the parameter-count derivation of each. Flags become the description of
the vocabulary layers in ``vocab_flags.py``, built by ``modules/vocab_layers.py``.
"""

from dataclasses import dataclass, field
from typing import Optional, Tuple

from fairseq.models import register_model
from fairseq.models.transformer_lm import (
    DEFAULT_MAX_TARGET_POSITIONS,
    TransformerLanguageModel,
    TransformerLanguageModelConfig,
)
from fairseq.utils import safe_getattr

from .. import fairseq_fixes
from ..modules.vocab_layers import Embedder, build_embedder
from ..checks import check_dictionary, check_hub_paths, data_of, guard_task
from .config import DictionaryRecordConfig, FastPathConfig, LanguageModelDefineConfig
from .transformer_body import AdaptiveDecoder
from .vocab_flags import LM, VocabLayers, describe

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


LM_TASKS = ("language_modeling", "adaptive_language_modeling", "bptt_lm")


def lm_vocabulary_layers(args, task, wide_input: bool = False) -> Tuple[VocabLayers, Embedder]:
    """What every language model builds first: fairseq's fixes, the checks of the task and the dictionary, the
    description of its vocabulary layers (``wide_input``: see :func:`describe`) and the embedder."""
    fairseq_fixes.apply()
    dictionary = task.source_dictionary
    check_dictionary(args, dictionary, data_of(task))
    guard_task(task)
    layers = describe(args, dictionary, LM, wide_input=wide_input)
    return layers, build_embedder(layers.input, dictionary)


class CheckedHub:
    """``from_pretrained`` for our language models: fairseq's hub loader, after checking the folder, the checkpoint's
    kind and task, and the dictionary."""

    @classmethod
    def from_pretrained(cls, model_name_or_path, checkpoint_file="model.pt", data_name_or_path=".", **kwargs):
        check_hub_paths(cls, model_name_or_path, checkpoint_file, data_name_or_path, LM_TASKS,
                        lambda state: ["dict.txt"], "load a translation checkpoint with "
                        "AdaptiveTransformerModel.from_pretrained or fairseq-generate")
        return super().from_pretrained(model_name_or_path, checkpoint_file, data_name_or_path, **kwargs)


@register_model("adaptive_lm", dataclass=AdaptiveLMConfig)
class AdaptiveLanguageModel(CheckedHub, TransformerLanguageModel):
    """Transformer LM (pre-norm, as in the paper) between our embedder and scorer."""

    @classmethod
    def build_model(cls, args, task):
        layers, embedder = lm_vocabulary_layers(args, task)
        if args.decoder_layers_to_keep:
            args.decoder_layers = len(args.decoder_layers_to_keep.split(","))
        if safe_getattr(args, "max_target_positions", None) is None:
            args.max_target_positions = safe_getattr(args, "tokens_per_sample", DEFAULT_MAX_TARGET_POSITIONS)
        decoder = AdaptiveDecoder(args, task.target_dictionary, embedder, layers.output, no_encoder_attn=True)
        return cls(decoder)


