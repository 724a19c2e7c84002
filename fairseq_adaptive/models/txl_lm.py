"""``txl_lm``: Transformer-XL (Dai et al. 2019, https://arxiv.org/abs/1901.02860) between our vocabulary layers.

The body is ``modules/transformer_xl.py``; the embedder and scorer are those of every other body
(``modules/vocab_layers.py``): Transformer-XL's own layers (a plain table, a clustered softmax tied to it at full
width, a bias per output word), an adaptive input with a factor and its tied adaptive softmax, DeFINE over either, or
a full softmax. The architectures (``txl_architectures.py``) include DeFINE's Table 2 (Mehta et al. 2020,
https://arxiv.org/abs/1911.12385).

Memory (``lm_base.StreamDecoder``): with ``--task bptt_lm`` one memory per stream group, the last ``--mem-len`` inputs of
every layer, detached, started afresh at each epoch, validation and evaluation and not saved in checkpoints; in
generation every position seen so far, so incremental decoding equals a full pass over the sequence.
"""

from dataclasses import dataclass, field
from typing import Optional

from fairseq.models import FairseqLanguageModel, register_model
from fairseq.utils import safe_getattr

from ..modules.transformer_xl import TransformerXL, next_memory
from ..modules.vocab_layers import Embedder, OutputSpec, build_scorer
from .config import DictionaryRecordConfig, LanguageModelDefineConfig, VocabularyConfig
from .lm_base import LanguageModelBase, StreamDecoder

@dataclass
class TransformerXLConfig(VocabularyConfig, LanguageModelDefineConfig, DictionaryRecordConfig):
    decoder_embed_dim: int = field(default=410, metadata={"help": "model width d"})
    decoder_layers: int = field(default=16, metadata={"help": "number of layers"})
    decoder_attention_heads: int = field(default=10, metadata={"help": "attention heads"})
    decoder_attention_head_dim: Optional[int] = field(
        default=None, metadata={"help": "width of each head (unset: model width / heads)"}
    )
    decoder_ffn_embed_dim: int = field(default=2100, metadata={"help": "inner width of the feed-forward layers"})
    dropout: float = field(default=0.1, metadata={"help": "dropout (embeddings, positions, every sublayer, output)"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on attention weights (dropatt)"})
    decoder_normalize_before: bool = field(
        default=False, metadata={"help": "pre-norm layers (with a final LayerNorm); the original is post-norm"}
    )
    shared_rel_bias: bool = field(
        default=False,
        metadata={"help": "one u, v pair for all layers (the original PyTorch code) instead of one per layer"},
    )
    mem_len: int = field(default=0, metadata={"help": "positions of earlier segments each layer remembers"})
    clamp_len: int = field(default=-1, metadata={"help": "distances beyond this use its encoding (<= 0: none)"})
    same_length: bool = field(
        default=False, metadata={"help": "every token sees --mem-len keys (evaluation protocol; needs --mem-len)"}
    )


class TransformerXLDecoder(StreamDecoder):
    """Embedder -> :class:`TransformerXL` -> features (``B x T x m``), scored by ``self.scorer``; its state is the
    memory (``lm_base.StreamDecoder``)."""

    def __init__(self, cfg, dictionary, embedder: Embedder, output: OutputSpec):
        super().__init__(dictionary, embedder, safe_getattr(cfg, "max_target_positions", None))
        dim, heads = cfg.decoder_embed_dim, cfg.decoder_attention_heads
        head_dim = cfg.decoder_attention_head_dim or dim // heads
        if not cfg.decoder_attention_head_dim and dim % heads:
            raise ValueError(f"--decoder-embed-dim {dim} is not a multiple of --decoder-attention-heads {heads}: give "
                             f"--decoder-attention-head-dim")
        self.body = TransformerXL(
            dim, cfg.decoder_layers, heads, head_dim, cfg.decoder_ffn_embed_dim, cfg.dropout, cfg.attention_dropout,
            cfg.decoder_normalize_before, cfg.shared_rel_bias, cfg.clamp_len, cfg.same_length, cfg.mem_len,
        )
        self.scorer = build_scorer(output, embedder)  # after the body, as every body builds it
        self.mem_len = cfg.mem_len

    def advance(self, tokens, state, incremental):
        """Generation keeps every position seen (so it equals a full pass); a stream keeps the last ``mem_len``."""
        features, inputs = self.body(self.embed_tokens(tokens), state)
        return features, {"attn": [None], "inner_states": None}, next_memory(state, inputs,
                                                                             None if incremental else self.mem_len)


@register_model("txl_lm", dataclass=TransformerXLConfig)
class TransformerXLLanguageModel(LanguageModelBase, FairseqLanguageModel):
    """Transformer-XL language model; see the module docstring."""

    streams = True

    @classmethod
    def carried_state(cls, args):
        return "Transformer-XL's memory" if args.mem_len > 0 else None

    @classmethod
    def build_body(cls, args, task, layers, embedder):
        return cls(TransformerXLDecoder(args, task.target_dictionary, embedder, layers.output))
