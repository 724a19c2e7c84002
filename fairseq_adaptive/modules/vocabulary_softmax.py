"""The interface every output layer over the vocabulary implements (:class:`FullSoftmax`, :class:`AdaptiveSoftmax`),
which :class:`vocab_layers.Scorer` calls without knowing which one it holds.

Shapes: ``input`` is ``... x input_dim`` (the features the softmax scores), ``target`` is ``...`` (the same leading
shape, word indices in ``[0, vocab_size)`` or ``ignore_index``). Losses are summed, in fp32 (fp64 for fp64 inputs),
and every loss and target score runs block by block through ``linear_cross_entropy``: no ``N x V`` logit matrix is
held, except by :meth:`VocabularySoftmax.get_log_prob`, whose caller asks for the whole distribution.
"""

import abc
from typing import Optional, Tuple

from torch import Tensor, nn


class VocabularySoftmax(nn.Module, abc.ABC):
    """``log p(w | h)`` over ``vocab_size`` words from ``input_dim``-wide features, scored in ``1 + n_clusters``
    clusters (one for a full softmax; the head first for an adaptive one). ``tied``: its word rows are an input
    layer's."""

    vocab_size: int
    input_dim: int
    n_clusters: int
    tied: bool

    @abc.abstractmethod
    def loss(self, input: Tensor, target: Tensor, ignore_index: int) -> Tuple[Tensor, Tensor, Tensor]:
        """``... x d, ... ->`` (the summed NLL of the targets other than ``ignore_index``, a scalar with gradient;
        per cluster, head first, the summed NLL (``1 + n_clusters`` floats, without gradient) and the number of
        scored targets (``1 + n_clusters`` longs))."""

    @abc.abstractmethod
    def label_smoothed_loss(
        self, input: Tensor, target: Tensor, ignore_index: int, epsilon: float
    ) -> Tuple[Tensor, Tensor]:
        """``... x d, ... ->`` (fairseq's label-smoothed loss ``(1 - eps - eps/(V-1)) nll + eps/(V-1) sum_w -log
        p(w)`` summed over the targets other than ``ignore_index``, a scalar with gradient; their summed NLL)."""

    @abc.abstractmethod
    def target_log_prob(self, input: Tensor, target: Tensor) -> Tensor:
        """``... x d, ... -> ...``: log p(target) of every position (eval-lm, ``--score-reference``), without
        gradient."""

    @abc.abstractmethod
    def get_log_prob(self, input: Tensor, target: Optional[Tensor] = None) -> Tensor:
        """``... x d -> ... x V``: log-probabilities of every word (generation). With ``target`` a layer may compute
        only what the target's entry needs (the other entries are then not meaningful)."""

    def forward(self, input: Tensor, target: Tensor, ignore_index: int = -100) -> Tensor:
        """The summed NLL of ``target`` (a scalar, with gradient): the first result of :meth:`loss`."""
        return self.loss(input, target, ignore_index)[0]
