"""What the families of named architectures (``lm_architectures``, ``txl_architectures``, ``lstm_architectures``) set
alike: the WikiText-103 bands of the papers, the tied vocabulary layers, and the tests' tiny DeFINE unit. Every helper
sets defaults only: flags given on the command line (or by an earlier architecture function) win."""

from .config import set_defaults as _set

# Table 3 of Baevski & Auli 2019 (https://arxiv.org/abs/1809.10853, Section 4.3): WikiText-103's bands of 20K / 40K /
# the rest of the words
ADAPTIVE_WIKI103_CUTOFF = "20000,60000"
# Transformer-XL's WikiText-103 clusters (Dai et al. 2019, https://arxiv.org/abs/1901.02860, its run_wt103_base.sh),
# which DeFINE's experiments keep (Mehta et al. 2020, https://arxiv.org/abs/1911.12385): the bands of its
# Transformer-XL and LSTM models' adaptive inputs and softmaxes
TXL_WIKI103_CUTOFF = "20000,40000,200000"


def clustered(args) -> bool:
    """Whether softmax clusters are given."""
    return bool(getattr(args, "adaptive_softmax_cutoff", None))


def tie_adaptive(args, cutoff: str, factor: float, tie_proj: bool = True) -> None:
    """Adaptive input and an adaptive softmax with the same bands, the softmax tied to the input: its word tables are
    the input's bands and, with ``tie_proj``, its tail projections the input's too (ADP-T of Baevski & Auli 2019)."""
    _set(
        args,
        adaptive_input=True,
        adaptive_input_cutoff=cutoff,
        adaptive_input_factor=factor,
        adaptive_softmax_cutoff=cutoff,
        adaptive_softmax_factor=factor,
        tie_adaptive_weights=True,
        tie_adaptive_proj=tie_proj,
    )


def tie_clusters_to_table(args, cutoff: str) -> None:
    """Transformer-XL's own vocabulary layers (``div_val`` 1): a clustered softmax whose clusters score at the plain
    table's width, their word rows tied to the table, with a bias per output word."""
    _set(args, adaptive_softmax_cutoff=cutoff, adaptive_softmax_factor=1, tie_adaptive_weights=True, output_bias=True)


def tie_full_softmax(args, word_bias: bool = False, unless_clustered: bool = False) -> None:
    """A full softmax tied to the plain input table (``--share-decoder-input-output-embed``), with a learned bias per
    word when ``word_bias`` (AWD-LSTM's output layer). ``unless_clustered``: nothing when softmax clusters are given
    (their own flags then say what is tied)."""
    if unless_clustered and clustered(args):
        return
    _set(args, share_decoder_input_output_embed=True)
    if word_bias:
        _set(args, output_bias=True)


def tiny_define(args) -> None:
    """The tests' tiny DeFINE unit: n=16 expanded to k=64 in N=3 layers of at most 4 groups."""
    _set(args, define_dim=16, define_expand_dim=64, define_layers=3, define_max_groups=4)
