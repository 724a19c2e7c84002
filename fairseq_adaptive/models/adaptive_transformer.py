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

from .. import fairseq_fixes
from ..modules.vocab_layers import build_embedder
from ..checks import check_dictionary, check_hub_paths, data_of, guard_task, task_setting
from .config import FastPathConfig, TranslationDefineConfig, dictionary_record, fill_dataclass_defaults
from .config import keep_widths_unset
from .config import set_defaults as _set
from .transformer_body import AdaptiveDecoder, AdaptiveEncoder
from .vocab_flags import DEFINE_DEFAULTS, MT_DECODER, MT_ENCODER, check_one_input_layer, describe


@dataclass
class AdaptiveTransformerConfig(TranslationDefineConfig, FastPathConfig, dictionary_record("source_"),
                                dictionary_record("target_")):
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
        data = data_of(task)
        src, tgt = task_setting(task, "source_lang") or "src", task_setting(task, "target_lang") or "tgt"
        check_dictionary(args, src_dict, data, "source_", f"dict.{src}.txt", "--srcdict")
        check_dictionary(args, tgt_dict, data, "target_", f"dict.{tgt}.txt", "--tgtdict")
        guard_task(task)
        if args.share_all_embeddings:
            check_one_input_layer(args, src_dict, tgt_dict)
        encoder_layers = describe(args, src_dict, MT_ENCODER, dict_file=f"dict.{src}.txt")
        decoder_layers = describe(args, tgt_dict, MT_DECODER, dict_file=f"dict.{tgt}.txt")
        encoder_embed = build_embedder(encoder_layers.input)
        # one input layer for both sides; the output layer ties to it as the flags say
        decoder_embed = encoder_embed if args.share_all_embeddings else build_embedder(decoder_layers.input)
        encoder = AdaptiveEncoder(args, src_dict, encoder_embed)
        decoder = AdaptiveDecoder(args, tgt_dict, decoder_embed, decoder_layers.output,
                                  no_encoder_attn=args.no_cross_attention)
        return cls(args, encoder, decoder)

    @classmethod
    def from_pretrained(cls, model_name_or_path, checkpoint_file="model.pt", data_name_or_path=".", **kwargs):
        """fairseq's hub loader, after checking the folder, the checkpoint's kind and the dictionaries."""
        def dict_files(state):
            task = (state.get("cfg") or {}).get("task") or {}
            langs = [kwargs.get(side) or task.get(side) for side in ("source_lang", "target_lang")]
            return [f"dict.{lang}.txt" for lang in langs if lang]  # inferred from the data's names: not known here

        check_hub_paths(cls, model_name_or_path, checkpoint_file, data_name_or_path, ("translation",), dict_files,
                        "load a language-model checkpoint with AdaptiveLanguageModel.from_pretrained or "
                        "fairseq-eval-lm")
        return super().from_pretrained(model_name_or_path, checkpoint_file, data_name_or_path, **kwargs)


def _fill_defaults(args) -> None:
    """fairseq's ``base_architecture`` plus our flags' defaults (the input and output widths left to the
    vocabulary description)."""
    fill_dataclass_defaults(args, AdaptiveTransformerConfig)
    _set(args, tie_adaptive_proj=False, adaptive_softmax_factor=4)  # fairseq's defaults, not set by base_architecture
    keep_widths_unset(base_architecture, args)


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
         define_expand_dim=1024, define_layers=3, define_max_groups=DEFINE_DEFAULTS.max_groups)


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
