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

Transformer-XL's layout for ``div_val`` > 1 (its large WikiText-103 model) is ``project_head``: the head reads an own
projection ``P_0`` of the input, its words and its cluster logits alike (``log softmax([T_0; C] P_0 h)``), a projection
the original code never ties (``tie_projs = [False] + [True] * len(cutoffs)``), even when the head is as wide as the
model; the tails are as above, tied to the adaptive input's bands and projections.
"""

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adaptive_input import AdaptiveInput, band_dims, check_cutoff
from .linear_cross_entropy import label_smoothing_weights, linear_cross_entropy
from .vocabulary_softmax import VocabularySoftmax


def _dropout(x: Tensor, p: float, training: bool) -> Tensor:
    # skip the kernel entirely at p=0 (F.dropout would still draw a mask in training mode)
    return F.dropout(x, p, training) if p > 0 and training else x


def _xavier_parameter(*shape: int) -> nn.Parameter:
    """A new weight this layer owns, Xavier-uniform (fairseq's choice)."""
    weight = nn.Parameter(torch.empty(*shape))
    nn.init.xavier_uniform_(weight)
    return weight


class TailCluster(nn.Module):
    """One tail cluster's input: ``x (N x d) -> dropout(P x) (N x d_i)``; its word rows (``words``, ``|band| x d_i``)
    are read through :meth:`AdaptiveSoftmax.word_rows` (they may be rows of a tied plain table).

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


class AdaptiveSoftmax(VocabularySoftmax):
    """Adaptive softmax output layer; see the module docstring for the factorisation.

    Shapes: ``input`` is ``... x input_dim``, ``target`` is ``...`` (same leading shape); log-probabilities come
    back as ``... x vocab_size`` and target-only scores as ``...``. Band 0 is the head's words, band ``i+1`` the
    words of tail cluster ``i``.
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
        project_head: bool = False,
        cluster_projs: Optional[Sequence[bool]] = None,
        input_proj: Optional[nn.Parameter] = None,
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
        if cluster_projs is not None and (table is None or input_proj is None or len(cluster_projs) != len(self.cutoff)
                                          or tuple(input_proj.shape[:1]) != (input_dim,)):
            raise ValueError(f"per-cluster projections (--tie-projs) need a plain table narrower than the model, its "
                             f"projection to {input_dim}, and one entry per cluster, head first ({len(self.cutoff)})")
        table_dim = input_dim if cluster_projs is None else input_proj.shape[1]
        if table is not None and (adaptive_input is not None or factor != 1 or tuple(table.shape) != (vocab_size,
                                                                                                       table_dim)):
            raise ValueError(f"a clustered softmax tied to a plain table needs factor 1 and a {vocab_size} x "
                             f"{table_dim} table (got factor {factor}, {tuple(table.shape)})")
        # Transformer-XL's projections over a plain table narrower than the model (its div_val 1 with d_embed < d_model):
        # each cluster reads the input table's projection (transposed: True) or its own (False), the head's words and
        # cluster logits alike
        self.cluster_projs = None if cluster_projs is None else tuple(bool(t) for t in cluster_projs)
        self.input_proj = input_proj if self.cluster_projs is not None and self.cluster_projs[0] else None
        project_head = project_head or self.cluster_projs is not None
        self.tied = adaptive_input is not None or table is not None
        # Every band's word rows and projection are decided (and, where this layer owns them, initialised: Xavier-
        # uniform, fairseq's choice) here, once; tied ones keep the input's initialisation. Registration and
        # initialisation follow earlier versions' order, so a seed initialises the layer as it did.
        if project_head and table is not None and self.cluster_projs is None:
            raise ValueError("a head projection needs the head's own or an adaptive input's word rows, not a plain "
                             "table's (Transformer-XL's div_val 1 has none)")
        self.head_proj: Optional[nn.Linear] = None
        self.project_head = project_head  # the head's cluster logits read the projection too
        self.table = table
        if table is not None:
            self.head_words = None
        elif adaptive_input is None:
            self.head_words = nn.Parameter(torch.empty(self.cutoff[0], input_dim))
        else:
            self.head_words = adaptive_input.weights_for_band(0)[0]
        head_dim = table_dim if self.head_words is None else self.head_words.shape[1]
        if (project_head or head_dim != input_dim) and self.input_proj is None:
            # the head band narrower than the model (an own, untied projection for its words, as in fairseq), or
            # asked for (Transformer-XL's: words and clusters read it)
            self.head_proj = nn.Linear(input_dim, head_dim, bias=False)
        self.head_clusters = nn.Parameter(torch.empty(self.n_clusters, head_dim if project_head else input_dim))
        nn.init.xavier_uniform_(self.head_clusters)
        if self.head_proj is not None:
            nn.init.xavier_uniform_(self.head_proj.weight)
        if not self.tied:
            nn.init.xavier_uniform_(self.head_words)

        dims = band_dims(input_dim, factor, len(self.cutoff), flag="--adaptive-softmax-factor")[1:]
        self.tail = nn.ModuleList(
            self._tail_cluster(i + 1, dim, adaptive_input, tie_proj, input_proj) for i, dim in enumerate(dims)
        )
        # Transformer-XL's output biases: one per word, one per cluster logit of the head (zeros, as there)
        self.word_bias = nn.Parameter(torch.zeros(vocab_size)) if bias else None
        self.cluster_bias = nn.Parameter(torch.zeros(self.n_clusters)) if bias else None

    def _tail_cluster(self, band: int, dim: int, adaptive_input: Optional[AdaptiveInput], tie_proj: bool,
                      input_proj: Optional[nn.Parameter]) -> TailCluster:
        """The cluster of ``band`` (``dim`` wide): its word rows and projection, own or an adaptive input's, or
        neither (rows of the plain table, at full width), or rows of the plain table with its own projection or the
        table's input projection (``cluster_projs``)."""
        if self.table is not None and self.cluster_projs is not None:
            if self.cluster_projs[band]:
                return TailCluster(input_proj, True, None, self.dropout)
            return TailCluster(_xavier_parameter(self.table.shape[1], self.input_dim), False, None, self.dropout)
        if self.table is not None:
            return TailCluster(None, False, None, self.dropout)
        if adaptive_input is None:
            words = _xavier_parameter(self.cutoff[band] - self.cutoff[band - 1], dim)
            return TailCluster(_xavier_parameter(dim, self.input_dim), False, words, self.dropout)
        words, band_proj = adaptive_input.weights_for_band(band)
        if tie_proj:
            return TailCluster(band_proj, True, words, self.dropout)
        return TailCluster(_xavier_parameter(band_proj.shape[1], band_proj.shape[0]), False, words, self.dropout)

    # ---------------------------------------------------------------- pieces
    def word_rows(self, band: int) -> Tensor:
        """``|band| x d_band``: the word rows of ``band`` (0: the head's; ``i+1``: tail cluster ``i``'s), rows of
        the tied plain table when there is one."""
        if self.table is not None:
            return self.table[(self.cutoff[band - 1] if band else 0) : self.cutoff[band]]
        return self.head_words if band == 0 else self.tail[band - 1].words

    def head_bias(self) -> Optional[Tensor]:
        """The head's logit biases (its words', then its clusters'), or None."""
        if self.word_bias is None:
            return None
        return torch.cat([self.word_bias[: self.cutoff[0]], self.cluster_bias])

    def tail_bias(self, i: int) -> Optional[Tensor]:
        return None if self.word_bias is None else self.word_bias[self.cutoff[i] : self.cutoff[i + 1]]

    def tail_logits(self, i: int, x: Tensor) -> Tensor:
        """``N x d -> N x |band i+1|``: tail cluster ``i``'s logits."""
        return F.linear(self.tail[i].hidden(x), self.word_rows(i + 1), self.tail_bias(i))

    def head_segments(self, x: Tensor) -> Tuple[Tuple[Tensor, ...], Tuple[Tensor, ...]]:
        """The head as :func:`linear_cross_entropy` segments (the one place it is assembled): its word rows, then its
        cluster rows, on ``x`` (or the words on the head projection of ``x`` when the head band is narrower than the
        model; both on it with ``project_head``)."""
        if self.head_proj is not None and not self.project_head:  # fairseq's: the words alone read the projection
            return (self.head_proj(x), x), (self.word_rows(0), self.head_clusters)
        if self.input_proj is not None:  # the input table's projection, transposed
            h = F.linear(x, self.input_proj.t())
        else:
            h = x if self.head_proj is None else self.head_proj(x)
        return (h,), (torch.cat([self.word_rows(0), self.head_clusters], dim=0),)

    def head(self, x: Tensor) -> Tensor:
        """``N x d -> N x (cutoff[0] + n_clusters)``: word logits, then one logit per tail cluster."""
        xs, weights = self.head_segments(x)
        if len(xs) == 1:
            return F.linear(xs[0], weights[0], self.head_bias())
        logits = torch.cat([F.linear(r, w) for r, w in zip(xs, weights)], -1)
        return logits if self.word_bias is None else logits + self.head_bias()

    def head_target(self, target: Tensor, cluster: Tensor) -> Tensor:
        """The head's class of each target: the word itself in the head, else its cluster's logit."""
        return torch.where(cluster == 0, target, self.cutoff[0] + cluster - 1)

    def cluster_of(self, target: Tensor) -> Tensor:
        """0 for head words, ``i+1`` for words of tail cluster ``i``."""
        bounds = target.new_tensor(self.cutoff[:-1])
        return torch.bucketize(target, bounds, right=True)

    def partition(self, cluster: Tensor) -> Tuple[Tensor, ...]:
        """Row indices of each cluster (head first, each possibly empty), at the cost of one host synchronisation
        for all clusters together (the sizes)."""
        sizes = torch.bincount(cluster, minlength=self.n_clusters + 1).tolist()
        return torch.argsort(cluster, stable=True).split(sizes)

    def dropped_out(self, input: Tensor) -> Tensor:
        """``... x d -> N x d``: the layer's input, flattened, after the adaptive softmax dropout."""
        return _dropout(input.reshape(-1, input.size(-1)), self.dropout, self.training)

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
        x = self.dropped_out(input)
        cluster = self.cluster_of(target)
        total, nll = self.blockwise_nll(x, target, keep, cluster)
        per_cluster = nll.new_zeros(self.n_clusters + 1).index_add(0, cluster, nll)
        counts = torch.zeros(self.n_clusters + 1, dtype=torch.long, device=target.device)
        counts = counts.index_add(0, cluster, keep.long())
        return total, per_cluster, counts

    def blockwise_nll(self, x: Tensor, target: Tensor, keep: Tensor, cluster: Tensor) -> Tuple[Tensor, Tensor]:
        """``N x d`` -> (summed NLL of the positions ``keep`` (bool) marks, with gradients; ``N`` per-position NLL, 0
        elsewhere, without), the head and each tail through :func:`linear_cross_entropy` (no full logit matrix)."""
        head_target = self.head_target(target, cluster)
        total, nll = linear_cross_entropy(*self.head_segments(x), head_target, keep, bias=self.head_bias())
        for i, (tail, rows) in enumerate(zip(self.tail, self.partition(cluster)[1:])):
            tail_loss, tail_nll = linear_cross_entropy(
                tail.hidden(x.index_select(0, rows)), self.word_rows(i + 1),
                target.index_select(0, rows) - self.cutoff[i], keep.index_select(0, rows), bias=self.tail_bias(i),
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
        x = self.dropped_out(input)
        target = target.reshape(-1)
        keep = target != ignore_index
        row_weight, smooth_weight = label_smoothing_weights(keep, epsilon, self.vocab_size)
        cluster = self.cluster_of(target)
        sizes = x.new_tensor([end - start for start, end in zip(self.cutoff, self.cutoff[1:])], dtype=torch.float32)
        class_weight = torch.cat([sizes.new_ones(self.cutoff[0]), sizes])
        total, nll = linear_cross_entropy(*self.head_segments(x), self.head_target(target, cluster), row_weight,
                                          smooth_weight, class_weight, bias=self.head_bias())
        nll = nll.masked_fill(~keep, 0.0)
        for i, tail in enumerate(self.tail):
            mine = cluster == i + 1
            tail_loss, tail_nll = linear_cross_entropy(
                tail.hidden(x), self.word_rows(i + 1), target - self.cutoff[i], row_weight * mine, smooth_weight,
                bias=self.tail_bias(i),
            )
            total = total + tail_loss
            nll = nll + tail_nll.masked_fill(~(mine & keep), 0.0)
        return total, nll.sum()

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
            every_row = torch.ones_like(flat, dtype=torch.bool)
            return -self.blockwise_nll(x, flat, every_row, self.cluster_of(flat))[1].view(target.shape)
