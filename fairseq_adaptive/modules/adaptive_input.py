"""Adaptive input representations (Baevski & Auli, ICLR 2019, https://arxiv.org/abs/1809.10853).

The vocabulary, sorted by frequency, is split into bands by ``cutoff``. Band ``i`` holds words
``[cutoff[i-1], cutoff[i])``, embedded at ``initial_dim / factor**i`` dimensions and projected to the model
width by a band-specific linear map (Section 3 of the paper):

    e(w) = W_i E_i[w - cutoff[i-1]],   E_i in R^{|band_i| x d/k^i},  W_i in R^{d_model x d/k^i}

Parameter names match fairseq's ``fairseq.modules.AdaptiveInput`` (``embeddings.{i}.0`` is the band's table,
``embeddings.{i}.1`` its projection) so that checkpoints convert by renaming nothing.
"""

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def check_cutoff(cutoff: Sequence[int], vocab_size: int, flag: str = "--adaptive-input-cutoff") -> List[int]:
    """Validate band boundaries and return them with ``vocab_size`` appended (the last band's end)."""
    cutoff = [int(c) for c in cutoff]
    if not cutoff:
        raise ValueError(f"{flag} is empty: give increasing band boundaries such as 20000,60000")
    if any(b <= a for a, b in zip(cutoff, cutoff[1:])) or cutoff[0] <= 0:
        raise ValueError(f"{flag}={','.join(map(str, cutoff))} must be positive and strictly increasing")
    if cutoff[-1] >= vocab_size:
        raise ValueError(
            f"{flag}={','.join(map(str, cutoff))} reaches the dictionary size {vocab_size}: every boundary must be "
            f"below it, or the last band is empty (drop the last boundary, or check that the dictionary is the one "
            f"the cutoffs were chosen for)"
        )
    return cutoff + [vocab_size]


def band_dims(initial_dim: int, factor: float, n_bands: int, flag: str = "--adaptive-input-factor") -> List[int]:
    """Band widths ``initial_dim // factor**i``: a factor of at least 1 (1 keeps every band at full width; below 1
    the rare bands would be wider than the frequent ones, the opposite of the method), each width at least 1."""
    if not factor >= 1:
        raise ValueError(
            f"{flag}={factor}: the factor must be at least 1 (band i is factor^i times narrower than the first; the "
            f"paper uses 4, and 1 gives every band the full width)"
        )
    dims = [int(initial_dim // (factor**i)) for i in range(n_bands)]
    if min(dims) < 1:
        raise ValueError(
            f"{flag}={factor}: band widths {dims} reach zero; lower the factor or use fewer cutoffs ({n_bands - 1})"
        )
    return dims


class AdaptiveInput(nn.Module):
    """Frequency-banded token embedding projected to ``output_dim`` (Baevski & Auli 2019, eq. in Section 3).

    Forward runs without host synchronisation: every band looks up all positions (indices clamped into the band)
    and masks the rows that are not its own, then a single matrix product with the concatenated projections maps
    the masked ``B x T x sum(dims)`` block to ``B x T x output_dim``. Rows outside a band are exact zeros, so the
    result equals the per-band scatter of the paper while every parameter takes part in every step (which
    PyTorch DDP needs without ``find_unused_parameters``).
    """

    def __init__(
        self,
        vocab_size: int,
        padding_idx: int,
        initial_dim: int,
        factor: float,
        output_dim: int,
        cutoff: Sequence[int],
        square_proj: bool = True,
    ):
        super().__init__()
        self.cutoff = check_cutoff(cutoff, vocab_size)
        if not 0 <= padding_idx < self.cutoff[0]:
            raise ValueError(f"padding index {padding_idx} must fall in the first band [0, {self.cutoff[0]})")
        self.vocab_size = vocab_size
        self.padding_idx = padding_idx
        self.embedding_dim = output_dim  # fairseq's decoder reads this to size its input projection
        self.factor = factor
        self.dims = band_dims(initial_dim, factor, len(self.cutoff))
        if not square_proj and self.dims[0] != output_dim:
            raise ValueError(f"the first band is {self.dims[0]} wide and the output {output_dim}: it has no square "
                             f"projection to leave out")
        self.embeddings = nn.ModuleList(
            nn.Sequential(
                # Only the first band holds the padding symbol; its row stays zero and gets no gradient.
                nn.Embedding(end - start, dim, padding_idx=padding_idx if i == 0 else None),
                # (without square_proj the first band, as wide as the output, is read as it is: an identity)
                nn.Linear(dim, output_dim, bias=False) if i or square_proj else nn.Identity(),
            )
            for i, (start, end, dim) in enumerate(zip([0] + self.cutoff[:-1], self.cutoff, self.dims))
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # fairseq's initialisation: N(0, dim^-1/2) tables, Xavier-uniform projections, the padding row zeroed. fairseq
        # zeroes row padding_idx of every band (in the tail bands that row is a real word); we zero it in band 0
        # alone, where the padding symbol lives, so no rare word starts at zero.
        for emb, proj in self.embeddings:
            nn.init.normal_(emb.weight, mean=0.0, std=emb.weight.shape[1] ** -0.5)
            if isinstance(proj, nn.Linear):
                nn.init.xavier_uniform_(proj.weight)
        with torch.no_grad():
            self.embeddings[0][0].weight[self.padding_idx].zero_()

    def weights_for_band(self, band: int) -> Tuple[nn.Parameter, Optional[nn.Parameter]]:
        """The tying hook: band ``band``'s embedding table (|band| x dim) and projection (output_dim x dim; None for a
        first band read as it is)."""
        return self.embeddings[band][0].weight, getattr(self.embeddings[band][1], "weight", None)

    def projection(self, band: int) -> Tensor:
        """Band ``band``'s projection as a matrix (``output_dim x dim``; the identity where the band has none)."""
        weight = self.weights_for_band(band)[1]
        if weight is not None:
            return weight
        table = self.embeddings[band][0].weight
        return torch.eye(self.dims[band], device=table.device, dtype=table.dtype)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens``: B x T (any shape) of indices -> B x T x output_dim."""
        if len(self.embeddings) == 1:
            emb, proj = self.embeddings[0]
            return proj(emb(tokens))
        pieces = []
        for (emb, _), start, end in zip(self.embeddings, [0] + self.cutoff[:-1], self.cutoff):
            inside = (tokens >= start) & (tokens < end)
            looked_up = emb((tokens - start).clamp(0, end - start - 1))
            pieces.append(looked_up * inside.unsqueeze(-1).to(looked_up.dtype))
        weight = torch.cat([self.projection(i) for i in range(len(self.embeddings))], dim=1)
        return F.linear(torch.cat(pieces, dim=-1), weight)
