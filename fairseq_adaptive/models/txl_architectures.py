"""Named ``txl_lm`` architectures: small functions that set defaults (saying where they come from).

- ``txl_wiki103_base``: Transformer-XL's WikiText-103 base (Dai et al. 2019; the original ``run_wt103_base.sh`` and
  fairseq's ``examples/truncated_bptt``): 16 layers, d=410, 10 heads of 41, inner 2100, dropout 0.1, memory 150, its
  own vocabulary layers (a plain table scaled by sqrt(d), a clustered softmax at 20000, 40000, 200000 with every
  cluster at full width and its words tied to the table, a bias per output word), a u, v pair per layer;
- ``txl_wiki103_large``: the large model (``run_wt103_large.sh``, the released WikiText-103 model): 18 layers,
  d=1024, ``div_val`` 4 (adaptive input and softmax at factor 4, tied, the head's own projection);
- ``txl_wiki103_n{64,128,256,384}`` and ``txl_wiki103_define_n{64,128,256,384}``: Table 2 of DeFINE (Mehta et al.
  2020, https://arxiv.org/abs/1911.12385): d=384, inner 1920, 10 heads of 41, one shared u, v pair, an n-wide table
  projected to 384 (or DeFINE with N=3, k=4096 over it), the softmax tied to it at width n;
- ``txl_tiny``, ``txl_define_tiny``: tiny bodies for tests and CPU demos.
"""

from fairseq.models import register_model_architecture

from .arch_helpers import TXL_WIKI103_CUTOFF, tie_adaptive, tie_clusters_to_table, tie_full_softmax, tiny_define
from .config import fill_dataclass_defaults
from .config import set_defaults as _set
from .txl_lm import TransformerXLConfig


def _base(args) -> None:
    fill_dataclass_defaults(args, TransformerXLConfig)


@register_model_architecture("txl_lm", "txl_wiki103_base")
def txl_wiki103_base(args):
    """Dai et al. 2019, WikiText-103 base: 151,123,537 parameters on fairseq's 267,744-word dictionary (a u, v pair
    per layer, as fairseq's example counts it); ``--shared-rel-bias`` gives the original PyTorch code's layout."""
    _set(args, decoder_embed_dim=410, decoder_layers=16, decoder_attention_heads=10, decoder_attention_head_dim=41,
         decoder_ffn_embed_dim=2100, dropout=0.1, attention_dropout=0.0, mem_len=150)
    tie_clusters_to_table(args, TXL_WIKI103_CUTOFF)
    _base(args)


@register_model_architecture("txl_lm", "txl_wiki103_large")
def txl_wiki103_large(args):
    """Dai et al. 2019, WikiText-103 large (the original ``run_wt103_large.sh``; the released model): 18 layers,
    d=1024, 16 heads of 64, inner 4096, dropout and dropatt 0.2, memory 384 in training (evaluation: target 128,
    memory 1600, clamp 1000, same length); ``div_val`` 4: an adaptive input with factor 4 and its adaptive softmax
    tied to it (word rows and tail projections), a bias per output word, and the head's own d x d projection
    (``--adaptive-softmax-head-proj``: the original's untied ``out_projs[0]``); a u, v pair per layer as the released
    model has them (``--shared-rel-bias``: the original PyTorch code's one pair)."""
    _set(args, decoder_embed_dim=1024, decoder_layers=18, decoder_attention_heads=16, decoder_attention_head_dim=64,
         decoder_ffn_embed_dim=4096, dropout=0.2, attention_dropout=0.2, mem_len=384)
    tie_adaptive(args, TXL_WIKI103_CUTOFF, 4)
    _set(args, adaptive_softmax_head_proj=True, output_bias=True)
    _base(args)


def _define_table2(args, n: int, define: bool) -> None:
    """DeFINE's Table 2 body (d=384, inner 1920, 16 layers; 10 heads of 41 and one shared u, v pair give its 36.25M
    context model) and its n-wide input, with DeFINE (N=3, k=4096) or projected to 384."""
    _set(args, decoder_embed_dim=384, decoder_layers=16, decoder_attention_heads=10, decoder_attention_head_dim=41,
         decoder_ffn_embed_dim=1920, dropout=0.1, attention_dropout=0.0, mem_len=150, shared_rel_bias=True)
    if define:
        _set(args, define_dim=n, define_layers=3, define_expand_dim=4096)
    else:
        _set(args, decoder_input_dim=n)
    tie_clusters_to_table(args, TXL_WIKI103_CUTOFF)
    _base(args)


@register_model_architecture("txl_lm", "txl_wiki103_n64")
def txl_wiki103_n64(args):
    """DeFINE Table 2, Transformer-XL without DeFINE, n=64."""
    _define_table2(args, 64, define=False)


@register_model_architecture("txl_lm", "txl_wiki103_n128")
def txl_wiki103_n128(args):
    """DeFINE Table 2, Transformer-XL without DeFINE, n=128."""
    _define_table2(args, 128, define=False)


@register_model_architecture("txl_lm", "txl_wiki103_n256")
def txl_wiki103_n256(args):
    """DeFINE Table 2, Transformer-XL without DeFINE, n=256."""
    _define_table2(args, 256, define=False)


@register_model_architecture("txl_lm", "txl_wiki103_n384")
def txl_wiki103_n384(args):
    """DeFINE Table 2, Transformer-XL without DeFINE, n=384 (no projection)."""
    _define_table2(args, 384, define=False)


@register_model_architecture("txl_lm", "txl_wiki103_define_n64")
def txl_wiki103_define_n64(args):
    """DeFINE Table 2, Transformer-XL with DeFINE, n=64."""
    _define_table2(args, 64, define=True)


@register_model_architecture("txl_lm", "txl_wiki103_define_n128")
def txl_wiki103_define_n128(args):
    """DeFINE Table 2, Transformer-XL with DeFINE, n=128."""
    _define_table2(args, 128, define=True)


@register_model_architecture("txl_lm", "txl_wiki103_define_n256")
def txl_wiki103_define_n256(args):
    """DeFINE Table 2, Transformer-XL with DeFINE, n=256."""
    _define_table2(args, 256, define=True)


@register_model_architecture("txl_lm", "txl_wiki103_define_n384")
def txl_wiki103_define_n384(args):
    """DeFINE Table 2, Transformer-XL with DeFINE, n=384."""
    _define_table2(args, 384, define=True)


def _tiny_body(args):
    _set(args, decoder_embed_dim=32, decoder_layers=2, decoder_attention_heads=2, decoder_ffn_embed_dim=64,
         dropout=0.0, mem_len=32)


def _tiny_output(args):
    """A full softmax tied to the table unless softmax clusters are given, with output biases."""
    tie_full_softmax(args, unless_clustered=True)
    _set(args, output_bias=True)


@register_model_architecture("txl_lm", "txl_tiny")
def txl_tiny(args):
    """A tiny Transformer-XL for tests and CPU demos (see ``_tiny_output`` for its output layer)."""
    _tiny_body(args)
    _tiny_output(args)
    _base(args)


@register_model_architecture("txl_lm", "txl_define_tiny")
def txl_define_tiny(args):
    """``txl_tiny`` with DeFINE (n=16, k=64, N=3) over its table."""
    _tiny_body(args)
    tiny_define(args)
    _tiny_output(args)
    _base(args)
