"""DeFINE: deep factorized input token embeddings (Mehta et al., ICLR 2020, https://arxiv.org/abs/1911.12385).

Map-expand-reduce (Sections 3.1-3.3 of the paper), laid out as the authors' released unit (repository
``sacmehta/delight``, ``DExTraUnit`` with ``is_iclr_version=True``, wired by ``DExTraEmb``):

    e   = dropout_t(s * map(token))                  width n; s = sqrt(n) on a plain embedding, 1 on an adaptive
                                                     input; one dropout mask per sequence, shared by its time steps
    x   = act(LN(W_in e + b))                        input layer n -> d (d = m / 2 by default), dropout
    y_1 = GLT_1(x)                                   N grouped layers, g_l groups each
    y_l = GLT_l(mix(x, y_{l-1})),  l = 2 .. N        the last one ends at the model width m
    out = act(LN(W_out [x ; y_N] + b))               output layer d + m -> m, dropout

``GLT`` (group linear transform) splits its input into g chunks and maps chunk j by its own matrix (with bias), then
normalises each group's output by one LayerNorm whose affine weights the groups share, applies the activation and
dropout. ``mix`` is the paper's mixer: x and y_{l-1} are each cut into the next layer's g chunks and joined chunk by
chunk (group j reads input chunk j, then output chunk j).

Group counts (the released rule): counts double from 1 and restart at 1 when they would pass ``max_groups``; the
list is then reversed (N=3: 4, 2, 1; N=7 with max_groups=16: 2, 1, 16, 8, 4, 2, 1), so the last layer is dense.
Widths: N points spaced linearly from d to k, truncated to integers; the output of layer l < N is the l-th of them
rounded up to a multiple of max(g_l, g_{l+1}, 8); layer N outputs m.

Table 6's variants (the paper's appendix figures of them are not in our sources; what we chose): ``residual``
(Table 6a) fixes every grouped layer at k/2 (rounded up to split evenly), adds each layer's input to its output where
the widths agree (y_l = y_{l-1} + GLT_l(y_{l-1}); the first layer too when d = k/2, so it adds x), has no other
link to x, and lets the output layer reduce k/2 to m;
``reduce=False`` (Table 6b, "- Reduce") ends the unit at k instead of m (its last grouped layer and output layer are
k wide), for a body that reads any width.

Each output depends on its token alone, so in eval mode the whole unit can be replaced by a V x m table (V x k
without the reduction) computed once (``cache=True``, the paper's Section 3.4); the table is rebuilt whenever a
parameter changes.
"""

import math
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .triton_norm_act import ACTIVATIONS, norm_act

# Table 4 of the paper: the group rule of the N layers (hgt: the released rule above; glt: max_groups in every
# layer; glt_shuffle: the same with the released GLT's feature shuffle; linear: one group everywhere) ...
TRANSFORMS = ("hgt", "glt", "glt_shuffle", "linear")
# ... and how each layer after the first reaches the projected input x (mixer: DeFINE; concat: [x ; y] joined whole,
# "DeFINE w/o mixer"; none: no link to x, the output layer reads y_N alone, the HGT / GLT / linear rows; residual:
# Table 6a's "DeFINE + residual conn.", every grouped layer k/2 wide and adding its input to its output where the
# widths agree, no link to x)
CONNECTIONS = ("mixer", "concat", "none", "residual")


@dataclass(frozen=True)
class DefineOptions:
    """Everything of a DeFINE unit but its widths n (in) and m (out), with the released unit's defaults (the one place
    they are written: the command-line flags take theirs from here)."""

    expand_dim: int = 1024  # k, the widest grouped layer
    n_layers: int = 3  # N
    max_groups: int = 8  # DExTraUnit's default
    proj_dim: Optional[int] = None  # d; None: m / 2
    transform: str = "hgt"  # one of TRANSFORMS
    connection: str = "mixer"  # one of CONNECTIONS
    activation: str = "swish"
    dropout: float = 0.1
    embed_dropout: float = 0.1  # the released DEFAULT_DROPOUT
    cache: bool = False  # eval mode: look tokens up in a V x m table computed once
    reduce: bool = True  # False: Table 6b's "- Reduce", the unit ends at k instead of the model width m

    def projected_width(self, output_dim: int) -> int:
        return self.proj_dim or output_dim // 2

    def unit_width(self, output_dim: int) -> int:
        """The width of the unit's output for a model of width ``output_dim`` (m): m, or k without the reduction."""
        return output_dim if self.reduce else self.expand_dim


@dataclass(frozen=True)
class LayerSpec:
    """One grouped layer: ``in_dim -> out_dim`` in ``groups`` independent blocks."""

    in_dim: int
    out_dim: int
    groups: int


def hgt_groups(n_layers: int, max_groups: int) -> List[int]:
    """The released group rule: 1, 2, 4, ... restarting at 1 past ``max_groups``, reversed (ends with 1)."""
    groups, power = [], 0
    for _ in range(n_layers):
        g = 2**power
        if g > max_groups:
            g, power = 1, 1
        else:
            power += 1
        groups.append(g)
    return groups[::-1]


def group_schedule(transform: str, n_layers: int, max_groups: int) -> List[int]:
    if transform == "hgt":
        return hgt_groups(n_layers, max_groups)
    if transform in ("glt", "glt_shuffle"):
        return [max_groups] * n_layers
    if transform == "linear":
        return [1] * n_layers
    raise ValueError(f"--define-transform={transform!r}: choose one of {', '.join(TRANSFORMS)}")


def linked_width(proj_dim: int, connection: str) -> int:
    """How much of the projected input x each layer after the first (and the output layer) reads besides its own
    input: all of it (mixer, concat), or nothing (none, residual)."""
    return proj_dim if connection in ("mixer", "concat") else 0


def define_layout(
    proj_dim: int,
    expand_dim: int,
    output_dim: int,
    n_layers: int,
    max_groups: int,
    transform: str = "hgt",
    connection: str = "mixer",
) -> List[LayerSpec]:
    """The N grouped layers of a DeFINE unit whose input layer ends at ``proj_dim`` (d)."""
    if n_layers < 2:
        raise ValueError(f"--define-layers={n_layers}: DeFINE needs at least 2 grouped layers")
    if max_groups < 1:
        raise ValueError(f"--define-max-groups={max_groups} must be at least 1")
    if expand_dim < proj_dim:
        raise ValueError(
            f"--define-expand-dim={expand_dim} must be at least the projected width d={proj_dim} "
            f"(--define-proj-dim, default --decoder-embed-dim / 2)"
        )
    if connection not in CONNECTIONS:
        raise ValueError(f"--define-connection={connection!r}: choose one of {', '.join(CONNECTIONS)}")
    if transform == "hgt" and max_groups & (max_groups - 1):
        below = 1 << (max_groups.bit_length() - 1)
        raise ValueError(
            f"--define-max-groups={max_groups}: the hierarchical rule doubles group counts (1, 2, 4, ...), so "
            f"{max_groups} builds the same unit as {below} (groups {', '.join(map(str, hgt_groups(n_layers, below)))}"
            f"): give a power of two ({below} or {below * 2}), or --define-transform glt for {max_groups} groups in "
            f"every layer")
    groups = group_schedule(transform, n_layers, max_groups)
    if connection == "residual":
        # Table 6a: "we fix the dimension of each layer to be k/2 instead of linearly spanning from n to k" (every
        # grouped layer, the last included; the output layer then reduces k/2 to m), rounded up to split evenly
        step = max(*groups, 8)
        width = math.ceil(expand_dim // 2 / step) * step
        layout = [LayerSpec(proj_dim if i == 0 else width, width, groups[i]) for i in range(n_layers)]
        check_splits(layout, proj_dim, max_groups, connection)
        return layout
    # truncation to integers as the released code does (numpy's linspace, then a cast)
    raw = np.linspace(proj_dim, expand_dim, n_layers).astype(np.int64).tolist()[1:]
    widths = []
    for i, w in enumerate(raw):
        step = max(groups[i], groups[i + 1], 8)  # split evenly by this layer and the next (and by 8, tensor cores)
        widths.append(math.ceil(w / step) * step)
    widths.append(output_dim)
    skip = linked_width(proj_dim, connection)
    layout = [LayerSpec(proj_dim if i == 0 else widths[i - 1] + skip, widths[i], groups[i]) for i in range(n_layers)]
    check_splits(layout, proj_dim, max_groups, connection)
    return layout


def check_splits(layout: List[LayerSpec], proj_dim: int, max_groups: int, connection: str) -> None:
    for i, spec in enumerate(layout):
        split = [proj_dim] if i == 0 or connection == "mixer" else []
        for what, width in [("projected width d", w) for w in split] + [("input", spec.in_dim), ("output", spec.out_dim)]:
            if width % spec.groups:
                raise ValueError(
                    f"DeFINE layer {i + 1} has {spec.groups} groups, which do not split its {what} {width}: choose "
                    f"--define-max-groups (now {max_groups}), --define-proj-dim or --decoder-embed-dim so that it does"
                )


class GroupLinear(nn.Module):
    """``G`` independent linear maps on ``G`` chunks, then group-wise LayerNorm, activation and dropout.

    Works in group-major layout, ``G x M x in/G -> G x M x out/G``: the ``G`` products are one batched matrix product
    (the input may be a strided view: ``bmm`` reads it with a leading dimension, no copy), and the output stays
    group-major so that the next layer's mixer reads it without a transpose. The LayerNorm has one set of
    ``out/G`` affine weights shared by the groups. With ``shuffle`` (the GLT+shuffle ablation) the product's output
    is reordered feature-major before the normalisation, so each new group holds one slice of every old group, as the
    released GLT does.
    """

    def __init__(self, in_dim: int, out_dim: int, groups: int, activation: str = "swish", dropout: float = 0.0,
                 shuffle: bool = False):
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
        self.shuffle = shuffle and groups > 1
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # As released: Xavier-uniform, zero bias. A one-group layer is a dense layer (fan-in in, fan-out out). A
        # grouped one applies PyTorch's Xavier rule to the g x in/g x out/g tensor itself, which reads dim 0 as output
        # maps and dim 2 as a receptive field: fan-in (in/g)(out/g), fan-out out, a smaller bound than per-group
        # Xavier; kept so that training starts where the authors' did.
        g, fan_in, fan_out = self.weight.shape
        if g == 1:
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            nn.init.uniform_(self.weight, -bound, bound)
        else:
            nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)
        self.norm.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """``G x M x in/G -> G x M x out/G``."""
        y = torch.baddbmm(self.bias, x, self.weight)
        if self.shuffle:
            g, rows, width = y.shape
            y = y.permute(1, 2, 0).reshape(rows, g, width).transpose(0, 1).contiguous()
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
    """Group-major ``G x M x d -> M x Gd`` in feature order (a view for one group, else one copy)."""
    return y[0] if y.shape[0] == 1 else torch.cat(y.unbind(0), dim=-1)


def mix(x: Tensor, y: Tensor, groups: int) -> Tensor:
    """The paper's mixer: the ``M x d`` input and the previous (group-major) output, each cut into ``groups`` chunks
    and joined chunk by chunk -> ``G x M x (d + w)/G`` (group j = input chunk j, then output chunk j)."""
    return torch.cat([group_major(x, groups), *regroup(y, groups)], dim=-1)


def time_shared_dropout(e: Tensor, p: float, training: bool) -> Tensor:
    """Dropout on ``... x T x n`` embeddings with one mask per sequence, shared by its time steps (the released
    wiring's recurrent-style embedding dropout); a 1-d batch of tokens gets one mask per token."""
    if not training or p <= 0:
        return e
    shape = (*e.shape[:-2], 1, e.shape[-1]) if e.dim() >= 3 else e.shape
    mask = torch.empty(shape, dtype=e.dtype, device=e.device).bernoulli_(1 - p) / (1 - p)
    return e * mask


class DeFINE(nn.Module):
    """Map (``embedding``: tokens -> n) -> input layer (n -> d) -> N grouped layers (d .. k -> m) -> output layer.

    ``forward``: ``tokens`` of any shape ``S`` (indices) -> ``S x output_dim``. ``embedding`` is any module mapping
    indices to ``S x input_dim`` and exposing ``padding_idx`` (an ``nn.Embedding`` or an ``AdaptiveInput``).
    """

    def __init__(
        self,
        embedding: nn.Module,
        input_dim: int,
        output_dim: int,
        options: DefineOptions = DefineOptions(),
        embed_scale: float = 1.0,
    ):
        super().__init__()
        o = options
        proj_dim = o.projected_width(output_dim)
        out_dim = o.unit_width(output_dim)
        self.map = embedding
        self.input_dim = input_dim
        self.proj_dim = proj_dim
        self.embedding_dim = out_dim
        self.padding_idx = embedding.padding_idx
        self.embed_scale = embed_scale
        self.embed_dropout = o.embed_dropout
        self.connection = o.connection
        self.layout = define_layout(proj_dim, o.expand_dim, out_dim, o.n_layers, o.max_groups, o.transform,
                                    o.connection)
        self.input_layer = GroupLinear(input_dim, proj_dim, 1, o.activation, o.dropout)
        self.layers = nn.ModuleList(
            GroupLinear(s.in_dim, s.out_dim, s.groups, o.activation, o.dropout, shuffle=o.transform == "glt_shuffle")
            for s in self.layout
        )
        linked = linked_width(proj_dim, o.connection)
        self.output_layer = GroupLinear(linked + self.layout[-1].out_dim, out_dim, 1, o.activation, o.dropout)
        self.cache = o.cache
        self.clear_cache()

    def block_parameters(self) -> int:
        """Parameters of the unit without its map layer (the paper's "DeFINE" count)."""
        mapped = {id(p) for p in self.map.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in mapped)

    def transform_embeddings(self, e: Tensor) -> Tensor:
        """``M x n`` mapped embeddings -> ``M x m``."""
        x = self.input_layer(e.unsqueeze(0))[0]
        y = group_major(x, self.layout[0].groups)
        for i, (layer, spec) in enumerate(zip(self.layers, self.layout)):
            if i > 0:
                if self.connection == "mixer":
                    y = mix(x, y, spec.groups)
                elif self.connection == "concat":
                    y = group_major(torch.cat([x, flatten_groups(y)], dim=-1), spec.groups)
                else:
                    pieces = regroup(y, spec.groups)
                    y = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)
            if self.connection == "residual" and spec.in_dim == spec.out_dim:
                # input and output cut into the same groups at the same width: group j's features line up
                y = y + layer(y)
            else:
                y = layer(y)
        last = flatten_groups(y)
        z = last if linked_width(self.proj_dim, self.connection) == 0 else torch.cat([x, last], dim=-1)
        return self.output_layer(z.unsqueeze(0))[0]

    def compute(self, tokens: Tensor) -> Tensor:
        e = self.map(tokens)
        if self.embed_scale != 1.0:
            e = e * self.embed_scale
        e = time_shared_dropout(e, self.embed_dropout, self.training)
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
        """The ``V x embedding_dim`` output of every token, built on first use and whenever a weight has changed
        since."""
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
