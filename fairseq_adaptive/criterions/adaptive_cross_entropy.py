"""``adaptive_cross_entropy``: the language-model loss over our adaptive softmax (or a full softmax), in fp32.

Differences from fairseq's ``adaptive_loss``: the loss is accumulated in fp32 (fairseq's sums half-precision
cluster losses and logs ``inf`` under ``--fp16`` at WikiText-103 size); every parameter takes part in every
step, so it runs under every ``--ddp-backend`` (fairseq's demands ``legacy_ddp``); and it logs, per cluster, the
loss (base 2, per token of that cluster) and the fraction of target tokens, so users see whether cutoffs fit.
"""

import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.cross_entropy import CrossEntropyCriterion, CrossEntropyCriterionConfig

_CLUSTER_KEY = re.compile(r"^cluster(\d+)_ntokens$")


def output_layer_loss(model, net_output, target, padding_idx: int):
    """Summed fp32 NLL of ``target`` and per-cluster (head first) loss sums and token counts.

    ``net_output[0]`` holds features when the decoder has an adaptive softmax, logits otherwise.
    """
    adaptive_softmax = getattr(model.decoder, "adaptive_softmax", None)
    if adaptive_softmax is not None:
        return adaptive_softmax.loss(net_output[0], target, ignore_index=padding_idx)
    logits = net_output[0]
    loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), target.reshape(-1), ignore_index=padding_idx, reduction="sum"
    )
    return loss, loss.detach().reshape(1), target.ne(padding_idx).sum().reshape(1)


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
        net_output = model(**sample["net_input"])
        target = model.get_targets(sample, net_output)
        loss, per_cluster, counts = output_layer_loss(model, net_output, target, self.padding_idx)
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
