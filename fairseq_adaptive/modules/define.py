"""DeFINE: deep factorized input token embeddings (Mehta et al., ICLR 2020, https://arxiv.org/abs/1911.12385).

Map-expand-reduce (Section 3 of the paper): a token is *mapped* to a low-dimensional vector ``e`` (width n, from a
plain embedding or an adaptive input projected to n), *expanded* by a hierarchical group transformation (HGT) to
width k, and *reduced* to the model width m:

    w_l = n + (k - n) * l / (N - 1)                  widths of the N levels, l = 0 .. N-1 (w_0 = n, w_{N-1} = k)
    y_1 = GLT_1(e)                                   g groups
    y_l = GLT_l(mix(e, y_{l-1}))                     g / 2^(l-1) groups (at least 1), l = 2 .. N-1
    out = W_r [e ; y_{N-1}] + b_r                    the reduction to m: one dense map (the "1 group" level)

``GLT`` (group linear transform) splits its input into G chunks and maps chunk j by its own matrix, followed by
group-wise layer normalisation and an activation. ``mix`` is the paper's skip connection: ``e`` and ``y_{l-1}`` are
each split into the next layer's G chunks and concatenated chunk by chunk, so every group sees a slice of the
input token's embedding as well as a slice of the previous layer.

Counting N as the number of width levels (N - 1 grouped expansions, then the reduction) is our reading of the
paper's "N layers"; with the first layer's group count g = 64 it gives the paper's 1.92M parameters for the
WikiText-103 block (n = 128, k = 4096, m = 384, N = 3); see README.md for the count at every n.

Each output depends on its token alone, so in eval mode the whole block can be replaced by a V x m table computed
once (``cache=True``); the table is rebuilt whenever a parameter changes.
"""

import math
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .triton_norm_act import ACTIVATIONS, norm_act

TRANSFORMS = ("hgt", "glt", "glt_shuffle", "linear")


@dataclass(frozen=True)
class LayerSpec:
    """One grouped expansion layer: ``in_dim -> out_dim`` in ``groups`` independent blocks."""

    in_dim: int
    out_dim: int
    groups: int
    mixes_input: bool  # its input is mix(e, previous output) rather than the previous output alone


def group_schedule(transform: str, first_groups: int, n_expansions: int) -> List[int]:
    """Group count of each expansion layer: HGT halves it layer by layer (never below 1), GLT keeps it,
    the linear ablation uses one group everywhere."""
    if transform == "hgt":
        return [max(first_groups >> i, 1) for i in range(n_expansions)]
    if transform in ("glt", "glt_shuffle"):
        return [first_groups] * n_expansions
    if transform == "linear":
        return [1] * n_expansions
    raise ValueError(f"--define-transform={transform!r}: choose one of {', '.join(TRANSFORMS)}")


def define_layout(
    input_dim: int, expand_dim: int, n_layers: int, max_groups: int, transform: str = "hgt", mixer: bool = True
) -> List[LayerSpec]:
    """The expansion layers of a DeFINE unit (the reduction to the model width follows them).

    Intermediate widths are rounded up so that both the layer producing them and the layer reading them split
    them evenly (and to a multiple of 8, for tensor cores); ``input_dim`` and ``expand_dim`` are kept as given and
    must divide by the group counts that split them.
    """
    if n_layers < 2:
        raise ValueError(f"--define-layers={n_layers}: DeFINE needs at least 2 levels (n and k), so N >= 2")
    if max_groups < 1:
        raise ValueError(f"--define-max-groups={max_groups} must be at least 1")
    if expand_dim < input_dim:
        raise ValueError(f"--define-expand-dim={expand_dim} must be at least --define-dim={input_dim} (k >= n)")
    groups = group_schedule(transform, max_groups, n_layers - 1)
    for g in set(groups):
        if input_dim % g:
            raise ValueError(
                f"--define-dim={input_dim} does not split into {g} groups: choose --define-max-groups dividing it "
                f"(a power of two up to {input_dim & -input_dim})"
            )
    if expand_dim % groups[-1]:
        raise ValueError(f"--define-expand-dim={expand_dim} must be a multiple of the last layer's {groups[-1]} groups")
    widths = [input_dim]
    for level in range(1, n_layers):
        raw = input_dim + (expand_dim - input_dim) * level / (n_layers - 1)
        if level == n_layers - 1:
            widths.append(expand_dim)
        else:
            step = math.lcm(groups[level - 1], groups[level], 8)
            widths.append(int(math.ceil(raw / step)) * step)
    return [
        LayerSpec(
            in_dim=widths[i] + (input_dim if mixer and i > 0 else 0),
            out_dim=widths[i + 1],
            groups=groups[i],
            mixes_input=mixer and i > 0,
        )
        for i in range(n_layers - 1)
    ]


class GroupLinear(nn.Module):
    """``G`` independent linear maps on ``G`` chunks, then group-wise LayerNorm, activation and dropout.

    Works in group-major layout, ``G x M x in/G -> G x M x out/G``: the ``G`` products are one batched matrix product
    (the input may be a strided view: ``bmm`` reads it with a leading dimension, no copy), and the output stays
    group-major so that the next layer's mixer reads it without a transpose. The LayerNorm has one set of
    ``out/G`` affine weights shared by the groups (normalisation within each group).
    """

    def __init__(self, in_dim: int, out_dim: int, groups: int, activation: str = "gelu", dropout: float = 0.0):
        super().__init__()
        if in_dim % groups or out_dim % groups:
            raise ValueError(f"group linear {in_dim} -> {out_dim} does not split into {groups} groups")
        if activation not in ACTIVATIONS:
            raise ValueError(f"--define-activation={activation!r}: choose one of {', '.join(ACTIVATIONS)}")
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(groups, in_dim // groups, out_dim // groups))
        self.bias = nn.Parameter(torch.empty(groups, 1, out_dim // groups))
        self.norm = nn.LayerNorm(out_dim // groups)
        self.activation = activation
        self.dropout = dropout
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier-uniform on each group's own fan-in / fan-out
        _, fan_in, fan_out = self.weight.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)
        self.norm.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """``G x M x in/G -> G x M x out/G``."""
        y = torch.baddbmm(self.bias, x, self.weight)
        y = norm_act(y, self.norm.weight, self.norm.bias, self.norm.eps, self.activation)
        return F.dropout(y, self.dropout, self.training) if self.dropout > 0 and self.training else y


def group_major(x: Tensor, groups: int) -> Tensor:
    """``M x D -> G x M x D/G`` view (group j holds features ``j*D/G .. (j+1)*D/G``)."""
    return x.view(x.shape[0], groups, -1).transpose(0, 1)


def regroup(y: Tensor, groups: int) -> List[Tensor]:
    """Views of a group-major ``G' x M x d`` output whose concatenation on the last dim is the same features cut into
    ``groups`` chunks (``G x M x G'd/G``); with ``G'`` a multiple of ``G`` no data moves until that concatenation."""
    prev = y.shape[0]
    if prev == groups:
        return [y]
    if prev % groups == 0:
        return list(y.reshape(groups, prev // groups, *y.shape[1:]).unbind(1))
    return [group_major(flatten_groups(y), groups)]


def flatten_groups(y: Tensor) -> Tensor:
    """Group-major ``G x M x d -> M x Gd`` in feature order (one copy)."""
    return torch.cat(y.unbind(0), dim=-1)


def mix(e: Tensor, y: Tensor, groups: int) -> Tensor:
    """The paper's mixer: the ``M x n`` input and the previous (group-major) output, each cut into ``groups`` chunks
    and joined chunk by chunk -> ``G x M x (n + w)/G`` (group j = input chunk j, then output chunk j)."""
    return torch.cat([group_major(e, groups), *regroup(y, groups)], dim=-1)


def shuffle_groups(y: Tensor) -> Tensor:
    """Channel shuffle (the GLT+shuffle ablation): group-major ``G x M x d`` -> ``M x Gd`` ordered feature-major, so
    the next layer's chunk j gathers one slice from every group of this one."""
    return y.permute(1, 2, 0).reshape(y.shape[1], -1)


class DeFINE(nn.Module):
    """Map (``embedding``: tokens -> n) -> expand (grouped layers, n -> k) -> reduce (k -> m).

    ``forward``: ``tokens`` of any shape ``S`` (indices) -> ``S x output_dim``. ``embedding`` is any module mapping
    indices to ``S x input_dim`` and exposing ``padding_idx`` (an ``nn.Embedding`` or an ``AdaptiveInput``).
    """

    def __init__(
        self,
        embedding: nn.Module,
        input_dim: int,
        expand_dim: int,
        output_dim: int,
        n_layers: int = 3,
        max_groups: int = 64,
        transform: str = "hgt",
        mixer: bool = True,
        activation: str = "gelu",
        dropout: float = 0.0,
        cache: bool = False,
    ):
        super().__init__()
        self.map = embedding
        self.input_dim = input_dim
        self.embedding_dim = output_dim  # fairseq's decoder reads these two
        self.padding_idx = embedding.padding_idx
        self.transform = transform
        self.layout = define_layout(input_dim, expand_dim, n_layers, max_groups, transform, mixer)
        self.expand = nn.ModuleList(
            GroupLinear(spec.in_dim, spec.out_dim, spec.groups, activation, dropout) for spec in self.layout
        )
        reduce_in = expand_dim + (input_dim if mixer else 0)
        self.reduce = nn.Linear(reduce_in, output_dim)
        nn.init.xavier_uniform_(self.reduce.weight)
        nn.init.zeros_(self.reduce.bias)
        self.mixer = mixer
        self.cache = cache
        self.clear_cache()

    def block_parameters(self) -> int:
        """Parameters of the expand and reduce layers (the paper's "DeFINE" count; the map layer is apart)."""
        return sum(p.numel() for p in self.expand.parameters()) + sum(p.numel() for p in self.reduce.parameters())

    def transform_embeddings(self, e: Tensor) -> Tensor:
        """``M x n`` mapped embeddings -> ``M x m``."""
        y: Optional[Tensor] = None
        for layer, spec in zip(self.expand, self.layout):
            if y is None:
                x = group_major(e, spec.groups)
            else:
                if self.transform == "glt_shuffle":
                    y = group_major(shuffle_groups(y), 1)
                pieces = regroup(y, spec.groups)
                x = mix(e, y, spec.groups) if spec.mixes_input else pieces[0] if len(pieces) == 1 else torch.cat(pieces, -1)
            y = layer(x)
        return self.reduce(torch.cat([e, *y.unbind(0)], dim=-1) if self.mixer else flatten_groups(y))

    def compute(self, tokens: Tensor) -> Tensor:
        e = self.map(tokens)
        out = self.transform_embeddings(e.reshape(-1, self.input_dim))
        return out.view(*tokens.shape, -1)

    def forward(self, tokens: Tensor) -> Tensor:
        if self.cache and not self.training:
            return F.embedding(tokens, self.table())
        return self.compute(tokens)

    # -------------------------------------------------------------------------------------------- inference cache
    def _weights_key(self):
        # in-place updates (optimizer steps, load_state_dict) bump a tensor's version counter; a new tensor
        # (.to(), .half(), re-assignment) changes its identity
        return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.parameters())

    def table(self, rows_per_step: int = 8192) -> Tensor:
        """The ``V x m`` output of every token, built on first use and whenever a weight has changed since."""
        key = self._weights_key()
        if self._table is None or self._table_key != key:
            weight = next(self.parameters())
            vocab = self.vocab_size()
            with torch.no_grad():
                ids = torch.arange(vocab, device=weight.device)
                self._table = torch.cat([self.compute(chunk) for chunk in ids.split(rows_per_step)])
            self._table_key = key
        return self._table

    def clear_cache(self) -> None:
        self._table, self._table_key = None, None

    def vocab_size(self) -> int:
        return getattr(self.map, "vocab_size", None) or self.map.num_embeddings

    def train(self, mode: bool = True):
        # weights may change through paths that bypass version counters (``p.data.copy_`` in fairseq's fp16
        # optimizer); every such change happens in training mode, so leaving eval drops the table
        if mode:
            self.clear_cache()
        return super().train(mode)
