"""What every language model of this package shares, whatever its body (Transformer, Transformer-XL, LSTM): a new
body starts here (docs/design.md, "Adding a body").

- :class:`LanguageModelBase`: the vocabulary step of every build (fairseq's fixes, the task's and the dictionary's
  checks, one :func:`describe` of the vocabulary layers, with the task's cutoff deriver where it has one, and the
  embedder) and the checked hub loader (``from_pretrained``).
- :class:`StreamDecoder`: the decoder shape of bodies whose state runs on from segment to segment (Transformer-XL's
  memory, an LSTM's hidden state), keyed by the :class:`StreamKey` a task that carries streams puts in
  ``net_input["stream"]``; scoring goes through the decoder's :class:`Scorer`.
- :class:`RegularizedActivations`: the one channel by which a body hands activations to the criterion's activation
  penalties (``--ar-alpha``, ``--tar-beta``): the extra output's :data:`ACTIVATIONS` entry.

Tasks are never imported here: a task says that it carries streams (``carries_streams = True``) and may offer
``auto_cutoffs(dictionary)`` for cutoffs given as ``auto``; the model asks.
"""

import logging
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from fairseq import hub_utils
from fairseq.models import FairseqIncrementalDecoder
from fairseq.utils import safe_getattr
from torch import Tensor

from .. import fairseq_fixes
from ..checks import (DICTIONARY_RECORD, check_dictionary, check_hub_paths, check_sizes, data_of, guard_task,
                      task_setting, writable)
from ..modules.vocab_layers import Embedder, Scorer, build_embedder
from .lm_hub import LanguageModelHub
from .vocab_flags import LM, VocabLayers, describe

logger = logging.getLogger(__name__)

# the tasks our language-model checkpoints are trained with (what the hub loader accepts)
LM_TASKS = ("language_modeling", "adaptive_language_modeling", "bptt_lm")
# relative positions and recurrence set no length limit: generation is bounded by --max-target-positions where given
UNLIMITED_POSITIONS = 1_000_000
# the extra output's entry a body fills with its RegularizedActivations (bodies without one leave it out)
ACTIVATIONS = "activations"


class RegularizedActivations(NamedTuple):
    """What activation regularisation (AR) and its temporal form (TAR) read (Merity et al. 2018,
    https://arxiv.org/abs/1708.02182, Sec. 4.6), both ``B x T x units``: ``dropped`` the body's output after its
    dropout (AR), ``raw`` the same output before it (TAR)."""

    dropped: Tensor
    raw: Tensor


@dataclass(frozen=True)
class StreamKey:
    """Where a batch sits in a task's streams: its ``split``, its stream ``group`` (one state per group) and its
    ``step`` (0: the stream starts afresh). Not a tuple: fairseq's sample movers rebuild tuples and keep other
    objects as they are."""

    split: str
    group: int
    step: int

    @property
    def state_key(self) -> Tuple[str, int]:
        return self.split, self.group


def word_counts(dictionary) -> List[int]:
    """Counts of the regular entries (after the special symbols), in dictionary order."""
    return [int(c) for c in dictionary.count[dictionary.nspecial :]]


def band_fractions(dictionary, cutoff: Sequence[int]) -> List[float]:
    """Fraction of counted tokens in each band ``[0, c0), [c0, c1), ..., [c_last, V)``."""
    counts = [0] * dictionary.nspecial + word_counts(dictionary)
    total = max(sum(counts), 1)
    bounds = [0] + list(cutoff) + [len(dictionary)]
    return [sum(counts[a:b]) / total for a, b in zip(bounds, bounds[1:])]


class LanguageModelBase:
    """Mixed into every language model of this package, before fairseq's model class
    (``class MyLM(LanguageModelBase, FairseqLanguageModel)``). Its ``build_model`` runs :meth:`vocabulary_layers`,
    then the subclass's :meth:`build_body` (the body between the embedder and a :class:`Scorer` of
    ``layers.output``).

    Class attributes a body sets: ``wide_input`` (its first layer reads an input of any width, as an LSTM's does,
    which DeFINE without its reduction gives) and ``streams`` (its decoder is a :class:`StreamDecoder`: a state runs
    on between segments); such a body also says what it carries (:meth:`carried_state`)."""

    wide_input: bool = False
    streams: bool = False

    @classmethod
    def carried_state(cls, args) -> Optional[str]:
        """What this configuration carries between segments, for the warning under a task that does not carry streams
        (None: nothing)."""
        return None

    @classmethod
    def build_model(cls, args, task):
        """The vocabulary step, then the body (:meth:`build_body`); the model keeps what the step wrote into ``args``
        (``config_record``), for a task to copy into its own config (see :func:`keep_config_record`)."""
        layers, embedder = cls.vocabulary_layers(args, task)
        model = cls.build_body(args, task, layers, embedder)
        names = [f"dictionary_{name}" for name in DICTIONARY_RECORD] + list(layers.derived)
        model.config_record = {name: safe_getattr(args, name, None) for name in names}
        return model

    @classmethod
    def build_body(cls, args, task, layers: VocabLayers, embedder: Embedder):
        """The model around ``embedder``: its decoder runs the body and builds its scorer from ``layers.output``
        after it (``build_scorer``), so a seed initialises the body first."""
        raise NotImplementedError

    @classmethod
    def vocabulary_layers(cls, args, task) -> Tuple[VocabLayers, Embedder]:
        """fairseq's fixes, the checks of the task and the dictionary, the description of the vocabulary layers (once
        per build; cutoffs given as ``auto`` derived by the task's ``auto_cutoffs``, written back into ``args`` so
        checkpoints keep the numbers) and the embedder."""
        fairseq_fixes.apply()
        check_sizes(args, ("tokens_per_sample", "max_target_positions"))
        cls.check_task(args, task)
        dictionary = task.source_dictionary
        check_dictionary(args, dictionary, data_of(task))
        guard_task(task)
        derive, derived = getattr(task, "auto_cutoffs", None), []

        def auto() -> List[int]:  # both layers may ask: derived once
            if not derived:
                derived.extend(derive(dictionary))
            return derived

        layers = describe(args, dictionary, LM, auto_cutoffs=auto if derive else None, wide_input=cls.wide_input)
        for name, spec in (("adaptive_input_cutoff", layers.input), ("adaptive_softmax_cutoff", layers.output)):
            if spec is None or spec.cutoff is None:
                continue
            if name in layers.derived:
                setattr(args, name, ",".join(map(str, spec.cutoff)))
            if derive is not None:  # a task that has the training counts at hand
                logger.info(f"{name}={','.join(map(str, spec.cutoff))}: fraction of training tokens per band "
                            + " / ".join(f"{f:.4f}" for f in band_fractions(dictionary, spec.cutoff)))
        return layers, build_embedder(layers.input, dictionary)

    @classmethod
    def check_task(cls, args, task) -> None:
        """A body with state under a task: the task must tell it where streams restart."""
        if not cls.streams:
            return
        if task_setting(task, "_name") == "truncated_bptt_lm":  # fairseq's own task, which cannot say so
            raise ValueError("--task truncated_bptt_lm scores every segment but its last token and does not tell the "
                             "model where a stream restarts: use --task bptt_lm (the same data and flags)")
        carried = cls.carried_state(args)
        if carried and hasattr(task, "load_dataset") and not getattr(task, "carries_streams", False):
            logger.warning(f"{carried} is not carried under this task, which scores every batch on its own: train and "
                           f"evaluate with --task bptt_lm to carry it")

    @classmethod
    def from_pretrained(cls, model_name_or_path, checkpoint_file="model.pt", data_name_or_path=".", **kwargs):
        """fairseq's hub loader, after checking the folder, the checkpoint's kind and task, and the dictionary: a
        :class:`LanguageModelHub` (fairseq's interface, for texts of any length)."""
        check_hub_paths(cls, model_name_or_path, checkpoint_file, data_name_or_path, LM_TASKS,
                        lambda state: ["dict.txt"], "load a translation checkpoint with "
                        "AdaptiveTransformerModel.from_pretrained or fairseq-generate")
        loaded = hub_utils.from_pretrained(model_name_or_path, checkpoint_file, data_name_or_path,
                                           archive_map=cls.hub_models(), **kwargs)
        return LanguageModelHub(loaded["args"], loaded["task"], loaded["models"])


def keep_config_record(args, model) -> None:
    """Copy what a model's vocabulary step recorded (its dictionary, derived cutoffs) into ``args``, the config a task
    saves: fairseq builds a model named by its model name (``--arch adaptive_lm``) from a copy of the config."""
    for name, value in (getattr(model, "config_record", None) or {}).items():
        if value is not None and safe_getattr(args, name, None) != value:
            with writable(args):
                setattr(args, name, value)


StateList = Optional[List[Tensor]]  # tensors whose first dimension is the batch


class StreamDecoder(FairseqIncrementalDecoder):
    """Embedder -> body (:meth:`advance`) -> ``B x T x m`` features, scored by ``self.scorer``.

    State is kept in two places:

    - under a task that carries streams, one state per stream group (``net_input["stream"]``, a :class:`StreamKey`),
      started afresh at step 0 (each epoch, each validation, each evaluation) and whenever the batch size changes;
      it is not saved in checkpoints, so a resumed run starts its first segment without one;
    - for incremental decoding (generation), in fairseq's ``incremental_state``: the state after the tokens seen so
      far, so that each step runs the new tokens alone and equals a full pass over the sequence.

    Without a stream (other tasks, the hub's ``score``) each batch is run from the start.
    """

    def __init__(self, dictionary, embedder: Embedder, max_positions: Optional[int] = None):
        super().__init__(dictionary)
        self.embed_tokens = embedder
        self.scorer: Scorer = None  # set by the subclass after its body (the seed's initialisation order)
        self.memories: Dict[Tuple[str, int], StateList] = {}  # StreamKey.state_key -> state; not saved
        self.max_target_positions = max_positions or UNLIMITED_POSITIONS

    def advance(self, tokens: Tensor, state: StateList, incremental: bool) -> Tuple[Tensor, dict, StateList]:
        """``B x T`` tokens, continuing ``state`` (None: from the start) -> ``B x T x m`` features, the extra output,
        and the state after them (detached where it will be carried into a training step)."""
        raise NotImplementedError

    def stream_state(self, stream: Optional[StreamKey], batch: int) -> StateList:
        """The state a batch of ``stream`` continues: none at step 0, nor for another batch size (another stream)."""
        if stream is None:
            return None
        state = self.memories.get(stream.state_key)
        if stream.step == 0 or state is None or state[0].size(0) != batch:
            return None
        return state

    def forward(self, src_tokens, src_lengths=None, incremental_state=None, stream: Optional[StreamKey] = None,
                features_only=False, **unused):
        """``B x T`` tokens -> (``B x T x m`` features, extra). With ``incremental_state`` only the tokens after those
        already seen are run, from the state they left."""
        if incremental_state is not None:
            cache = self.get_incremental_state(incremental_state, "cache")
            seen, state = (0, None) if cache is None else (cache["seen"], cache["state"])
            features, extra, state = self.advance(src_tokens[:, seen:], state, incremental=True)
            self.set_incremental_state(incremental_state, "cache", {"seen": src_tokens.size(1), "state": state})
            return features, extra
        if stream is not None and not isinstance(stream, StreamKey):
            stream = StreamKey(*stream)  # (split, group, step), as callers outside a task may give it
        features, extra, state = self.advance(src_tokens, self.stream_state(stream, src_tokens.size(0)), False)
        if stream is not None:
            self.memories[stream.state_key] = state
        return features, extra

    def output_layer(self, features):
        return features

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        return self.scorer.normalized_probs(net_output[0], log_probs, sample)

    def max_positions(self):
        return self.max_target_positions

    def reorder_incremental_state(self, incremental_state, new_order):
        cache = self.get_incremental_state(incremental_state, "cache")
        if cache is not None and cache["state"] is not None:
            state = [t.index_select(0, new_order) for t in cache["state"]]
            self.set_incremental_state(incremental_state, "cache", {"seen": cache["seen"], "state": state})
