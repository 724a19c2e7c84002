"""``adaptive_transformer``: fairseq's encoder-decoder Transformer (translation) with our input and output layers.

Each side's input layer is a plain embedding, an adaptive input (Baevski & Auli 2019,
https://arxiv.org/abs/1809.10853), or DeFINE over either (Mehta et al. 2020, https://arxiv.org/abs/1911.12385); the
decoder scores with a full softmax or our adaptive softmax, tied to its input layer if asked. With
``--share-all-embeddings`` (a joined dictionary) one input layer serves encoder, decoder and the tied output layer.
fairseq's own ``transformer`` always builds plain embeddings (its ``build_embedding``), so none of this is reachable
there.

Architectures: ``adaptive_transformer_tiny`` (tests), ``adaptive_transformer_small`` (CPU example), and the WMT'14 En-De base and big Transformers
with DeFINE on both sides as in the DeFINE paper's translation experiments (n=128, k=1024, N=3).
"""

from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerModel, base_architecture
from fairseq.utils import safe_getattr

from .adaptive_lm import AdaptiveDecoder
from .. import fairseq_fixes
from ..modules.define import DeFINE
from .config import (
    DEFINE_DEFAULTS,
    DefineConfig,
    FastPathConfig,
    default_output_to_define_width,
    define_options,
    fill_dataclass_defaults,
    parse_cutoff,
    resolve_dims,
    validate_config,
)
from .config import set_defaults as _set
from .input_layers import build_input_layer


@dataclass
class AdaptiveTransformerConfig(DefineConfig, FastPathConfig):
    """Our flags on top of fairseq's ``transformer`` ones (``--adaptive-input`` is fairseq's flag for the decoder)."""

    encoder_adaptive_input: bool = field(default=False, metadata={"help": "adaptive input on the encoder side"})
    adaptive_input_cutoff: Optional[str] = field(
        default=None,
        metadata={"help": "band boundaries of the decoder's adaptive input (and the encoder's, unless given "
                          "--encoder-adaptive-input-cutoff), e.g. 4000,12000; scripts/prepare_mt.py prints some"},
    )
    encoder_adaptive_input_cutoff: Optional[str] = field(
        default=None, metadata={"help": "band boundaries of the encoder's adaptive input (source dictionary)"}
    )
    adaptive_input_factor: float = field(default=4, metadata={"help": "adaptive input: width shrink per band"})
    encoder_define_dim: Optional[int] = field(
        default=None, metadata={"help": "DeFINE on the encoder side: embedding width n (unset: no DeFINE)"}
    )
    decoder_define_dim: Optional[int] = field(
        default=None,
        metadata={"help": "DeFINE on the decoder side: embedding width n; a tied output layer then scores at n "
                          "through an m -> n projection (unset: no DeFINE)"},
    )


def _side_layer(args, side: str, dictionary):
    """The input layer of one side (``encoder`` or ``decoder``), from the flags."""
    adaptive = args.encoder_adaptive_input if side == "encoder" else args.adaptive_input
    define_dim = safe_getattr(args, f"{side}_define_dim", None)
    model_dim = getattr(args, f"{side}_embed_dim")
    width = define_dim or (model_dim if side == "encoder" else args.decoder_input_dim)
    cutoff = None
    if adaptive:
        flag = "--encoder-adaptive-input-cutoff" if side == "encoder" else "--adaptive-input-cutoff"
        value = (args.encoder_adaptive_input_cutoff if side == "encoder" else None) or args.adaptive_input_cutoff
        cutoff = parse_cutoff(value, flag)
        if cutoff is None:
            raise ValueError(f"{'--encoder-adaptive-input' if side == 'encoder' else '--adaptive-input'} needs "
                             f"{flag} (e.g. 4000,12000; scripts/prepare_mt.py prints cutoffs for your dictionary)")
    return build_input_layer(dictionary, width, model_dim, adaptive_cutoff=cutoff,
                             adaptive_factor=args.adaptive_input_factor,
                             define=define_options(args) if define_dim else None)


@register_model("adaptive_transformer")
class AdaptiveTransformerModel(TransformerModel):
    """fairseq's ``TransformerModel`` whose embeddings and output layer come from this package."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        gen_parser_from_dataclass(parser, AdaptiveTransformerConfig(), delete_default=True)

    @classmethod
    def build_model(cls, args, task):
        fairseq_fixes.apply()
        _fill_defaults(args)
        src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
        if args.share_all_embeddings:
            _check_share_all(args, src_dict, tgt_dict)
            # one input layer for both sides; a full softmax shares it too (an adaptive one through --tie-adaptive-*)
            args.share_decoder_input_output_embed = args.adaptive_softmax_cutoff is None
        resolve_dims(args)
        validate_config(args, len(tgt_dict))
        encoder_embed = _side_layer(args, "encoder", src_dict)
        decoder_embed = encoder_embed if args.share_all_embeddings else _side_layer(args, "decoder", tgt_dict)
        encoder = cls.build_encoder(args, src_dict, encoder_embed)
        if isinstance(encoder_embed, DeFINE):
            encoder.embed_scale = 1.0  # DeFINE scales its own map layer (--no-scale-embedding) and ends normalised
        decoder = AdaptiveDecoder(args, tgt_dict, decoder_embed, no_encoder_attn=args.no_cross_attention)
        return cls(args, encoder, decoder)


def _check_share_all(args, src_dict, tgt_dict) -> None:
    if src_dict != tgt_dict:
        raise ValueError("--share-all-embeddings needs a joined dictionary: preprocess with --joined-dictionary "
                         "(scripts/prepare_mt.py does)")
    pairs = [("--encoder-embed-dim", args.encoder_embed_dim, "--decoder-embed-dim", args.decoder_embed_dim),
             ("--encoder-adaptive-input", args.encoder_adaptive_input, "--adaptive-input", args.adaptive_input),
             ("--encoder-define-dim", args.encoder_define_dim, "--decoder-define-dim", args.decoder_define_dim)]
    for enc_flag, enc, dec_flag, dec in pairs:
        if bool(enc) != bool(dec) or (enc and enc != dec):
            raise ValueError(f"--share-all-embeddings uses one input layer for both sides: {enc_flag} ({enc}) must "
                             f"equal {dec_flag} ({dec})")
    if args.encoder_adaptive_input_cutoff not in (None, args.adaptive_input_cutoff):
        raise ValueError("--share-all-embeddings: drop --encoder-adaptive-input-cutoff (one adaptive input serves "
                         "both sides, with --adaptive-input-cutoff)")


def _fill_defaults(args) -> None:
    """fairseq's ``base_architecture`` plus our flags' defaults; a tied decoder DeFINE scores at its width n."""
    fill_dataclass_defaults(args, AdaptiveTransformerConfig)
    _set(args, tie_adaptive_proj=False, adaptive_softmax_factor=4)  # fairseq's defaults, not set by base_architecture
    default_output_to_define_width(args)
    base_architecture(args)


# ------------------------------------------------------------------------------------------------ architectures
def _symmetric(args, layers: int, dim: int, ffn: int, heads: int, dropout: float) -> None:
    """The same body on both sides (defaults only: flags given on the command line win)."""
    for side in ("encoder", "decoder"):
        _set(args, **{f"{side}_layers": layers, f"{side}_embed_dim": dim, f"{side}_ffn_embed_dim": ffn,
                      f"{side}_attention_heads": heads})
    _set(args, dropout=dropout)
    _fill_defaults(args)


@register_model_architecture("adaptive_transformer", "adaptive_transformer_tiny")
def adaptive_transformer_tiny(args):
    """One block each side, width 32: tests and CPU demos (plain embeddings unless flags say otherwise)."""
    _symmetric(args, layers=1, dim=32, ffn=64, heads=2, dropout=0.0)


@register_model_architecture("adaptive_transformer", "adaptive_transformer_small")
def adaptive_transformer_small(args):
    """Two blocks each side, width 256, FFN 1024, 4 heads, dropout 0.1: the README's CPU example."""
    _symmetric(args, layers=2, dim=256, ffn=1024, heads=4, dropout=0.1)


def _define_both_sides(args):
    """DeFINE on both sides over one shared plain embedding (Mehta et al. 2020, WMT'14 En-De: n=128, k=1024, N=3)."""
    _set(args, encoder_define_dim=128, decoder_define_dim=128, share_all_embeddings=True,
         define_expand_dim=1024, define_layers=3, define_max_groups=DEFINE_DEFAULTS["max_groups"])


@register_model_architecture("adaptive_transformer", "adaptive_transformer_wmt_en_de_define")
def adaptive_transformer_wmt_en_de_define(args):
    """Transformer base (Vaswani et al. 2017: 6+6 blocks, m=512, FFN 2048, 8 heads) with DeFINE, m=512."""
    _define_both_sides(args)
    _fill_defaults(args)


@register_model_architecture("adaptive_transformer", "adaptive_transformer_wmt_en_de_big_define")
def adaptive_transformer_wmt_en_de_big_define(args):
    """Transformer big (6+6 blocks, m=1024, FFN 4096, 16 heads, dropout 0.3) with DeFINE, m=1024."""
    _define_both_sides(args)
    _set(args, encoder_embed_dim=1024, decoder_embed_dim=1024, encoder_ffn_embed_dim=4096, decoder_ffn_embed_dim=4096,
         encoder_attention_heads=16, decoder_attention_heads=16, dropout=0.3, attention_dropout=0.1)
    _fill_defaults(args)
