"""A full softmax over the vocabulary, a :class:`VocabularySoftmax` (loss, label-smoothed loss, target scores, the whole
distribution) like :class:`AdaptiveSoftmax`, every loss and score through the blockwise engine: no ``N x V`` logit
matrix is held in training or scoring, only in :meth:`get_log_prob`, whose caller asks for the whole distribution."""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .linear_cross_entropy import label_smoothing_weights, linear_cross_entropy
from .vocabulary_softmax import VocabularySoftmax


class FullSoftmax(VocabularySoftmax):
    """``log p(w | h) = log softmax(W h + b)[w]`` with ``W: V x d``, its own (N(0, d^-1/2), as fairseq's output
    projection) or an input table's (tied: pass ``weight``), and a learned per-word ``b`` (zeros) when ``bias``.

    Shapes: ``input`` is ``... x input_dim``, ``target`` is ``...``; one cluster."""

    def __init__(self, vocab_size: int, input_dim: int, weight: Optional[nn.Parameter] = None, bias: bool = False):
        super().__init__()
        if weight is not None and tuple(weight.shape) != (vocab_size, input_dim):
            raise ValueError(f"a tied full softmax needs a {vocab_size} x {input_dim} table, got {tuple(weight.shape)}")
        self.vocab_size = vocab_size
        self.input_dim = input_dim
        self.n_clusters = 0
        self.tied = weight is not None
        self.weight = weight if weight is not None else nn.Parameter(torch.empty(vocab_size, input_dim))
        if not self.tied:
            nn.init.normal_(self.weight, mean=0.0, std=input_dim**-0.5)
        self.bias = nn.Parameter(torch.zeros(vocab_size)) if bias else None

    def _engine(self, input: Tensor, target: Tensor, row_weight: Tensor, smooth_weight: Optional[Tensor] = None):
        """:func:`linear_cross_entropy` of the flattened ``input`` against ``target`` (flat)."""
        return linear_cross_entropy(input.reshape(-1, input.size(-1)), self.weight, target, row_weight, smooth_weight,
                                    bias=self.bias)

    def loss(self, input: Tensor, target: Tensor, ignore_index: int) -> Tuple[Tensor, Tensor, Tensor]:
        """Summed fp32 NLL of the kept targets, and (one cluster) that sum and the number of scored tokens."""
        target = target.reshape(-1)
        keep = target != ignore_index
        loss, _ = self._engine(input, target, keep)
        return loss, loss.detach().reshape(1), keep.sum().reshape(1)

    def label_smoothed_loss(
        self, input: Tensor, target: Tensor, ignore_index: int, epsilon: float
    ) -> Tuple[Tensor, Tensor]:
        """fairseq's label-smoothed loss and the plain NLL, summed in fp32, in the same pass over each block."""
        target = target.reshape(-1)
        row_weight, smooth_weight = label_smoothing_weights(target != ignore_index, epsilon, self.vocab_size)
        loss, nll = self._engine(input, target, row_weight, smooth_weight)
        return loss, nll.masked_fill(target == ignore_index, 0.0).sum()

    def target_log_prob(self, input: Tensor, target: Tensor) -> Tensor:
        """``... x d, ... -> ...``: log p(target), block by block, without gradient."""
        flat = target.reshape(-1)
        with torch.no_grad():
            every_row = torch.ones_like(flat, dtype=torch.bool)
            return -self._engine(input, flat, every_row)[1].view(target.shape)

    def get_log_prob(self, input: Tensor, target: Optional[Tensor] = None) -> Tensor:
        """``... x d -> ... x V``: the whole distribution (generation), normalised in fp32 (fp64 kept)."""
        acc = torch.promote_types(input.dtype, torch.float32)
        return F.log_softmax(F.linear(input, self.weight, self.bias).to(acc), dim=-1)
