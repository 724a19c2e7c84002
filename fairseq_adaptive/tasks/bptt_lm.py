"""``bptt_lm``: truncated backpropagation through time over parallel streams of one text, for models with a memory
(Transformer-XL, ``models/txl_lm.py``). A subclass of fairseq's ``truncated_bptt_lm`` (same flags) that:

- scores every token of a split exactly once (its first aside, which has no context): the stream is cut into ``R``
  rows of consecutive tokens and each row into segments of ``--tokens-per-sample``; a segment's targets run one token
  past its inputs, so no token falls between two segments (fairseq's task pads the last target of every segment);
  only the end of the last rows is padding, and nothing is trimmed;
- tells the model which stream a batch continues and at which step (``net_input["stream"]``, a
  ``lm_base.StreamKey``), so its memory starts
  afresh at each epoch, validation and evaluation, and validation never touches the training memory;
- makes ``--update-freq`` equal to more GPUs: ``R = --batch-size x GPUs x --update-freq`` rows, in ``GPUs x
  update-freq`` groups of ``--batch-size``; GPU ``g``'s ``j``-th micro-batch of every update reads group ``g x
  update-freq + j``, and the model keeps a memory per group. Two GPUs at ``--update-freq 1`` and one at
  ``--update-freq 2`` read the same segments into the same updates.
"""

import logging
import math
import os
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch
from fairseq import utils
from fairseq.data import (
    IdDataset,
    NestedDictionaryDataset,
    NumelDataset,
    PadDataset,
    PrependTokenDataset,
    StripTokenDataset,
    TokenBlockDataset,
    AppendTokenDataset,
    data_utils,
    iterators,
)
from fairseq.data.indexed_dataset import MMapIndexedDataset
from fairseq.examples.truncated_bptt.truncated_bptt_lm_task import TruncatedBPTTLMConfig, TruncatedBPTTLMTask
from fairseq.tasks import FairseqTask, register_task
from fairseq.utils import safe_getattr
from omegaconf import II

from .. import fairseq_fixes
from ..checks import check_sizes, guard_task
from ..models.lm_base import UNLIMITED_POSITIONS, StreamKey, keep_config_record
from ..optim.nt_asgd import ValidatesWithAverage

logger = logging.getLogger(__name__)


@dataclass
class BPTTLMConfig(TruncatedBPTTLMConfig):
    batch_size: Optional[int] = II("dataset.batch_size")  # unset for fairseq-interactive and the hub
    update_freq: List[int] = II("optimization.update_freq")
    train_subset: str = II("dataset.train_subset")
    max_target_positions: Optional[int] = field(
        default=None, metadata={"help": "longest sequence generation may produce (unset: the model's limit)"}
    )


def token_stream(data) -> np.ndarray:
    """Every token of an indexed dataset, in order, as one 1-D array (a view of the memory-mapped file when it is
    fairseq's mmap format, whose items lie back to back: ``data`` must then outlive the array, as it closes the
    mapping when collected)."""
    if isinstance(data, MMapIndexedDataset) and len(data) > 0:
        index = data._index
        total = int(np.sum(data.sizes, dtype=np.int64))
        if int(index._pointers[0]) == 0 and int(index._pointers[-1]) + int(data.sizes[-1]) * index.dtype().itemsize \
                == total * index.dtype().itemsize:
            return np.frombuffer(data._bin_buffer, dtype=index.dtype, count=total)
    return np.concatenate([data[i].numpy() for i in range(len(data))]) if len(data) else np.zeros(0, np.int64)


class StreamDataset(torch.utils.data.Dataset):
    """Item ``k`` is micro-batch ``j`` of step ``s`` (``s, j = divmod(k, groups)``) of one GPU: for each of its
    group's rows, the segment's inputs and its targets (one token further), or shorter at a row's end."""

    def __init__(self, data, split: str, tokens_per_sample: int, batch_size: int, shard: int, num_shards: int,
                 groups: int):
        self.data = data  # owns the memory map the stream views
        stream = token_stream(data)
        positions = len(stream) - 1  # tokens with a context: the targets
        if positions < 1:
            raise ValueError(f"the {split} split has {len(stream)} token(s): it needs two at least")
        rows = batch_size * num_shards * groups
        self.stream, self.split, self.tokens = stream, split, tokens_per_sample
        self.batch_size, self.groups, self.first_group = batch_size, groups, shard * groups
        self.row_len = math.ceil(positions / rows)
        self.positions = positions
        self.steps = math.ceil(self.row_len / tokens_per_sample)
        self.sizes = np.full(len(self), tokens_per_sample)

    def __len__(self):
        return self.steps * self.groups

    def segment(self, row: int, step: int):
        start = row * self.row_len + step * self.tokens
        end = min(start + self.tokens, (row + 1) * self.row_len, self.positions)
        if end <= start:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        chunk = torch.from_numpy(self.stream[start : end + 1].astype(np.int64))
        return chunk[:-1], chunk[1:]

    def __getitem__(self, k):
        step, j = divmod(k, self.groups)
        group = self.first_group + j
        rows = range(group * self.batch_size, (group + 1) * self.batch_size)
        return k, StreamKey(self.split, j, step), [self.segment(r, step) for r in rows]


@register_task("bptt_lm", dataclass=BPTTLMConfig)
class BPTTLMTask(ValidatesWithAverage, TruncatedBPTTLMTask):
    """See the module docstring."""

    carries_streams = True  # what a model with a state asks (lm_base.LanguageModelBase)

    def __init__(self, cfg: BPTTLMConfig, **unused):  # (the hub passes from_checkpoint)
        fairseq_fixes.apply()
        check_sizes(cfg, ("tokens_per_sample", "batch_size", "max_target_positions"))
        super().__init__(cfg)
        guard_task(self)

    def build_model(self, args, from_checkpoint=False):
        model = super().build_model(args, from_checkpoint)
        if not getattr(model, "streams", False):
            name = safe_getattr(args, "arch", None) or safe_getattr(args, "_name", None) or type(model).__name__
            raise ValueError(f"--task bptt_lm feeds a model segment after segment of one stream, for models that carry "
                             f"a state between them (--arch txl_* or lstm_*); --arch {name} scores each sample on its "
                             f"own: train it with --task adaptive_language_modeling or language_modeling")
        keep_config_record(args, model)  # the dictionary, saved with the checkpoint
        return model

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        paths = utils.split_paths(self.cfg.data)
        split_path = os.path.join(paths[(epoch - 1) % len(paths)], split)
        data = data_utils.load_indexed_dataset(split_path, self.dictionary, combine=combine)
        if data is None:
            raise FileNotFoundError(f"Dataset not found: {split} ({split_path})")
        if not self.cfg.batch_size:
            raise ValueError("--task bptt_lm reads the text as --batch-size parallel streams: give --batch-size "
                             "(per GPU; --max-tokens alone does not set it)")
        freq = list(self.cfg.update_freq or [1])
        if split == self.cfg.train_subset and len(set(freq)) > 1:
            raise ValueError(f"--task bptt_lm keeps one memory per micro-batch of an update: give one --update-freq "
                             f"for all epochs (got {','.join(map(str, freq))})")
        groups = freq[0] if split == self.cfg.train_subset else 1
        self.datasets[split] = StreamDataset(data, split, self.cfg.tokens_per_sample,
                                             self.cfg.batch_size, self.cfg.data_parallel_rank,
                                             self.cfg.data_parallel_size, groups)

    def get_batch_iterator(self, dataset, num_workers=0, epoch=1, data_buffer_size=0, skip_remainder_batch=False,
                           **kwargs):
        if not isinstance(dataset, StreamDataset):  # sentences for the hub and interactive: fairseq's batching
            return FairseqTask.get_batch_iterator(self, dataset, num_workers=num_workers, epoch=epoch,
                                                  data_buffer_size=data_buffer_size,
                                                  skip_remainder_batch=skip_remainder_batch, **kwargs)
        # every GPU has the same number of segments, a multiple of --update-freq: nothing to skip, and skipping
        # (--skip-remainder-batch) would drop the stream's last segments
        return iterators.EpochBatchIterator(
            dataset=dataset, collate_fn=self._collate_fn, num_workers=num_workers, epoch=epoch,
            buffer_size=data_buffer_size, batch_sampler=[[i] for i in range(len(dataset))], disable_shuffling=True,
            skip_remainder_batch=False,
        )

    def _collate_fn(self, items):
        (k, stream, segments), = items
        pad = self.source_dictionary.pad()
        width = max(1, max(len(src) for src, _ in segments))
        src = torch.full((len(segments), width), pad, dtype=torch.long)
        tgt = torch.full((len(segments), width), pad, dtype=torch.long)
        for i, (s, t) in enumerate(segments):
            src[i, : len(s)], tgt[i, : len(t)] = s, t
        return {
            "id": torch.full((len(segments),), k, dtype=torch.long),
            "net_input": {"src_tokens": src, "stream": stream},
            "target": tgt,
            "nsentences": len(segments),
            "ntokens": int(tgt.ne(pad).sum()),
        }

    def build_dataset_for_inference(self, src_tokens, src_lengths, **kwargs):
        """Sentences scored and continued as fairseq's language_modeling task does: input ``</s> w1 .. wn``."""
        d = self.source_dictionary
        blocks = StripTokenDataset(TokenBlockDataset(src_tokens, src_lengths, block_size=None, pad=d.pad(),
                                                     eos=d.eos(), break_mode="eos"), d.eos())
        src = PrependTokenDataset(blocks, d.eos())
        tgt = AppendTokenDataset(blocks, d.pad())
        return NestedDictionaryDataset(
            {"id": IdDataset(),
             "net_input": {"src_tokens": PadDataset(src, pad_idx=d.pad(), left_pad=False),
                           "src_lengths": NumelDataset(src, reduce=False)},
             "target": PadDataset(tgt, pad_idx=d.pad(), left_pad=False)},
            sizes=[np.array([int(n) for n in src_lengths])],
        )

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        with torch.no_grad():
            if prefix_tokens is None and sample["net_input"]["src_tokens"].nelement():
                prefix_tokens = sample["net_input"]["src_tokens"]
                if prefix_tokens[:, 0].eq(self.source_dictionary.eos()).all():
                    prefix_tokens = prefix_tokens[:, 1:]
            return generator.generate(models, sample, prefix_tokens=prefix_tokens, constraints=constraints,
                                      bos_token=self.source_dictionary.eos())

    def max_positions(self):
        return self.cfg.max_target_positions or UNLIMITED_POSITIONS
