"""Named ``adaptive_lstm_lm`` architectures: small functions that set defaults (saying where they come from).

- ``lstm_awd_ptb``: AWD-LSTM on Penn Treebank (Merity et al. 2018, https://arxiv.org/abs/1708.02182, and its
  repository's PTB command): m=400, 1,150 hidden units, 3 layers, dropouts 0.4 / 0.4 (input) / 0.25 (between layers)
  / 0.1 (words), weight drop 0.5, a full softmax tied to the table with a bias per word;
- ``lstm_awd_ptb_define``: the same with DeFINE (Mehta et al. 2020, Table 1c: n=128, k=1024, N=7, m=400);
- ``lstm_tiny``, ``lstm_define_tiny``: tiny bodies for tests and CPU demos.
"""

from fairseq.models import register_model_architecture

from .arch_helpers import TXL_WIKI103_CUTOFF, tie_adaptive, tie_full_softmax, tiny_define
from .config import fill_dataclass_defaults
from .config import set_defaults as _set
from .lstm_lm import LSTMLanguageModelConfig


def _base(args) -> None:
    # AWD-LSTM feeds its table to the LSTM unscaled (fairseq's Transformers scale by sqrt(m))
    _set(args, no_scale_embedding=True)
    fill_dataclass_defaults(args, LSTMLanguageModelConfig)


@register_model_architecture("adaptive_lstm_lm", "lstm_awd_ptb")
def lstm_awd_ptb(args):
    """AWD-LSTM, Penn Treebank (24M parameters at its 10,000 words)."""
    _set(args, decoder_embed_dim=400, decoder_hidden_dim=1150, decoder_layers=3, dropout=0.4, input_dropout=0.4,
         hidden_dropout=0.25, word_dropout=0.1, weight_drop=0.5)
    tie_full_softmax(args, word_bias=True, unless_clustered=True)
    _base(args)


@register_model_architecture("adaptive_lstm_lm", "lstm_awd_ptb_define")
def lstm_awd_ptb_define(args):
    """AWD-LSTM + DeFINE, Penn Treebank (Mehta et al. 2020, Table 1c: n=128, k=1024, N=7, m=400; 20M in the
    paper)."""
    _set(args, define_dim=128, define_expand_dim=1024, define_layers=7)
    lstm_awd_ptb(args)


def _tiny(args):
    _set(args, decoder_embed_dim=32, decoder_hidden_dim=64, decoder_layers=2, dropout=0.0, input_dropout=0.0,
         hidden_dropout=0.0, word_dropout=0.0, weight_drop=0.0)


@register_model_architecture("adaptive_lstm_lm", "lstm_tiny")
def lstm_tiny(args):
    """A tiny LSTM for tests and CPU demos (regularisers off; set them with their flags)."""
    _tiny(args)
    tie_full_softmax(args, word_bias=True, unless_clustered=True)
    _base(args)


@register_model_architecture("adaptive_lstm_lm", "lstm_define_tiny")
def lstm_define_tiny(args):
    """``lstm_tiny`` with DeFINE (n=16, k=64, N=3) over its table."""
    _tiny(args)
    tiny_define(args)
    tie_full_softmax(args, word_bias=True, unless_clustered=True)
    _base(args)


def _wiki103(args, m: int, adaptive: bool, define_layers: int = 0) -> None:
    """DeFINE's Table 1a body: 4 LSTM layers of 1,024 units, the first reading m and the last giving m (its 23.36 /
    24.73 / 26.24M context models at m = 256 / 384 / 512). The paper's LSTM training details are in an appendix we do
    not have: the dropouts (0.2 on input, between layers and on output, weight drop 0.2, no word dropout) are our
    choice, AWD-LSTM's kinds at WikiText-103's lighter regularisation."""
    _set(args, decoder_embed_dim=m, decoder_hidden_dim=1024, decoder_layers=4, dropout=0.2, input_dropout=0.2,
         hidden_dropout=0.2, word_dropout=0.0, weight_drop=0.2)
    if adaptive:
        tie_adaptive(args, TXL_WIKI103_CUTOFF, 4)  # DeFINE's LSTMs: Transformer-XL's bands, factor 4
    if define_layers:
        # k = 1024 as in the paper's ablations (Sec. 4.3: N=7, n=384, k=1024, m=384, which is R4); for R3 and R5
        # the paper does not give k: we keep 1024
        _set(args, define_dim=m, define_layers=define_layers, define_expand_dim=1024)
    tie_full_softmax(args, word_bias=True, unless_clustered=True)
    _base(args)


@register_model_architecture("adaptive_lstm_lm", "lstm_wiki103_std")
def lstm_wiki103_std(args):
    """DeFINE Table 1a R1: a standard V x 256 table, a full softmax tied to it."""
    _wiki103(args, 256, adaptive=False)


@register_model_architecture("adaptive_lstm_lm", "lstm_wiki103_adaptive")
def lstm_wiki103_adaptive(args):
    """DeFINE Table 1a R2: adaptive input (n=256) and the adaptive softmax tied to it."""
    _wiki103(args, 256, adaptive=True)


@register_model_architecture("adaptive_lstm_lm", "lstm_wiki103_define_n256")
def lstm_wiki103_define_n256(args):
    """DeFINE Table 1a R3: adaptive input + DeFINE, N=3, n=256."""
    _wiki103(args, 256, adaptive=True, define_layers=3)


@register_model_architecture("adaptive_lstm_lm", "lstm_wiki103_define_n384")
def lstm_wiki103_define_n384(args):
    """DeFINE Table 1a R4: adaptive input + DeFINE, N=7, n=384 (the ablations' model)."""
    _wiki103(args, 384, adaptive=True, define_layers=7)


@register_model_architecture("adaptive_lstm_lm", "lstm_wiki103_define_n512")
def lstm_wiki103_define_n512(args):
    """DeFINE Table 1a R5: adaptive input + DeFINE, N=11, n=512."""
    _wiki103(args, 512, adaptive=True, define_layers=11)


# Table 5 of Mehta et al. 2020: depth N against width k, n = m growing with N as in Table 1a (R3, R4, R5)
def _table5(args, layers: int, k: int) -> None:
    m = {3: 256, 7: 384, 11: 512}[layers]
    _set(args, define_expand_dim=k)
    _wiki103(args, m, adaptive=True, define_layers=layers)


@register_model_architecture("adaptive_lstm_lm", "lstm_wiki103_define_N3_k1024")
def lstm_wiki103_define_N3_k1024(args):
    """DeFINE Table 5: N=3, n=m=256, k=1024 (Table 1a R3)."""
    _table5(args, 3, 1024)


@register_model_architecture("adaptive_lstm_lm", "lstm_wiki103_define_N3_k1536")
def lstm_wiki103_define_N3_k1536(args):
    """DeFINE Table 5: N=3, n=m=256, k=1536."""
    _table5(args, 3, 1536)


@register_model_architecture("adaptive_lstm_lm", "lstm_wiki103_define_N3_k2048")
def lstm_wiki103_define_N3_k2048(args):
    """DeFINE Table 5: N=3, n=m=256, k=2048."""
    _table5(args, 3, 2048)


@register_model_architecture("adaptive_lstm_lm", "lstm_wiki103_define_N7_k1024")
def lstm_wiki103_define_N7_k1024(args):
    """DeFINE Table 5: N=7, n=m=384, k=1024 (Table 1a R4)."""
    _table5(args, 7, 1024)


@register_model_architecture("adaptive_lstm_lm", "lstm_wiki103_define_N7_k1536")
def lstm_wiki103_define_N7_k1536(args):
    """DeFINE Table 5: N=7, n=m=384, k=1536."""
    _table5(args, 7, 1536)


@register_model_architecture("adaptive_lstm_lm", "lstm_wiki103_define_N7_k2048")
def lstm_wiki103_define_N7_k2048(args):
    """DeFINE Table 5: N=7, n=m=384, k=2048."""
    _table5(args, 7, 2048)


@register_model_architecture("adaptive_lstm_lm", "lstm_wiki103_define_N11_k1024")
def lstm_wiki103_define_N11_k1024(args):
    """DeFINE Table 5: N=11, n=m=512, k=1024 (Table 1a R5)."""
    _table5(args, 11, 1024)


@register_model_architecture("adaptive_lstm_lm", "lstm_wiki103_define_N11_k1536")
def lstm_wiki103_define_N11_k1536(args):
    """DeFINE Table 5: N=11, n=m=512, k=1536."""
    _table5(args, 11, 1536)


@register_model_architecture("adaptive_lstm_lm", "lstm_wiki103_define_N11_k2048")
def lstm_wiki103_define_N11_k2048(args):
    """DeFINE Table 5: N=11, n=m=512, k=2048."""
    _table5(args, 11, 2048)
