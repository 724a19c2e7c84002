"""Decoder self-attention through ``torch.nn.functional.scaled_dot_product_attention(is_causal=True)``.

fairseq's decoder hands its self-attention an explicit ``T x T`` float mask (``buffered_future_mask``), and its
``MultiheadAttention`` passes that mask on to PyTorch. An explicit mask rules out the flash kernels (CUDA, and the
CPU flash kernel reads it from memory); the math is the same causal softmax when the only mask is the future mask.
:class:`CausalSelfAttention` keeps fairseq's parameters and state-dict keys (``q_proj``, ``k_proj``, ``v_proj``,
``out_proj``) and takes the ``is_causal`` route exactly when that holds: full-sequence self-attention (no incremental
state), the decoder's future mask, no key padding mask, no attention weights asked for, no extra key/value biases.
Every other call (incremental decoding, padded batches, alignment heads) goes through fairseq's own code.
Our decoders build their layers as :class:`CausalDecoderLayer` (nothing of fairseq's is modified).
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from fairseq.distributed import fsdp_wrap
from fairseq.models.transformer import TransformerConfig
from fairseq.modules import MultiheadAttention
from fairseq.modules.checkpoint_activations import checkpoint_wrapper
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase
from torch import Tensor, nn


class CausalSelfAttention(MultiheadAttention):
    """fairseq's ``MultiheadAttention`` with a single-product Q/K/V projection and causal SDPA for the decoder's
    full-sequence self-attention; ``T x B x C -> T x B x C`` as in fairseq."""

    def causal_route(
        self,
        query: Tensor,
        key: Optional[Tensor],
        value: Optional[Tensor],
        key_padding_mask: Optional[Tensor],
        incremental_state,
        need_weights: bool,
        static_kv: bool,
        attn_mask: Optional[Tensor],
        before_softmax: bool,
        need_head_weights: bool,
    ) -> bool:
        tgt_len = query.size(0)
        return (
            self.self_attention
            and key is query  # fairseq's decoder layer passes the same tensor as query, key and value
            and value is query
            and incremental_state is None
            and attn_mask is not None
            and attn_mask.shape == (tgt_len, tgt_len)
            and key_padding_mask is None
            and not (need_weights or need_head_weights or before_softmax or static_kv)
            and not self.onnx_trace
            and not self.skip_embed_dim_check
            and not self.use_xformers
            and query.device.type != "xla"
        )

    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor],
        value: Optional[Tensor],
        key_padding_mask: Optional[Tensor] = None,
        incremental_state=None,
        need_weights: bool = True,
        static_kv: bool = False,
        attn_mask: Optional[Tensor] = None,
        before_softmax: bool = False,
        need_head_weights: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        if self.causal_route(
            query, key, value, key_padding_mask, incremental_state, need_weights, static_kv, attn_mask, before_softmax,
            need_head_weights,
        ):
            return self.causal_forward(query), None
        return super().forward(
            query, key, value, key_padding_mask=key_padding_mask, incremental_state=incremental_state,
            need_weights=need_weights, static_kv=static_kv, attn_mask=attn_mask, before_softmax=before_softmax,
            need_head_weights=need_head_weights,
        )

    def causal_forward(self, x: Tensor) -> Tensor:
        """``T x B x C -> T x B x C``: softmax(q k^T / sqrt(d_head) + future mask) v, heads joined, ``out_proj``."""
        tgt_len, bsz, dim = x.shape
        # one GEMM for Q, K and V (fairseq runs three); the concatenated weight's gradient splits back in autograd
        weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        bias = None if self.q_proj.bias is None else torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
        qkv = F.linear(x, weight, bias).view(tgt_len, bsz, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 1, 3, 0, 4).unbind(0)  # each B x H x T x d_head, last dim contiguous
        p = self.dropout_module.p if (self.training or self.dropout_module.apply_during_inference) else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        return self.out_proj(out.permute(2, 0, 1, 3).reshape(tgt_len, bsz, dim))


class CausalDecoderLayer(TransformerDecoderLayerBase):
    """fairseq's decoder layer built with :class:`CausalSelfAttention` as its self-attention (same constructor
    arguments as fairseq's, so the same parameters and state-dict keys)."""

    def build_self_attention(self, embed_dim, cfg, add_bias_kv=False, add_zero_attn=False):
        if cfg.cross_self_attention or add_bias_kv or add_zero_attn:
            # the self-attention then also reads the encoder, or extra keys: its mask is not the future mask alone
            return super().build_self_attention(embed_dim, cfg, add_bias_kv, add_zero_attn)
        return CausalSelfAttention(
            embed_dim,
            cfg.decoder.attention_heads,
            dropout=cfg.attention_dropout,
            self_attention=True,
            q_noise=self.quant_noise,
            qn_block_size=self.quant_noise_block_size,
            xformers_att_config=cfg.decoder.xformers_att_config,
        )


def build_causal_decoder_layer(cfg: TransformerConfig, no_encoder_attn: bool) -> nn.Module:
    """:class:`CausalDecoderLayer`, wrapped for activation checkpointing and FSDP as fairseq wraps its own layers."""
    layer = CausalDecoderLayer(cfg, no_encoder_attn)
    if cfg.checkpoint_activations:
        layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
    return fsdp_wrap(layer, min_num_params=0 if cfg.checkpoint_activations else cfg.min_params_to_wrap)
