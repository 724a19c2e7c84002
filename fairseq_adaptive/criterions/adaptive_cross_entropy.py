"""``adaptive_cross_entropy``: the language-model loss over our adaptive softmax (or a full softmax), in fp32, through
the blockwise engine (``modules/linear_cross_entropy.py``): the decoder hands its features to the criterion, and no
``B x T x V`` logit matrix is formed, for a full softmax either.

Differences from fairseq's ``adaptive_loss``: the loss is accumulated in fp32 (fairseq's sums half-precision
cluster losses and logs ``inf`` under ``--fp16`` at WikiText-103 size); every parameter takes part in every
step, so it runs under every ``--ddp-backend`` (fairseq's demands ``legacy_ddp``); and it logs, per cluster, the
loss (base 2, per token of that cluster) and the fraction of target tokens, so users see whether cutoffs fit.
"""

import math
import re
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.cross_entropy import CrossEntropyCriterion, CrossEntropyCriterionConfig

from ..modules.linear_cross_entropy import linear_cross_entropy

_CLUSTER_KEY = re.compile(r"^cluster(\d+)_ntokens$")


def output_weight(model) -> Optional[torch.Tensor]:
    """The ``V x d`` weight of a decoder's full-softmax output projection (None with an adaptive softmax)."""
    if getattr(model.decoder, "adaptive_softmax", None) is not None:
        return None
    return model.decoder.output_projection.weight


def decoder_features(model, sample):
    """The decoder's output features (``B x T x d``, after its projection to the output width) and its extra
    outputs: what the output layer scores. fairseq decoders return the same without the final product when asked
    for ``features_only``, so a full softmax's ``B x T x V`` logits are never formed in training."""
    return model(**sample["net_input"], features_only=True)


def output_layer_loss(model, features, target, padding_idx: int):
    """Summed fp32 NLL of ``target`` under the decoder's output layer (adaptive or full softmax), and per cluster
    (head first; one entry for a full softmax) the loss sums and token counts, through the blockwise engine."""
    adaptive_softmax = getattr(model.decoder, "adaptive_softmax", None)
    if adaptive_softmax is not None:
        return adaptive_softmax.loss(features, target, ignore_index=padding_idx)
    target = target.reshape(-1)
    keep = target != padding_idx
    loss, _ = linear_cross_entropy(features.reshape(-1, features.size(-1)), output_weight(model), target, keep)
    return loss, loss.detach().reshape(1), keep.sum().reshape(1)


@dataclass
class AdaptiveCrossEntropyConfig(CrossEntropyCriterionConfig):
    no_cluster_stats: bool = field(
        default=False, metadata={"help": "do not log the per-cluster loss_c{i} / frac_c{i} (shorter progress lines)"}
    )


@register_criterion("adaptive_cross_entropy", dataclass=AdaptiveCrossEntropyConfig)
class AdaptiveCrossEntropyCriterion(CrossEntropyCriterion):
    def __init__(self, task, sentence_avg, no_cluster_stats=False):
        super().__init__(task, sentence_avg)
        self.cluster_stats = not no_cluster_stats

    def forward(self, model, sample, reduce=True):
        if not reduce:
            raise ValueError("adaptive_cross_entropy returns summed losses only (reduce=True)")
        net_output = decoder_features(model, sample)
        target = model.get_targets(sample, net_output)
        loss, per_cluster, counts = output_layer_loss(model, net_output[0], target, self.padding_idx)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
        }
        if self.cluster_stats and per_cluster.numel() > 1:
            for i, (cluster_loss, cluster_tokens) in enumerate(zip(per_cluster, counts)):
                logging_output[f"cluster{i}_loss"] = cluster_loss
                logging_output[f"cluster{i}_ntokens"] = cluster_tokens
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
        keys = sorted({int(m.group(1)) for log in logging_outputs for k in log if (m := _CLUSTER_KEY.match(k))})
        for i in keys:
            n = sum(log.get(f"cluster{i}_ntokens", 0) for log in logging_outputs)
            loss = sum(log.get(f"cluster{i}_loss", 0) for log in logging_outputs)
            n = float(n.item() if torch.is_tensor(n) else n)
            loss = float(loss.item() if torch.is_tensor(loss) else loss)
            # priority 500: after loss, ppl, speed, lr and gnorm, so a narrow progress bar cuts these first
            if n > 0:
                metrics.log_scalar(f"loss_c{i}", loss / n / math.log(2), n, priority=500, round=3)
            metrics.log_scalar(f"frac_c{i}", n / max(ntokens, 1), ntokens, priority=500, round=3)
