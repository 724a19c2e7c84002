"""Transformer-XL's body (Dai et al. 2019, https://arxiv.org/abs/1901.02860) in pure torch: relative positional
multi-head attention with the two learned biases u and v (Sec. 3.3), and segment-level recurrence, a memory of the
hidden states of earlier segments that each layer attends to without back-propagating into it (Sec. 3.2).

Attention of query i (position ``M + i`` of the ``K = M + T`` keys, ``M`` of them memory) to key j, at distance
``i + M - j``, is (Sec. 3.3, terms (a)+(c) and (b)+(d))::

    score(i, j) = (q_i + u)^T k_j + (q_i + v)^T W_R R_{i + M - j}

with ``R`` the sinusoid of the distance (clamped at ``clamp_len``). The second term is computed once for every query
against the K distances and moved into place by :func:`relative_shift` (no Python loop); it enters
``scaled_dot_product_attention`` as its additive mask, with ``-inf`` where query i may not look: the future, and with
``same_length`` every key ``mem_len`` or more positions back, so that each query sees as many keys as any other.

Post-norm, attention projections without bias and a sqrt(d)-scaled embedding, as the original; ``normalize_before``
gives pre-norm (with a final LayerNorm, which the original's pre-norm option lacks).
"""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoid(distances: Tensor, dim: int) -> Tensor:
    """``K -> K x dim``: Transformer-XL's positional encoding of each distance (sines of every frequency, then
    cosines)."""
    if dim % 2:
        raise ValueError(f"Transformer-XL's sinusoid needs an even model width, got {dim}")
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=distances.device, dtype=torch.float32) / dim))
    angles = distances.float().unsqueeze(1) * inv_freq.unsqueeze(0)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def relative_shift(scores: Tensor) -> Tensor:
    """``... x T x K`` scores of each query against the distances ``K-1, ..., 0`` (column p: distance ``K-1-p``) ->
    ``... x T x K`` scores of query i against key j, whose distance is ``i + K - T - j``. One pad and two reshapes:
    exact wherever ``j <= i + K - T`` (key not in the future); the other entries are left over and must be masked."""
    *lead, t, k = scores.shape
    padded = F.pad(scores, (1, 0))  # ... x T x (K + 1): row i's distance column p now sits at p + 1
    return padded.view(*lead, k + 1, t)[..., 1:, :].reshape(*lead, t, k)


def blocked(t: int, m: int, same_length: bool, mem_len: int, device=None) -> Tensor:
    """``T x (M + T)`` bool, True where query i may not attend to key j: the future (distance ``i + M - j < 0``) and,
    with ``same_length``, distances of ``mem_len`` or more (each query sees ``mem_len`` keys, itself included)."""
    distance = torch.arange(t, device=device).unsqueeze(1) + m - torch.arange(m + t, device=device).unsqueeze(0)
    mask = distance < 0
    return mask | (distance >= mem_len) if same_length else mask


class RelativeAttention(nn.Module):
    """Multi-head attention with relative positions: ``B x T x d`` queries (and ``B x M x d`` memory) -> ``B x T x d``,
    with its residual connection and LayerNorm (post-norm, or pre-norm with ``normalize_before``)."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float, attention_dropout: float,
                 normalize_before: bool):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.pos = nn.Linear(dim, inner, bias=False)  # W_R: the distance encodings' keys
        self.out = nn.Linear(inner, dim, bias=False)
        self.norm = nn.LayerNorm(dim)
        self.dropout, self.attention_dropout = dropout, attention_dropout
        self.normalize_before = normalize_before

    def forward(self, h: Tensor, memory: Optional[Tensor], pos: Tensor, u: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """``h: B x T x d``, ``memory: B x M x d`` (or None), ``pos: K x d`` encodings of distances ``K-1..0``,
        ``u, v: H x D``, ``mask: T x K`` (True: blocked) -> ``B x T x d``."""
        b, t, _ = h.shape
        keys_in = h if memory is None else torch.cat([memory, h], dim=1)
        if self.normalize_before:
            keys_in = self.norm(keys_in)
        k_len, inner = keys_in.size(1), self.heads * self.head_dim
        # queries only for the segment (not for the memory, whose queries nothing reads)
        q = F.linear(keys_in[:, -t:], self.qkv.weight[:inner]).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        kv = F.linear(keys_in, self.qkv.weight[inner:]).view(b, k_len, 2, self.heads, self.head_dim)
        key, value = kv.unbind(2)
        key, value = key.transpose(1, 2), value.transpose(1, 2)  # B x H x K x D
        r = self.pos(pos).view(k_len, self.heads, self.head_dim).transpose(0, 1)  # H x K x D
        scale = self.head_dim**-0.5
        position_scores = relative_shift(torch.matmul(q + v.unsqueeze(1), r.transpose(1, 2)))  # B x H x T x K
        bias = (position_scores * scale).masked_fill(mask, float("-inf"))
        attn = F.scaled_dot_product_attention(
            q + u.unsqueeze(1), key, value, attn_mask=bias,
            dropout_p=self.attention_dropout if self.training else 0.0, scale=scale,
        )
        out = F.dropout(self.out(attn.transpose(1, 2).reshape(b, t, inner)), self.dropout, self.training)
        return h + out if self.normalize_before else self.norm(h + out)


class FeedForward(nn.Module):
    """``x -> norm(x + dropout(W2 dropout(relu(W1 x))))`` (post-norm) or ``x + ...(norm(x))`` (pre-norm)."""

    def __init__(self, dim: int, inner: int, dropout: float, normalize_before: bool):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, inner), nn.Linear(inner, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout, self.normalize_before = dropout, normalize_before

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(x) if self.normalize_before else x
        y = F.dropout(F.relu(self.fc1(y)), self.dropout, self.training)
        y = F.dropout(self.fc2(y), self.dropout, self.training)
        return x + y if self.normalize_before else self.norm(x + y)


class TransformerXLLayer(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, ffn_dim: int, dropout: float, attention_dropout: float,
                 normalize_before: bool):
        super().__init__()
        self.attention = RelativeAttention(dim, heads, head_dim, dropout, attention_dropout, normalize_before)
        self.ffn = FeedForward(dim, ffn_dim, dropout, normalize_before)

    def forward(self, h, memory, pos, u, v, mask):
        return self.ffn(self.attention(h, memory, pos, u, v, mask))


class TransformerXL(nn.Module):
    """The stack: ``B x T x d`` embedded tokens and a memory (one ``B x M x d`` tensor per layer: the inputs of that
    layer over the last M positions) -> ``B x T x d`` features and the inputs of every layer for this segment (from
    which :func:`next_memory` makes the next memory).

    ``shared_rel_bias``: one u, v pair for all layers (the original PyTorch code) instead of one per layer (its
    TensorFlow code, HuggingFace). ``clamp_len > 0``: distances beyond it use its encoding. ``same_length``: every
    query sees ``mem_len`` keys (needs ``mem_len > 0``)."""

    def __init__(self, dim: int, layers: int, heads: int, head_dim: int, ffn_dim: int, dropout: float = 0.0,
                 attention_dropout: float = 0.0, normalize_before: bool = False, shared_rel_bias: bool = False,
                 clamp_len: int = -1, same_length: bool = False, mem_len: int = 0):
        super().__init__()
        if same_length and mem_len <= 0:
            raise ValueError("--same-length makes every token see --mem-len keys: give --mem-len > 0 (the evaluation "
                             "protocol: --model-overrides '{\"mem_len\":640,\"clamp_len\":400,\"same_length\":True}')")
        if dim % 2:
            raise ValueError(f"Transformer-XL's sinusoid needs an even --decoder-embed-dim, got {dim}")
        self.dim = dim
        self.layers = nn.ModuleList(
            TransformerXLLayer(dim, heads, head_dim, ffn_dim, dropout, attention_dropout, normalize_before)
            for _ in range(layers)
        )
        pairs = 1 if shared_rel_bias else layers
        self.u = nn.Parameter(torch.empty(pairs, heads, head_dim))
        self.v = nn.Parameter(torch.empty(pairs, heads, head_dim))
        self.final_norm = nn.LayerNorm(dim) if normalize_before else None
        self.dropout = dropout
        self.clamp_len, self.same_length, self.mem_len = clamp_len, same_length, mem_len
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """The original's initialisation: weights and u, v from N(0, 0.02), biases 0 (LayerNorms: 1, 0)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.u, 0.0, std)
        nn.init.normal_(self.v, 0.0, std)

    def forward(self, x: Tensor, memory: Optional[List[Tensor]] = None) -> Tuple[Tensor, List[Tensor]]:
        t = x.size(1)
        m = 0 if memory is None else memory[0].size(1)
        distances = torch.arange(m + t - 1, -1, -1, device=x.device)
        if self.clamp_len > 0:
            distances = distances.clamp(max=self.clamp_len)
        pos = F.dropout(sinusoid(distances, self.dim).to(x.dtype), self.dropout, self.training)
        mask = blocked(t, m, self.same_length, self.mem_len, x.device)
        h = F.dropout(x, self.dropout, self.training)
        inputs = []
        for i, layer in enumerate(self.layers):
            inputs.append(h)
            pair = 0 if self.u.size(0) == 1 else i
            h = layer(h, None if memory is None else memory[i], pos, self.u[pair], self.v[pair], mask)
        if self.final_norm is not None:
            h = self.final_norm(h)
        return F.dropout(h, self.dropout, self.training), inputs


def next_memory(memory: Optional[List[Tensor]], inputs: List[Tensor], keep: Optional[int]) -> Optional[List[Tensor]]:
    """The memory for the next segment: per layer the last ``keep`` positions of memory and this segment's inputs
    (all of them with ``keep`` None: incremental decoding), detached, so no gradient reaches earlier segments.
    ``keep`` 0: no memory."""
    if keep == 0:
        return None
    out = []
    for i, h in enumerate(inputs):
        full = h if memory is None else torch.cat([memory[i], h], dim=1)
        out.append((full if keep is None else full[:, -keep:]).detach())
    return out


def count_layer_parameters(dim: int, heads: int, head_dim: int, ffn_dim: int) -> int:
    """Closed form of one layer's parameters (u, v aside): q, k, v, W_R and the output projection without bias, two
    LayerNorms, the two feed-forward linears with bias."""
    inner = heads * head_dim
    return 5 * dim * inner + 2 * 2 * dim + 2 * dim * ffn_dim + ffn_dim + dim
