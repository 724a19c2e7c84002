"""Decoder self-attention through ``torch.nn.functional.scaled_dot_product_attention(is_causal=True)``.

fairseq's decoder hands its self-attention an explicit ``T x T`` float mask (``buffered_future_mask``), and its
``MultiheadAttention`` passes that mask on to PyTorch. An explicit mask rules out the flash kernels (CUDA, and the
CPU flash kernel reads it from memory); the math is the same causal softmax when the only mask is the future mask.
:class:`CausalSelfAttention` keeps fairseq's parameters and state-dict keys (``q_proj``, ``k_proj``, ``v_proj``,
``out_proj``) and takes the ``is_causal`` route exactly when that holds: full-sequence self-attention (no incremental
state), the decoder's future mask, no key padding mask, no attention weights asked for, no extra key/value biases.
Every other call (incremental decoding, padded batches, alignment heads) goes through fairseq's own code.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from fairseq.modules import MultiheadAttention
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
            and self.bias_k is None
            and not self.add_zero_attn
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


def use_causal_attention(decoder: nn.Module) -> int:
    """Give every decoder layer's self-attention the causal SDPA route; returns how many modules took it.

    The modules keep their parameters (and so checkpoints load unchanged); only their class changes, which adds
    a method and no state. Skipped with ``--cross-self-attention`` (the self-attention then also reads the
    encoder, and its mask is no longer the future mask alone)."""
    if getattr(decoder, "cross_self_attention", False):
        return 0
    count = 0
    for layer in decoder.layers:
        attn = getattr(layer, "self_attn", None)
        if type(attn) is MultiheadAttention:
            attn.__class__ = CausalSelfAttention
            count += 1
    return count
