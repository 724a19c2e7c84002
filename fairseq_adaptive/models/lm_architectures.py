"""Named ``adaptive_lm`` architectures: small functions that set defaults (saying where they come from) and call
fairseq's ``base_lm_architecture``.

- Table 3 of Baevski & Auli 2019 (https://arxiv.org/abs/1809.10853): ``adaptive_lm_wiki103_{sm,sm_t,asm,adp,adp_t}``
  and the Billion Word ADP-T ``adaptive_lm_gbw_adp_t``;
- DeFINE, Mehta et al. 2020 (https://arxiv.org/abs/1911.12385), Tables 2 and 5: ``adaptive_lm_wiki103_define*``;
- tiny bodies for tests and CPU demos: ``adaptive_lm_tiny``, ``adaptive_lm_define_tiny``, ``adaptive_lm_define_std_tiny``.
"""

from fairseq.models import register_model_architecture
from fairseq.models.transformer_lm import TransformerLanguageModelConfig, base_lm_architecture

from .adaptive_lm import AdaptiveLMConfig
from .arch_helpers import ADAPTIVE_WIKI103_CUTOFF, TXL_WIKI103_CUTOFF, tie_adaptive, tie_full_softmax, tiny_define
from .config import fill_dataclass_defaults, keep_widths_unset
from .config import set_defaults as _set
from .vocab_flags import AUTO


def _base(args) -> None:
    """fairseq's defaults, but the input and output widths left to the vocabulary description when unset (a softmax
    tied to a DeFINE's map table scores at its width n)."""
    fill_dataclass_defaults(args, AdaptiveLMConfig, (TransformerLanguageModelConfig,))
    keep_widths_unset(base_lm_architecture, args)


def _tiny_body(args):
    _set(args, decoder_layers=2, decoder_embed_dim=32, decoder_ffn_embed_dim=64, decoder_attention_heads=2, dropout=0.0)


@register_model_architecture("adaptive_lm", "adaptive_lm_tiny")
def adaptive_lm_tiny(args):
    """A few-thousand-parameter body for tests and CPU demos; cutoffs derived from the dictionary."""
    _tiny_body(args)
    tie_adaptive(args, AUTO, 2)
    _base(args)


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
    _set(args, adaptive_softmax_cutoff=ADAPTIVE_WIKI103_CUTOFF, adaptive_softmax_factor=4, adaptive_softmax_dropout=0.2)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_sm")
def adaptive_lm_wiki103_sm(args):
    """SM: 512-d word embeddings projected to 1024, full softmax over a 1024 -> 512 projection (476.8M)."""
    _wiki103_body(args)
    _set(args, decoder_input_dim=512, decoder_output_dim=512)
    _base(args)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_sm_t")
def adaptive_lm_wiki103_sm_t(args):
    """SM-T: SM with the input embedding and the softmax weights tied (339.7M)."""
    tie_full_softmax(args)
    adaptive_lm_wiki103_sm(args)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_bpe")
def adaptive_lm_wiki103_bpe(args):
    """BPE: byte-pair units (32K merges; 33,337 entries on WikiText-103 in the paper), 1024-d embeddings, an untied full
    softmax at 1024 (270M); compared with the word models at word level (``fairseq-eval-lm --remove-bpe``)."""
    _wiki103_body(args)
    _set(args, decoder_input_dim=1024, decoder_output_dim=1024)
    _base(args)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_bpe_t")
def adaptive_lm_wiki103_bpe_t(args):
    """BPE-T: BPE with the input embedding and the softmax weights tied (235.7M)."""
    tie_full_softmax(args)
    adaptive_lm_wiki103_bpe(args)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_cnn")
def adaptive_lm_wiki103_cnn(args):
    """CNN: word vectors from a character CNN (Kim et al. 2016 as in the paper: 128-d character embeddings, filters of
    widths 1..7 with 128, 256, 384, 512, 512, 512, 512 features, max pooling, one highway layer, no word-boundary
    markers) projected to 1024, and ASM's adaptive softmax (266.3M)."""
    _wiki103_body(args)
    _wiki103_adaptive_softmax(args)
    _set(args, character_embeddings=True, character_embedding_dim=128, char_embedder_highway_layers=1,
         character_filters="[(1, 128), (2, 256), (3, 384), (4, 512), (5, 512), (6, 512), (7, 512)]")
    _base(args)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_asm")
def adaptive_lm_wiki103_asm(args):
    """ASM: 64-d word embeddings projected to 1024, adaptive softmax at 1024 (263.1M)."""
    _wiki103_body(args)
    _wiki103_adaptive_softmax(args)
    _set(args, decoder_input_dim=64)
    _base(args)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_adp")
def adaptive_lm_wiki103_adp(args):
    """ADP: adaptive input and adaptive softmax with the same bands, nothing shared (291.3M)."""
    _wiki103_body(args)
    _wiki103_adaptive_softmax(args)
    _set(args, adaptive_input=True, adaptive_input_cutoff=ADAPTIVE_WIKI103_CUTOFF, adaptive_input_factor=4)
    _base(args)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_adp_t")
@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103")
def adaptive_lm_wiki103_adp_t(args):
    """ADP-T, the paper's WikiText-103 model: embeddings and all but the head projection shared (246.9M)."""
    tie_adaptive(args, ADAPTIVE_WIKI103_CUTOFF, 4)
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
    )
    tie_adaptive(args, "60000,160000", 4, tie_proj=False)
    _base(args)


# ------------------------------------------------------------------------------------------------ DeFINE archs
@register_model_architecture("adaptive_lm", "adaptive_lm_define_tiny")
def adaptive_lm_define_tiny(args):
    """The tiny body with DeFINE over an adaptive input (n=16 -> k=64 -> m=32), tied softmax at n; tests, demos."""
    tiny_define(args)
    adaptive_lm_tiny(args)


@register_model_architecture("adaptive_lm", "adaptive_lm_define_std_tiny")
def adaptive_lm_define_std_tiny(args):
    """The tiny body with DeFINE over a plain 16-d embedding and a full softmax tied to it (through m -> n)."""
    _tiny_body(args)
    tiny_define(args)
    tie_full_softmax(args)
    _base(args)


def _define_wiki103(args, define_dim: int, adaptive: bool, layers: int = 3, expand_dim: int = 4096):
    """DeFINE with the Transformer-XL-sized body of Mehta et al. 2020, Table 2: m=384, N=3, k=4096.

    Our body is fairseq's pre-norm decoder (16 blocks, 8 heads of 48, FFN 2100, dropout 0.1) with absolute
    sinusoidal positions; Transformer-XL's is post-norm with relative positions, 10 heads and segment recurrence
    (a memory of past segments), which fairseq's decoder does not have.
    """
    _set(
        args,
        decoder_layers=16,
        decoder_embed_dim=384,
        decoder_ffn_embed_dim=2100,
        decoder_attention_heads=8,
        dropout=0.1,
        attention_dropout=0.0,
        define_dim=define_dim,
        define_layers=layers,
        define_expand_dim=expand_dim,
    )
    if adaptive:
        tie_adaptive(args, TXL_WIKI103_CUTOFF, 4)
    else:
        tie_full_softmax(args)
    _base(args)


# Table 2 of Mehta et al. 2020: n in {64, 128, 256, 384}, DeFINE over an adaptive input (tied adaptive softmax) ...
@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_define_n64")
def adaptive_lm_wiki103_define_n64(args):
    """Table 2, adaptive input + DeFINE, n=64."""
    _define_wiki103(args, define_dim=64, adaptive=True)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_define_n128")
def adaptive_lm_wiki103_define_n128(args):
    """Table 2, adaptive input + DeFINE, n=128."""
    _define_wiki103(args, define_dim=128, adaptive=True)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_define_n256")
def adaptive_lm_wiki103_define_n256(args):
    """Table 2, adaptive input + DeFINE, n=256."""
    _define_wiki103(args, define_dim=256, adaptive=True)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_define_n384")
def adaptive_lm_wiki103_define_n384(args):
    """Table 2, adaptive input + DeFINE, n=384."""
    _define_wiki103(args, define_dim=384, adaptive=True)


# ... and over a plain V x n table (full softmax tied to it)
@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_define_std_n64")
def adaptive_lm_wiki103_define_std_n64(args):
    """Table 2, standard embedding + DeFINE, n=64."""
    _define_wiki103(args, define_dim=64, adaptive=False)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_define_std_n128")
def adaptive_lm_wiki103_define_std_n128(args):
    """Table 2, standard embedding + DeFINE, n=128."""
    _define_wiki103(args, define_dim=128, adaptive=False)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_define_std_n256")
def adaptive_lm_wiki103_define_std_n256(args):
    """Table 2, standard embedding + DeFINE, n=256."""
    _define_wiki103(args, define_dim=256, adaptive=False)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_define_std_n384")
def adaptive_lm_wiki103_define_std_n384(args):
    """Table 2, standard embedding + DeFINE, n=384."""
    _define_wiki103(args, define_dim=384, adaptive=False)


# Table 5 of Mehta et al. 2020: depth N in {3, 7, 11} and width k in {1024, 1536, 2048}, adaptive input, n = 128
@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_define_N3_k1024")
def adaptive_lm_wiki103_define_N3_k1024(args):
    """Table 5, N=3, k=1024."""
    _define_wiki103(args, define_dim=128, adaptive=True, layers=3, expand_dim=1024)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_define_N3_k1536")
def adaptive_lm_wiki103_define_N3_k1536(args):
    """Table 5, N=3, k=1536."""
    _define_wiki103(args, define_dim=128, adaptive=True, layers=3, expand_dim=1536)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_define_N3_k2048")
def adaptive_lm_wiki103_define_N3_k2048(args):
    """Table 5, N=3, k=2048."""
    _define_wiki103(args, define_dim=128, adaptive=True, layers=3, expand_dim=2048)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_define_N7_k1024")
def adaptive_lm_wiki103_define_N7_k1024(args):
    """Table 5, N=7, k=1024."""
    _define_wiki103(args, define_dim=128, adaptive=True, layers=7, expand_dim=1024)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_define_N7_k1536")
def adaptive_lm_wiki103_define_N7_k1536(args):
    """Table 5, N=7, k=1536."""
    _define_wiki103(args, define_dim=128, adaptive=True, layers=7, expand_dim=1536)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_define_N7_k2048")
def adaptive_lm_wiki103_define_N7_k2048(args):
    """Table 5, N=7, k=2048."""
    _define_wiki103(args, define_dim=128, adaptive=True, layers=7, expand_dim=2048)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_define_N11_k1024")
def adaptive_lm_wiki103_define_N11_k1024(args):
    """Table 5, N=11, k=1024."""
    _define_wiki103(args, define_dim=128, adaptive=True, layers=11, expand_dim=1024)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_define_N11_k1536")
def adaptive_lm_wiki103_define_N11_k1536(args):
    """Table 5, N=11, k=1536."""
    _define_wiki103(args, define_dim=128, adaptive=True, layers=11, expand_dim=1536)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_define_N11_k2048")
def adaptive_lm_wiki103_define_N11_k2048(args):
    """Table 5, N=11, k=2048."""
    _define_wiki103(args, define_dim=128, adaptive=True, layers=11, expand_dim=2048)


@register_model_architecture("adaptive_lm", "adaptive_lm_wiki103_define")
def adaptive_lm_wiki103_define(args):
    """The paper's headline WikiText-103 setting: adaptive input + DeFINE with n=128, N=3, k=4096 (Table 2)."""
    _define_wiki103(args, define_dim=128, adaptive=True)
