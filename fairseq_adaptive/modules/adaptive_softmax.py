"""Adaptive softmax (Grave et al. 2017, https://arxiv.org/abs/1609.04309) with the weight sharing of adaptive input
representations (Baevski & Auli 2019, https://arxiv.org/abs/1809.10853, Section 3, "ADP-T").

The head scores the ``cutoff[0]`` most frequent words plus one logit per tail cluster; cluster ``i`` scores the
words of band ``i+1`` after projecting the input down to ``input_dim / factor**(i+1)``:

    log p(w) = log softmax(head(h))[w]                                    w in the head
    log p(w) = log softmax(head(h))[c_i] + log softmax(T_i P_i h)[w - cutoff[i]]   w in cluster i

Tied to an :class:`AdaptiveInput`, ``T_i`` is band ``i+1``'s embedding table, the head's word weights are band
0's table and (``tie_proj``) ``P_i`` is the transpose of band ``i+1``'s input projection. Dropout (the paper's
"adaptive softmax dropout", applied where fairseq applies it) hits the layer's input and the tail projections.

Transformer-XL's clustered softmax (Dai et al. 2019, https://arxiv.org/abs/1901.02860, ``div_val`` 1) is the case
``factor=1`` tied to a plain ``V x d`` ``table``: every cluster scores at full width without a projection (``P_i`` is
the identity), its words are rows of the input table, and ``bias`` adds a learned bias per word (and per cluster
logit of the head) to the logits.
"""

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adaptive_input import AdaptiveInput, band_dims, check_cutoff
from .linear_cross_entropy import label_smoothing_weights, linear_cross_entropy


def _dropout(x: Tensor, p: float, training: bool) -> Tensor:
    # skip the kernel entirely at p=0 (F.dropout would still draw a mask in training mode)
    return F.dropout(x, p, training) if p > 0 and training else x


class TailCluster(nn.Module):
    """One tail cluster's input: ``x (N x d) -> dropout(P x) (N x d_i)``; its word rows (``words``, ``|band| x d_i``)
    are read through :meth:`AdaptiveSoftmax.tail_words` (they may be rows of a tied plain table).

    ``proj`` is stored as ``d_i x d`` (own), borrowed from an adaptive input as ``d x d_i`` (``proj_transposed``), or
    None (the identity: Transformer-XL's clusters at full width).
    """

    def __init__(self, proj: Optional[nn.Parameter], proj_transposed: bool, words: Optional[nn.Parameter],
                 dropout: float):
        super().__init__()
        self.proj = proj
        self.proj_transposed = proj_transposed
        self.words = words
        self.dropout = dropout

    def hidden(self, x: Tensor) -> Tensor:
        if self.proj is None:  # the layer's input, dropped out once already
            return x
        x = F.linear(x, self.proj.t() if self.proj_transposed else self.proj)
        return _dropout(x, self.dropout, self.training)


class AdaptiveSoftmax(nn.Module):
    """Adaptive softmax output layer; see the module docstring for the factorisation.

    Shapes: ``input`` is ``... x input_dim``, ``target`` is ``...`` (same leading shape); log-probabilities come
    back as ``... x vocab_size`` and target-only scores as ``...``.
    """

    def __init__(
        self,
        vocab_size: int,
        input_dim: int,
        cutoff: Sequence[int],
        dropout: float = 0.0,
        factor: float = 4.0,
        adaptive_input: Optional[AdaptiveInput] = None,
        tie_proj: bool = False,
        table: Optional[nn.Parameter] = None,
        bias: bool = False,
    ):
        super().__init__()
        self.cutoff = check_cutoff(cutoff, vocab_size, flag="--adaptive-softmax-cutoff")
        self.vocab_size = vocab_size
        self.input_dim = input_dim
        self.n_clusters = len(self.cutoff) - 1
        self.dropout = dropout
        if adaptive_input is not None and adaptive_input.cutoff != self.cutoff:
            raise ValueError(
                f"tied adaptive softmax cutoffs {self.cutoff[:-1]} differ from the adaptive input's "
                f"{adaptive_input.cutoff[:-1]}: give --adaptive-softmax-cutoff equal to --adaptive-input-cutoff"
            )
        if tie_proj and adaptive_input is None:
            raise ValueError("--tie-adaptive-proj needs --tie-adaptive-weights (an adaptive input to tie to)")
        if table is not None and (adaptive_input is not None or factor != 1 or tuple(table.shape) != (vocab_size,
                                                                                                       input_dim)):
            raise ValueError(f"a clustered softmax tied to a plain table needs factor 1 and a {vocab_size} x "
                             f"{input_dim} table (got factor {factor}, {tuple(table.shape)})")

        self.head_proj: Optional[nn.Linear] = None
        self.table = table
        if table is not None:
            self.head_words = None
        elif adaptive_input is None:
            self.head_words = nn.Parameter(torch.empty(self.cutoff[0], input_dim))
        else:
            self.head_words = adaptive_input.weights_for_band(0)[0]
            if self.head_words.shape[1] != input_dim:
                # The head band is narrower than the model: an own (untied) projection, as in fairseq.
                self.head_proj = nn.Linear(input_dim, self.head_words.shape[1], bias=False)
        self.head_clusters = nn.Parameter(torch.empty(self.n_clusters, input_dim))

        dims = band_dims(input_dim, factor, len(self.cutoff), flag="--adaptive-softmax-factor")[1:]
        self.tail = nn.ModuleList()
        for i, dim in enumerate(dims):
            size = self.cutoff[i + 1] - self.cutoff[i]
            if table is not None:
                words, proj, transposed = None, None, False
            elif adaptive_input is None:
                words = nn.Parameter(torch.empty(size, dim))
                proj, transposed = nn.Parameter(torch.empty(dim, input_dim)), False
            else:
                words, input_proj = adaptive_input.weights_for_band(i + 1)
                if tie_proj:
                    proj, transposed = input_proj, True
                else:
                    proj, transposed = nn.Parameter(torch.empty(input_proj.shape[1], input_proj.shape[0])), False
            self.tail.append(TailCluster(proj, transposed, words, dropout))
        self.tied = adaptive_input is not None or table is not None
        # Transformer-XL's output biases: one per word, one per cluster logit of the head (zeros, as there)
        self.word_bias = nn.Parameter(torch.zeros(vocab_size)) if bias else None
        self.cluster_bias = nn.Parameter(torch.zeros(self.n_clusters)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier-uniform for the weights this layer owns (fairseq's choice); tied ones keep the input's init.
        owned = [self.head_clusters]
        if self.head_proj is not None:
            owned.append(self.head_proj.weight)
        if not self.tied:
            owned.append(self.head_words)
        for tail in self.tail:
            owned += [] if self.tied else [tail.words]
            owned += [] if tail.proj_transposed or tail.proj is None else [tail.proj]
        for p in owned:
            nn.init.xavier_uniform_(p)

    # ---------------------------------------------------------------- pieces
    def head_word_rows(self) -> Tensor:
        """``cutoff[0] x d_0``: the head's word rows (the first rows of a tied plain table)."""
        return self.table[: self.cutoff[0]] if self.table is not None else self.head_words

    def tail_words(self, i: int) -> Tensor:
        """``|band i+1| x d_{i+1}``: tail cluster ``i``'s word rows."""
        if self.table is not None:
            return self.table[self.cutoff[i] : self.cutoff[i + 1]]
        return self.tail[i].words

    def head_bias(self) -> Optional[Tensor]:
        """The head's logit biases (its words', then its clusters'), or None."""
        if self.word_bias is None:
            return None
        return torch.cat([self.word_bias[: self.cutoff[0]], self.cluster_bias])

    def tail_bias(self, i: int) -> Optional[Tensor]:
        return None if self.word_bias is None else self.word_bias[self.cutoff[i] : self.cutoff[i + 1]]

    def tail_logits(self, i: int, x: Tensor) -> Tensor:
        """``N x d -> N x |band i+1|``: tail cluster ``i``'s logits."""
        return F.linear(self.tail[i].hidden(x), self.tail_words(i), self.tail_bias(i))

    def head(self, x: Tensor) -> Tensor:
        """``N x d -> N x (cutoff[0] + n_clusters)``: word logits, then one logit per tail cluster."""
        if self.head_proj is None:
            return F.linear(x, self.head_weight(), self.head_bias())
        logits = torch.cat([F.linear(self.head_proj(x), self.head_word_rows()), F.linear(x, self.head_clusters)], -1)
        return logits if self.word_bias is None else logits + self.head_bias()

    def head_weight(self) -> Tensor:
        """``(cutoff[0] + n_clusters) x d``: the head's word rows, then its cluster rows (no head projection)."""
        return torch.cat([self.head_word_rows(), self.head_clusters], dim=0)

    def cluster_of(self, target: Tensor) -> Tensor:
        """0 for head words, ``i+1`` for words of tail cluster ``i``."""
        bounds = target.new_tensor(self.cutoff[:-1])
        return torch.bucketize(target, bounds, right=True)

    def partition(self, cluster: Tensor) -> Tuple[Tensor, ...]:
        """Row indices of each cluster (head first, each possibly empty), at the cost of one host synchronisation
        for all clusters together (the sizes)."""
        sizes = torch.bincount(cluster, minlength=self.n_clusters + 1).tolist()
        return torch.argsort(cluster, stable=True).split(sizes)

    def head_segments(self, x: Tensor) -> Tuple[Tuple[Tensor, ...], Tuple[Tensor, ...]]:
        """The head's logits as :func:`linear_cross_entropy` segments: its word rows, then its cluster rows, on
        ``x`` (or the words on the head projection of ``x`` when the head band is narrower than the model)."""
        if self.head_proj is None:
            return (x,), (self.head_weight(),)
        return (self.head_proj(x), x), (self.head_word_rows(), self.head_clusters)

    # ---------------------------------------------------------------- training and scoring (one route)
    def loss(self, input: Tensor, target: Tensor, ignore_index: int) -> Tuple[Tensor, Tensor, Tensor]:
        """Summed negative log-likelihood of ``target`` (fp32 scalar), and per cluster (head first, fp32 vector
        of ``1 + n_clusters``) the summed loss and the number of scored tokens.

        Every cluster runs on every call, on the (possibly empty) set of positions whose target it holds, so
        every parameter takes part in the graph of every step: PyTorch DDP then needs no unused-parameter
        search, and the loss is unchanged (an empty cluster contributes an exact 0 with zero gradients).
        """
        target = target.reshape(-1)
        keep = target != ignore_index
        x = _dropout(input.reshape(-1, input.size(-1)), self.dropout, self.training)
        cluster = self.cluster_of(target)
        total, nll = self.blockwise_nll(x, target, keep, cluster)
        per_cluster = nll.new_zeros(self.n_clusters + 1).index_add(0, cluster, nll)
        counts = torch.zeros(self.n_clusters + 1, dtype=torch.long, device=target.device)
        counts = counts.index_add(0, cluster, keep.long())
        return total, per_cluster, counts

    def blockwise_nll(self, x: Tensor, target: Tensor, keep: Tensor, cluster: Tensor) -> Tuple[Tensor, Tensor]:
        """``N x d`` -> (summed NLL of the kept positions, with gradients; ``N`` per-position NLL, 0 where not kept,
        without), the head and each tail through :func:`linear_cross_entropy` (no full logit matrix)."""
        head_target = torch.where(cluster == 0, target, self.cutoff[0] + cluster - 1)
        total, nll = linear_cross_entropy(*self.head_segments(x), head_target, keep, bias=self.head_bias())
        for i, (tail, rows) in enumerate(zip(self.tail, self.partition(cluster)[1:])):
            tail_loss, tail_nll = linear_cross_entropy(
                tail.hidden(x.index_select(0, rows)), self.tail_words(i), target.index_select(0, rows) - self.cutoff[i],
                keep.index_select(0, rows), bias=self.tail_bias(i),
            )
            total = total + tail_loss
            nll = nll.index_add(0, rows, tail_nll)
        return total, nll.masked_fill(~keep, 0.0)

    def label_smoothed_loss(
        self, input: Tensor, target: Tensor, ignore_index: int, epsilon: float
    ) -> Tuple[Tensor, Tensor]:
        """Label-smoothed loss and plain NLL, both summed in fp32, with fairseq's smoothing
        (``label_smoothed_nll_loss``): ``(1 - eps - eps/(V-1)) * nll + eps/(V-1) * sum_w -log p(w)``.

        The smoothing term needs every word's log-probability, but only through sums: with ``p_c`` the head's
        log-probability of cluster c and ``z`` the cluster's logits, ``sum_{w in c} -log p(w) = |c| (-p_c) +
        sum(|c|) lse(z) - sum(z)``. So the head scores its word columns with weight 1 and each cluster column with
        weight ``|c|``, and every tail cluster scores every position (weight 1 per word), all in the blocks of
        :func:`linear_cross_entropy` together with the NLL (one pass over each block of logits, never a V-wide row).
        Every cluster runs on every position: no host synchronisation, every parameter in the graph (DDP-safe).
        """
        x = _dropout(input.reshape(-1, input.size(-1)), self.dropout, self.training)
        target = target.reshape(-1)
        keep = target != ignore_index
        nll_weight, smooth = label_smoothing_weights(keep, epsilon, self.vocab_size)
        cluster = self.cluster_of(target)
        sizes = x.new_tensor([end - start for start, end in zip(self.cutoff, self.cutoff[1:])], dtype=torch.float32)
        class_weight = torch.cat([sizes.new_ones(self.cutoff[0]), sizes])
        head_target = torch.where(cluster == 0, target, self.cutoff[0] + cluster - 1)
        total, nll = linear_cross_entropy(*self.head_segments(x), head_target, nll_weight, smooth, class_weight,
                                          bias=self.head_bias())
        nll = nll.masked_fill(~keep, 0.0)
        for i, tail in enumerate(self.tail):
            mine = cluster == i + 1
            tail_loss, tail_nll = linear_cross_entropy(
                tail.hidden(x), self.tail_words(i), target - self.cutoff[i], nll_weight * mine, smooth,
                bias=self.tail_bias(i),
            )
            total = total + tail_loss
            nll = nll + tail_nll.masked_fill(~(mine & keep), 0.0)
        return total, nll.sum()

    def forward(self, input: Tensor, target: Tensor, ignore_index: int = -100) -> Tensor:
        """Summed negative log-likelihood (fp32 scalar) of ``target`` under the layer."""
        return self.loss(input, target, ignore_index)[0]

    # ---------------------------------------------------------------- scoring and generation
    def get_log_prob(self, input: Tensor, target: Optional[Tensor] = None) -> Tensor:
        """``B x T x d -> B x T x V`` log-probabilities (the interface fairseq's decoders call).

        Without ``target`` every row is the full normalised distribution (rows sum to 1 after ``exp``). With
        ``target`` (fairseq's scoring path) a tail cluster is only computed for the rows whose target lies in it,
        and other rows hold 0 in that cluster's columns: only the target's entry of each row is meaningful.
        """
        lead = input.shape[:-1]
        x = input.reshape(-1, input.size(-1))
        acc = torch.promote_types(input.dtype, torch.float32)
        head_logp = F.log_softmax(self.head(x).to(acc), dim=-1)
        out = head_logp.new_zeros(x.size(0), self.vocab_size)
        out[:, : self.cutoff[0]] = head_logp[:, : self.cutoff[0]]
        groups = [None] * self.n_clusters
        if target is not None:
            groups = self.partition(self.cluster_of(target.reshape(-1)))[1:]
        for i, rows in enumerate(groups):
            start, end = self.cutoff[i], self.cutoff[i + 1]
            prior = head_logp[:, self.cutoff[0] + i]
            if rows is None:
                out[:, start:end] = F.log_softmax(self.tail_logits(i, x).to(acc), dim=-1) + prior.unsqueeze(1)
            else:
                logp = F.log_softmax(self.tail_logits(i, x.index_select(0, rows)).to(acc), dim=-1)
                out[rows, start:end] = logp + prior.index_select(0, rows).unsqueeze(1)
        return out.view(*lead, self.vocab_size)

    def target_log_prob(self, input: Tensor, target: Tensor) -> Tensor:
        """``B x T x d, B x T -> B x T``: log p(target) alone (fairseq-eval-lm, ``--score-reference``), through the
        blocks of :func:`linear_cross_entropy` (the Triton kernel on CUDA), never a V-wide row, without gradient.

        Log-probabilities are formed in fp32 (fp64 kept): summing a half-precision loss over thousands of tokens
        overflows (fairseq's ``adaptive_loss`` logs ``inf`` under ``--fp16``).
        """
        x = input.reshape(-1, input.size(-1))
        flat = target.reshape(-1)
        with torch.no_grad():
            keep = torch.ones_like(flat, dtype=torch.bool)
            return -self.blockwise_nll(x, flat, keep, self.cluster_of(flat))[1].view(target.shape)
