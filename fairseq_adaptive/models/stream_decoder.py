"""The decoder shape of bodies whose state runs on from segment to segment (Transformer-XL's memory, an LSTM's hidden
state): an :class:`Embedder`, a body advanced by :meth:`StreamDecoder.advance`, and the scorer the features go to.

State is kept in two places:

- for ``--task bptt_lm``, one state per stream group (``net_input["stream"]``: split, group, step), started afresh at
  step 0 (each epoch, each validation, each evaluation) and whenever the batch size changes; it is not saved in
  checkpoints, so a resumed run starts its first segment without one;
- for incremental decoding (generation), in fairseq's ``incremental_state``: the state after the tokens seen so far,
  so that each step runs the new tokens alone and equals a full pass over the sequence.

Without a stream (other tasks, the hub's ``score``) each batch is run from the start.
"""

import logging
from typing import Dict, List, Optional, Tuple

from fairseq.models import FairseqIncrementalDecoder
from fairseq.tasks import FairseqTask
from fairseq.utils import safe_getattr
from torch import Tensor

from ..modules.vocab_layers import Embedder, Scorer
from ..tasks.bptt_lm import BPTTLMTask, UNLIMITED_POSITIONS
from .adaptive_lm import lm_vocabulary_layers
from .transformer_body import normalized_probs
from .vocab_flags import VocabLayers

logger = logging.getLogger(__name__)

StateList = Optional[List[Tensor]]  # tensors whose first dimension is the batch


class StreamDecoder(FairseqIncrementalDecoder):
    def __init__(self, dictionary, embedder: Embedder, max_positions: Optional[int] = None):
        super().__init__(dictionary)
        self.embed_tokens = embedder
        self.scorer: Scorer = None  # set by the subclass after its body (the seed's initialisation order)
        self.memories: Dict[tuple, StateList] = {}  # (split, group) -> state; not saved
        self.max_target_positions = max_positions or UNLIMITED_POSITIONS

    def advance(self, tokens: Tensor, state: StateList, incremental: bool) -> Tuple[Tensor, dict, StateList]:
        """``B x T`` tokens, continuing ``state`` (None: from the start) -> ``B x T x m`` features, the extra output,
        and the state after them (detached where it will be carried into a training step)."""
        raise NotImplementedError

    def stream_state(self, stream, batch: int) -> StateList:
        """The state a batch of ``stream`` (split, group, step) continues: none at step 0, nor for another batch size
        (a different stream)."""
        if stream is None:
            return None
        split, group, step = stream
        state = self.memories.get((split, group))
        if step == 0 or state is None or state[0].size(0) != batch:
            return None
        return state

    def forward(self, src_tokens, src_lengths=None, incremental_state=None, stream=None, features_only=False,
                **unused):
        """``B x T`` tokens -> (``B x T x m`` features, extra). With ``incremental_state`` only the tokens after those
        already seen are run, from the state they left."""
        if incremental_state is not None:
            cache = self.get_incremental_state(incremental_state, "cache")
            seen, state = (0, None) if cache is None else (cache["seen"], cache["state"])
            features, extra, state = self.advance(src_tokens[:, seen:], state, incremental=True)
            self.set_incremental_state(incremental_state, "cache", {"seen": src_tokens.size(1), "state": state})
            return features, extra
        features, extra, state = self.advance(src_tokens, self.stream_state(stream, src_tokens.size(0)), False)
        if stream is not None:
            self.memories[tuple(stream[:2])] = state
        return features, extra

    def output_layer(self, features):
        return features

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        return normalized_probs(self.scorer, net_output, log_probs, sample)

    def max_positions(self):
        return self.max_target_positions

    def reorder_incremental_state(self, incremental_state, new_order):
        cache = self.get_incremental_state(incremental_state, "cache")
        if cache is not None and cache["state"] is not None:
            state = [t.index_select(0, new_order) for t in cache["state"]]
            self.set_incremental_state(incremental_state, "cache", {"seen": cache["seen"], "state": state})


def vocabulary_layers(args, task, carried: Optional[str], wide_input: bool = False) -> Tuple[VocabLayers, Embedder]:
    """What every stream model builds first: the task's checks for streams, then :func:`lm_vocabulary_layers`.
    ``carried`` names the state a stream would carry (None: the model has none configured), for the warning under a
    task without streams; ``wide_input``: the body reads an input of any width (see ``describe``)."""
    if safe_getattr(getattr(task, "cfg", None), "_name", None) == "truncated_bptt_lm":
        raise ValueError("--task truncated_bptt_lm scores every segment but its last token and does not tell the "
                         "model where a stream restarts: use --task bptt_lm (the same data and flags)")
    if carried and isinstance(task, FairseqTask) and not isinstance(task, BPTTLMTask):
        logger.warning(f"{carried} is not carried under this task, which scores every batch on its own: train and "
                       f"evaluate with --task bptt_lm to carry it")
    return lm_vocabulary_layers(args, task, wide_input)
