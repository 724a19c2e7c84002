"""fairseq's Transformer encoder and decoder as bodies between our vocabulary layers: the encoder reads an
:class:`Embedder`; the decoder reads one and ends in a :class:`Scorer` (``modules/vocab_layers.py``).

fairseq's own classes build their input projection, embedding scale, output projection and softmax from flags; here
the embedder and scorer own all of those, so fairseq is handed a view of the flags in which the vocabulary layers are
plain (model-width input and output, no adaptive softmax, no tying) and builds only the body. The decoder's output
(``features_only`` or not) is the scorer's input: features of the model width, as fairseq's decoders return them
with an adaptive softmax; ``get_normalized_probs`` turns them into log-probabilities through the scorer
(``Scorer.normalized_probs``).
"""

import argparse
import copy

from fairseq.models.transformer import TransformerConfig, TransformerDecoder, TransformerEncoder
from fairseq.utils import safe_getattr
from omegaconf import DictConfig

from ..checks import writable
from ..modules.vocab_layers import Embedder, OutputSpec, build_scorer, upgrade_state_dict
from .causal_attention import build_causal_decoder_layer


def body_view(args, model_dim: int):
    """A copy of ``args`` in which fairseq builds no vocabulary layer of its own (the body alone)."""
    view = copy.deepcopy(args) if isinstance(args, DictConfig) else argparse.Namespace(**vars(args))
    plain = dict(decoder_input_dim=model_dim, decoder_output_dim=model_dim, adaptive_softmax_cutoff=None,
                 tie_adaptive_weights=False, tie_adaptive_proj=False, share_decoder_input_output_embed=False,
                 no_scale_embedding=True)
    with writable(view):
        for name, value in plain.items():
            setattr(view, name, value)
    return view


class AdaptiveEncoder(TransformerEncoder):
    """fairseq's Transformer encoder reading an :class:`Embedder` (which scales and projects by itself)."""

    def __init__(self, args, dictionary, embedder: Embedder):
        super().__init__(body_view(args, embedder.embedding_dim), dictionary, embedder)

    def upgrade_state_dict_named(self, state_dict, name):
        upgrade_state_dict(state_dict, name, scorer=False)
        return super().upgrade_state_dict_named(state_dict, name)


class AdaptiveDecoder(TransformerDecoder):
    """fairseq's Transformer decoder between an :class:`Embedder` and the :class:`Scorer` of ``output``.

    Its full-sequence self-attention runs through causal SDPA (``causal_attention.py``) unless ``--no-causal-sdpa``.
    """

    def __init__(self, args, dictionary, embedder: Embedder, output: OutputSpec, no_encoder_attn=False):
        if safe_getattr(args, "base_layers", 0):
            raise ValueError("--base-layers is not supported by this package's models")
        self.output_spec = output  # read by build_output_projection, which fairseq's __init__ calls
        # read here: fairseq's TransformerConfig keeps unknown flags of a Namespace only, not of a DictConfig
        self.causal_sdpa = not (safe_getattr(args, "no_causal_sdpa", False)
                                or safe_getattr(args, "cross_self_attention", False))
        super().__init__(body_view(args, embedder.embedding_dim), dictionary, embedder, no_encoder_attn)

    def build_output_projection(self, cfg, dictionary, embed_tokens):
        # fairseq calls this after the layers, so a seed initialises the scorer after the body, as it always has
        self.scorer = build_scorer(self.output_spec, embed_tokens)

    def build_decoder_layer(self, args, no_encoder_attn=False):
        """Layers whose full-sequence self-attention runs through causal SDPA (``causal_attention.py``), unless
        ``--no-causal-sdpa`` or ``--cross-self-attention``."""
        if not self.causal_sdpa:
            return super().build_decoder_layer(args, no_encoder_attn)
        return build_causal_decoder_layer(TransformerConfig.from_namespace(args), no_encoder_attn)

    def output_layer(self, features):
        """The scorer's input: model-width features (no ``B x T x V`` logits; see ``get_normalized_probs``)."""
        return features

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        return self.scorer.normalized_probs(net_output[0], log_probs, sample)

    def upgrade_state_dict_named(self, state_dict, name):
        upgrade_state_dict(state_dict, name, scorer=True)
        return super().upgrade_state_dict_named(state_dict, name)
