"""The vocabulary layers every body takes, in pure torch: a typed description of each side (:class:`InputSpec`,
:class:`OutputSpec`), one factory that turns them into an :class:`Embedder` (tokens -> model width) and a
:class:`Scorer` (model-width features -> losses, target scores, the whole distribution), and the map from earlier
checkpoints' parameter names to theirs.

A body (the Transformer decoder and encoder today) calls :func:`build_embedder` before its own layers and
:func:`build_scorer` after them, so that a seed initialises a model as it always has; it never needs to know which
input or output layer it holds. Tying happens here, once, where both parts exist:

- ``tie="weights"`` with an adaptive softmax: its head and tail word tables are the adaptive input's band tables
  (Baevski & Auli 2019, https://arxiv.org/abs/1809.10853, ADP-T); ``"weights+proj"`` shares the tail projections too;
- ``tie="weights"`` with a full softmax: its ``V x n`` weight is the plain input table (under DeFINE: its map table);
- ``tie="weights"`` with an adaptive softmax of factor 1 over a plain input table: Transformer-XL's clustered softmax,
  whose clusters' word rows are rows of that table (Dai et al. 2019, https://arxiv.org/abs/1901.02860).

``bias`` adds a learned bias per output word (Transformer-XL's output layer) to either softmax.
"""

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from .adaptive_input import AdaptiveInput
from .adaptive_softmax import AdaptiveSoftmax
from .char_cnn import CharCNN, CharCNNOptions
from .define import DeFINE, DefineOptions
from .full_softmax import FullSoftmax
from .linear_cross_entropy import block_elements_for, rows_per_block

TIE_NONE, TIE_WEIGHTS, TIE_ALL = "none", "weights", "weights+proj"
TIES = (TIE_NONE, TIE_WEIGHTS, TIE_ALL)


@dataclass(frozen=True)
class InputSpec:
    """tokens -> ``model_dim`` (m): a plain ``V x width`` table or an adaptive input whose first band is ``width`` wide
    (``cutoff``: band boundaries, each band ``factor`` times narrower), optionally expanded and reduced by DeFINE from
    ``width`` (its n) to m. Without DeFINE the output is scaled by sqrt(m) (fairseq's embedding scale) and a plain
    table narrower than m is projected to it; under DeFINE a plain table is scaled by sqrt(n) and DeFINE's output is
    not (the released wiring). ``scale_embedding=False`` (``--no-scale-embedding``) drops both scales."""

    vocab_size: int
    padding_idx: int
    model_dim: int
    width: int
    cutoff: Optional[Tuple[int, ...]] = None
    factor: float = 4.0
    define: Optional[DefineOptions] = None
    scale_embedding: bool = True
    char_cnn: Optional[CharCNNOptions] = None  # word vectors from their characters (then nothing else applies)
    square_proj: bool = True  # an adaptive input's first band, as wide as its output, still projected (fairseq's)

    @property
    def adaptive(self) -> bool:
        return self.cutoff is not None

    @property
    def output_dim(self) -> int:
        """The width the body reads: m, or DeFINE's k when the unit keeps its expansion (``reduce=False``)."""
        return self.define.unit_width(self.model_dim) if self.define is not None else self.model_dim


@dataclass(frozen=True)
class OutputSpec:
    """``model_dim`` features -> scores over the vocabulary: an m -> ``width`` projection when they differ, then a full
    softmax (``cutoff`` None) or an adaptive softmax with clusters at ``cutoff`` shrinking by ``factor``, tail
    ``dropout``, tied to the input layer as ``tie`` says (see the module docstring), with a bias per word when
    ``bias``. ``head_proj``: the head reads an own projection of the features, its words and its cluster logits
    alike (Transformer-XL's ``div_val`` > 1 layout, whose head projection is never tied, even at full width).
    ``cluster_projs`` (a clustered softmax tied to a plain table narrower than the model): instead of one projection
    before the softmax, each cluster, head first, reads the input table's projection (True) or its own (False), as
    Transformer-XL's ``tie_projs`` does at ``div_val`` 1."""

    vocab_size: int
    model_dim: int
    width: int
    cutoff: Optional[Tuple[int, ...]] = None
    factor: float = 4.0
    dropout: float = 0.0
    tie: str = TIE_NONE
    bias: bool = False
    head_proj: bool = False  # an own projection before the head, for its words and its cluster logits
    cluster_projs: Optional[Tuple[bool, ...]] = None  # over a narrower plain table: each cluster's projection

    @property
    def adaptive(self) -> bool:
        return self.cutoff is not None


def check_ids(ids: Tensor, vocab_size: int, what: str, ignore_index: Optional[int] = None) -> None:
    """Refuse ids outside ``[0, vocab_size)``, which an adaptive input would embed as zeros and the blockwise loss would
    clamp: data binarised with another dictionary. On CPU the message names the id; on CUDA the check runs on the
    device (no host synchronisation) and stops the run with the same advice."""
    inside = (ids >= 0) & (ids < vocab_size)
    if ignore_index is not None:
        inside |= ids == ignore_index
    advice = (f"{what} outside the {vocab_size:,}-entry dictionary: the data was binarised with another dictionary "
              f"(binarise it with the model's dict.txt: fairseq-preprocess --srcdict)")
    if ids.device.type == "cpu":
        if not bool(inside.all()):
            raise ValueError(f"id {int(ids[~inside].flatten()[0])}: {advice}")
    else:
        torch._assert_async(inside.all(), advice)


def _linear(in_dim: int, out_dim: int) -> nn.Linear:
    """A bias-free projection with fairseq's initialisation (Xavier-uniform)."""
    layer = nn.Linear(in_dim, out_dim, bias=False)
    nn.init.xavier_uniform_(layer.weight)
    return layer


class Embedder(nn.Module):
    """``tokens`` (any shape S) -> ``S x embedding_dim`` (the model width m; DeFINE's k without its reduction): the
    input layer an :class:`InputSpec` describes, its scale and its projection included. With DeFINE's ``cache``
    option, eval mode looks tokens up in DeFINE's table of every token's output."""

    def __init__(self, spec: InputSpec, embedding: nn.Module, scale: float, project: Optional[nn.Linear]):
        super().__init__()
        self.spec = spec
        self.embedding = embedding
        self.project = project
        self.scale = scale
        self.embedding_dim = spec.output_dim  # what the body reads (fairseq's encoder and decoder: m)
        self.padding_idx = spec.padding_idx

    def forward(self, tokens: Tensor) -> Tensor:
        check_ids(tokens, self.spec.vocab_size, "a token id")
        x = self.embedding(tokens)
        if self.scale != 1.0:
            x = x * self.scale
        return x if self.project is None else self.project(x)

    def token_table(self) -> nn.Module:
        """The module indexed by token ids: the ``V x n`` table or the adaptive input (under DeFINE, its map)."""
        return self.embedding.map if self.spec.define is not None else self.embedding

    def define_parameters(self) -> int:
        """Parameters of the DeFINE unit without its map table (the papers' "DeFINE" count); 0 without DeFINE."""
        return self.embedding.block_parameters() if self.spec.define is not None else 0


def build_embedder(spec: InputSpec, dictionary=None) -> Embedder:
    """The input layer of ``spec``; a character CNN reads the words of ``dictionary`` (fairseq's, or any object with
    ``symbols``, ``nspecial``, ``pad()``, ``eos()``, ``unk()``)."""
    m, n = spec.model_dim, spec.width
    if spec.char_cnn is not None:
        if dictionary is None:
            raise ValueError("a character CNN input needs the dictionary's words")
        chars = CharCNN(dictionary.symbols, dictionary.nspecial, dictionary.pad(), dictionary.eos(), dictionary.unk(),
                        spec.char_cnn, m)
        return Embedder(spec, chars, math.sqrt(m) if spec.scale_embedding else 1.0, None)
    if spec.adaptive:
        # without DeFINE the bands project to m themselves; under DeFINE to n, where DeFINE starts
        table = AdaptiveInput(spec.vocab_size, spec.padding_idx, n, spec.factor, n if spec.define else m, spec.cutoff,
                              square_proj=spec.square_proj)
    else:
        table = nn.Embedding(spec.vocab_size, n, padding_idx=spec.padding_idx)
        nn.init.normal_(table.weight, mean=0, std=n**-0.5)  # fairseq's Embedding
        nn.init.constant_(table.weight[spec.padding_idx], 0)
    if spec.define is not None:
        map_scale = math.sqrt(n) if spec.scale_embedding and not spec.adaptive else 1.0
        return Embedder(spec, DeFINE(table, n, m, spec.define, embed_scale=map_scale), 1.0, None)
    project = _linear(n, m) if not spec.adaptive and n != m else None
    return Embedder(spec, table, math.sqrt(m) if spec.scale_embedding else 1.0, project)


class Scorer(nn.Module):
    """``... x model_dim`` features -> the output layer an :class:`OutputSpec` describes: its projection to the
    softmax width, then a :class:`FullSoftmax` or an :class:`AdaptiveSoftmax` (same interface). Every loss and target
    score runs block by block through the engine (``linear_cross_entropy``).

    The output contract of every model of this package: criteria call :meth:`loss`, :meth:`label_smoothed_loss` and
    :meth:`predictions`; decoders' ``get_normalized_probs`` is :meth:`normalized_probs`."""

    def __init__(self, spec: OutputSpec, softmax: nn.Module, project: Optional[nn.Linear], project_first: bool):
        super().__init__()
        self.spec = spec
        # registration order is the order of model.parameters(), to which fairseq matches a checkpoint's optimizer
        # state by position: earlier versions registered a tied adaptive softmax before its projection
        if project_first:
            self.project = project
            self.softmax = softmax
        else:
            self.softmax = softmax
            self.project = project
        self.vocab_size = spec.vocab_size

    def features(self, x: Tensor) -> Tensor:
        return x if self.project is None else self.project(x)

    def loss(self, x: Tensor, target: Tensor, ignore_index: int) -> Tuple[Tensor, Tensor, Tensor]:
        """Summed fp32 NLL, and per cluster (head first; one entry for a full softmax) the loss sums and counts."""
        check_ids(target, self.vocab_size, "a target id", ignore_index)
        return self.softmax.loss(self.features(x), target, ignore_index)

    def label_smoothed_loss(
        self, x: Tensor, target: Tensor, ignore_index: int, epsilon: float
    ) -> Tuple[Tensor, Tensor]:
        """fairseq's label-smoothed loss and the NLL of the kept targets, both summed in fp32."""
        check_ids(target, self.vocab_size, "a target id", ignore_index)
        return self.softmax.label_smoothed_loss(self.features(x), target, ignore_index, epsilon)

    def target_log_prob(self, x: Tensor, target: Tensor) -> Tensor:
        """``... x m, ... -> ...``: log p(target) alone (eval-lm, ``--score-reference``), without gradient."""
        check_ids(target, self.vocab_size, "a target id")
        return self.softmax.target_log_prob(self.features(x), target)

    def log_probs(self, x: Tensor) -> Tensor:
        """``... x m -> ... x V``: the whole distribution (generation)."""
        return self.softmax.get_log_prob(self.features(x))

    def normalized_probs(self, x: Tensor, log_probs: bool, sample: Optional[dict] = None) -> Tensor:
        """``B x T x m`` features -> ``B x T x V`` (log-)probabilities: every decoder's ``get_normalized_probs``.
        With a ``sample`` holding targets (fairseq's scorers: eval-lm, ``--score-reference``, the hub's ``score``)
        only the targets' entries are meaningful, as with fairseq's adaptive softmax: they alone are computed, block
        by block, and returned as a stride-0 view that the scorers' ``gather`` reads."""
        target = None if sample is None else sample.get("target")
        if target is not None:
            scores = self.target_log_prob(x, target)
            scores = scores if log_probs else scores.exp()
            return scores.unsqueeze(-1).expand(*scores.shape, self.vocab_size)
        scores = self.log_probs(x)
        return scores if log_probs else scores.exp()

    def predictions(self, x: Tensor) -> Tensor:
        """``N x m -> N``: the most probable word of each row, a block of rows at a time (accuracy)."""
        with torch.no_grad():
            step = rows_per_block(x.size(0), self.vocab_size, block_elements_for(x))
            return torch.cat([self.log_probs(rows).argmax(-1) for rows in x.split(step)])


def build_scorer(spec: OutputSpec, embedder: Optional[Embedder] = None) -> Scorer:
    """The output layer of ``spec``, tied to ``embedder``'s table as ``spec.tie`` says (build it after the body)."""
    table = embedder.token_table() if spec.tie != TIE_NONE else None
    # built (so initialised, drawing from the seed's stream) in the order earlier versions built them
    project_first = not (spec.adaptive and spec.tie != TIE_NONE)
    shared_project = spec.width != spec.model_dim and spec.cluster_projs is None  # else each cluster projects
    project = _linear(spec.model_dim, spec.width) if project_first and shared_project else None
    if spec.adaptive:
        plain = table is not None and not embedder.spec.adaptive  # Transformer-XL's clusters over a plain table
        per_cluster = spec.cluster_projs is not None  # the softmax reads the model width and projects per cluster
        softmax = AdaptiveSoftmax(spec.vocab_size, spec.model_dim if per_cluster else spec.width, spec.cutoff,
                                  dropout=spec.dropout, factor=spec.factor, adaptive_input=None if plain else table,
                                  tie_proj=spec.tie == TIE_ALL, table=table.weight if plain else None, bias=spec.bias,
                                  project_head=spec.head_proj, cluster_projs=spec.cluster_projs,
                                  input_proj=embedder.project.weight if per_cluster else None)
    else:
        softmax = FullSoftmax(spec.vocab_size, spec.width, table.weight if table is not None else None, spec.bias)
    if not project_first and shared_project:
        project = _linear(spec.model_dim, spec.width)
    return Scorer(spec, softmax, project, project_first)


# ------------------------------------------------------------------------------------------ earlier checkpoints
_EARLIER_OUTPUT = {"adaptive_softmax.": "scorer.softmax.", "output_projection.": "scorer.softmax.",
                   "project_out_dim.": "scorer.project."}


def upgrade_state_dict(state_dict: Dict[str, Tensor], prefix: str, scorer: bool) -> None:
    """Rename, in place, the parameters of an encoder or decoder (``prefix``) saved before the embedder and scorer
    existed: ``embed_tokens.*`` -> ``embed_tokens.embedding.*``, ``project_in_dim`` -> ``embed_tokens.project``, and
    (``scorer``) ``adaptive_softmax.*`` / ``output_projection.*`` -> ``scorer.softmax.*``, ``project_out_dim`` ->
    ``scorer.project``. A state dict already in today's layout is left as it is."""
    p = prefix + "." if prefix else ""
    renames = {}
    if not any(k.startswith(p + "embed_tokens.embedding.") for k in state_dict):
        renames.update({p + "embed_tokens.": p + "embed_tokens.embedding.",
                        p + "project_in_dim.": p + "embed_tokens.project."})
    if scorer and not any(k.startswith(p + "scorer.") for k in state_dict):
        renames.update({p + old: p + new for old, new in _EARLIER_OUTPUT.items()})
    for key in list(state_dict):
        for old, new in renames.items():
            if key.startswith(old):
                state_dict[new + key[len(old):]] = state_dict.pop(key)
                break
