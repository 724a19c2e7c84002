"""``txl_lm``: Transformer-XL (Dai et al. 2019, https://arxiv.org/abs/1901.02860) between our vocabulary layers.

The body is ``modules/transformer_xl.py``; the embedder and scorer are those of every other body
(``modules/vocab_layers.py``): Transformer-XL's own layers (a plain table, a clustered softmax tied to it at full
width, a bias per output word), an adaptive input with a factor and its tied adaptive softmax, DeFINE over either, or
a full softmax. The architectures (``txl_architectures.py``) include DeFINE's Table 2 (Mehta et al. 2020,
https://arxiv.org/abs/1911.12385).

Memory. With ``--task bptt_lm`` every batch says which stream it continues and at which step (``net_input["stream"]``:
split, stream group, step); the decoder keeps one memory per (split, group), the last ``--mem-len`` inputs of every
layer, detached, and starts it afresh at step 0 (each epoch, each validation, each evaluation). Nothing of it is saved
in checkpoints: a resumed run continues the stream where it stopped, with an empty memory for its first segment.
Without a stream (other tasks, the hub's ``score``) a batch is scored on its own. Incremental decoding (generation)
keeps every position generated so far, so it equals a full pass over the sequence.
"""

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from fairseq.models import FairseqIncrementalDecoder, FairseqLanguageModel, register_model
from fairseq.tasks import FairseqTask
from fairseq.utils import safe_getattr
from torch import Tensor

from .. import fairseq_fixes
from ..checks import check_dictionary, data_of, guard_task
from ..modules.transformer_xl import TransformerXL, next_memory
from ..modules.vocab_layers import Embedder, OutputSpec, build_embedder, build_scorer
from .adaptive_lm import CheckedHub
from .config import DictionaryRecordConfig, LanguageModelDefineConfig
from .transformer_body import normalized_probs
from ..tasks.bptt_lm import BPTTLMTask
from .vocab_flags import LM, describe

logger = logging.getLogger(__name__)

# relative positions set no length limit: generation is bounded by the task's --max-target-positions where it has one
UNLIMITED_POSITIONS = 1_000_000


@dataclass
class TransformerXLConfig(LanguageModelDefineConfig, DictionaryRecordConfig):
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
    # the vocabulary layers (vocab_flags.describe reads them): fairseq's names
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


class TransformerXLDecoder(FairseqIncrementalDecoder):
    """Embedder -> :class:`TransformerXL` -> features (``B x T x m``), scored by ``self.scorer``."""

    def __init__(self, cfg, dictionary, embedder: Embedder, output: OutputSpec):
        super().__init__(dictionary)
        dim, heads = cfg.decoder_embed_dim, cfg.decoder_attention_heads
        head_dim = cfg.decoder_attention_head_dim or dim // heads
        if not cfg.decoder_attention_head_dim and dim % heads:
            raise ValueError(f"--decoder-embed-dim {dim} is not a multiple of --decoder-attention-heads {heads}: give "
                             f"--decoder-attention-head-dim")
        self.embed_tokens = embedder
        self.body = TransformerXL(
            dim, cfg.decoder_layers, heads, head_dim, cfg.decoder_ffn_embed_dim, cfg.dropout, cfg.attention_dropout,
            cfg.decoder_normalize_before, cfg.shared_rel_bias, cfg.clamp_len, cfg.same_length, cfg.mem_len,
        )
        self.scorer = build_scorer(output, embedder)  # after the body, as every body builds it
        self.mem_len = cfg.mem_len
        self.max_target_positions = safe_getattr(cfg, "max_target_positions", None) or UNLIMITED_POSITIONS
        self.memories: Dict[tuple, Optional[List[Tensor]]] = {}  # (split, group) -> memory; not saved

    def stream_memory(self, stream, batch: int) -> Optional[List[Tensor]]:
        """The memory a batch of ``stream`` (split, group, step) continues: none at step 0, nor for another batch
        size (a different stream)."""
        if stream is None:
            return None
        split, group, step = stream
        memory = self.memories.get((split, group))
        if step == 0 or memory is None or memory[0].size(0) != batch:
            return None
        return memory

    def forward(self, src_tokens, src_lengths=None, incremental_state=None, stream=None, features_only=False,
                **unused):
        """``B x T`` tokens -> (``B x T x m`` features, extra). With ``incremental_state`` only the tokens after those
        already seen are run, against all of them."""
        if incremental_state is not None:
            memory = self.get_incremental_state(incremental_state, "memory")
            seen = 0 if memory is None else memory[0].size(1)
            src_tokens = src_tokens[:, seen:]
        else:
            memory = self.stream_memory(stream, src_tokens.size(0))
        features, inputs = self.body(self.embed_tokens(src_tokens), memory)
        if incremental_state is not None:
            self.set_incremental_state(incremental_state, "memory", next_memory(memory, inputs, None))
        elif stream is not None:
            self.memories[tuple(stream[:2])] = next_memory(memory, inputs, self.mem_len)
        return features, {"attn": [None], "inner_states": None}

    def output_layer(self, features):
        return features

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        return normalized_probs(self.scorer, net_output, log_probs, sample)

    def max_positions(self):
        return self.max_target_positions

    def reorder_incremental_state(self, incremental_state, new_order):
        memory = self.get_incremental_state(incremental_state, "memory")
        if memory is not None:
            self.set_incremental_state(incremental_state, "memory", [m.index_select(0, new_order) for m in memory])


@register_model("txl_lm", dataclass=TransformerXLConfig)
class TransformerXLLanguageModel(CheckedHub, FairseqLanguageModel):
    """Transformer-XL language model; see the module docstring."""

    @classmethod
    def build_model(cls, args, task):
        fairseq_fixes.apply()
        if safe_getattr(task.cfg if hasattr(task, "cfg") else None, "_name", None) == "truncated_bptt_lm":
            raise ValueError("--task truncated_bptt_lm scores every segment but its last token and does not tell the "
                             "model where a stream restarts: use --task bptt_lm (the same data and flags)")
        if args.mem_len > 0 and isinstance(task, FairseqTask) and not isinstance(task, BPTTLMTask):
            logger.warning(f"--mem-len {args.mem_len} is unused under this task, which scores every batch on its own: "
                           f"train and evaluate Transformer-XL with --task bptt_lm to carry its memory")
        dictionary = task.source_dictionary
        check_dictionary(args, dictionary, data_of(task))
        guard_task(task)
        layers = describe(args, dictionary, LM)
        embedder = build_embedder(layers.input)
        return cls(TransformerXLDecoder(args, task.target_dictionary, embedder, layers.output))
