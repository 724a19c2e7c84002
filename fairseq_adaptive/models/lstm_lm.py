"""``adaptive_lstm_lm``: a stacked LSTM language model (``modules/lstm.py``: the fused LSTM with AWD-LSTM's
regularisers) between our vocabulary layers: a plain table (AWD-LSTM's), an adaptive input and its tied adaptive
softmax, DeFINE over either (Mehta et al. 2020, https://arxiv.org/abs/1911.12385, Tables 1, 4, 5, 6), or a full
softmax with a bias per word (AWD-LSTM's decoder).

The hidden state runs on from segment to segment with ``--task bptt_lm`` (one state per stream group, detached,
started afresh at each epoch, validation and evaluation; ``lm_base.StreamDecoder``) and from step to step in
generation. AR and TAR are the criterion's (``--ar-alpha``, ``--tar-beta`` of ``adaptive_cross_entropy``), on the
outputs the decoder hands over in its extra output (``lm_base.RegularizedActivations``).
"""

from dataclasses import dataclass, field

from fairseq.models import FairseqLanguageModel, register_model
from fairseq.utils import safe_getattr

from ..modules.lstm import LSTMStack, detach_state, word_dropout
from ..modules.vocab_layers import Embedder, OutputSpec, build_scorer
from .config import DictionaryRecordConfig, LanguageModelDefineConfig, VocabularyConfig
from .lm_base import ACTIVATIONS, LanguageModelBase, RegularizedActivations, StreamDecoder
from .vocab_flags import fraction


@dataclass
class LSTMLanguageModelConfig(VocabularyConfig, LanguageModelDefineConfig, DictionaryRecordConfig):
    decoder_embed_dim: int = field(
        default=400, metadata={"help": "m: the width the embedding gives the LSTM and the LSTM's last layer outputs"}
    )
    decoder_hidden_dim: int = field(default=1150, metadata={"help": "units of every LSTM layer but the last"})
    decoder_layers: int = field(default=3, metadata={"help": "LSTM layers"})
    dropout: float = field(default=0.4, metadata={"help": "locked dropout on the LSTM's output (AWD-LSTM: dropout)"})
    input_dropout: float = field(
        default=0.4, metadata={"help": "locked dropout on the LSTM's input (AWD-LSTM: dropouti)"}
    )
    hidden_dropout: float = field(
        default=0.25, metadata={"help": "locked dropout between LSTM layers (AWD-LSTM: dropouth)"}
    )
    word_dropout: float = field(
        default=0.1, metadata={"help": "embedding dropout of whole words (AWD-LSTM: dropoute)"}
    )
    weight_drop: float = field(
        default=0.5, metadata={"help": "DropConnect on the hidden-to-hidden weights (AWD-LSTM: wdrop)"}
    )


class LSTMDecoder(StreamDecoder):
    """Embedder -> word dropout -> :class:`LSTMStack` -> features (``B x T x m``), scored by ``self.scorer``; its
    state is every layer's (h, c)."""

    def __init__(self, cfg, dictionary, embedder: Embedder, output: OutputSpec):
        super().__init__(dictionary, embedder, safe_getattr(cfg, "max_target_positions", None))
        m = cfg.decoder_embed_dim
        self.body = LSTMStack(embedder.embedding_dim, cfg.decoder_hidden_dim, m, cfg.decoder_layers, cfg.weight_drop,
                              cfg.input_dropout, cfg.hidden_dropout, cfg.dropout)
        self.scorer = build_scorer(output, embedder)
        self.word_dropout = fraction(cfg, "word_dropout", 0.0)

    def advance(self, tokens, state, incremental):
        x = word_dropout(tokens, self.embed_tokens(tokens), len(self.dictionary), self.word_dropout, self.training)
        pairs = None if state is None else list(zip(state[0::2], state[1::2]))
        out, new_state, raw = self.body(x, pairs)
        flat = [t for h, c in detach_state(new_state) for t in (h, c)]
        return out, {"attn": [None], "inner_states": None, ACTIVATIONS: RegularizedActivations(out, raw)}, flat


@register_model("adaptive_lstm_lm", dataclass=LSTMLanguageModelConfig)
class LSTMLanguageModel(LanguageModelBase, FairseqLanguageModel):
    """LSTM language model; see the module docstring."""

    streams = True
    wide_input = True  # the first LSTM layer reads any width (DeFINE without its reduction)

    @classmethod
    def carried_state(cls, args):
        return "the LSTM's hidden state"

    @classmethod
    def build_body(cls, args, task, layers, embedder):
        return cls(LSTMDecoder(args, task.target_dictionary, embedder, layers.output))
