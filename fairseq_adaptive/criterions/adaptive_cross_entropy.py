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

import torch
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.cross_entropy import CrossEntropyCriterion, CrossEntropyCriterionConfig

from ..models.lm_base import ACTIVATIONS

_CLUSTER_KEY = re.compile(r"^cluster(\d+)_ntokens$")


def scorer_of(model, criterion: str):
    """The decoder's :class:`Scorer` (every model of this package has one)."""
    scorer = getattr(getattr(model, "decoder", None), "scorer", None)
    if scorer is None:
        raise ValueError(f"--criterion {criterion} scores through the output layer of this package's models (every "
                         f"--arch that --user-dir fairseq_adaptive registers); {type(model).__name__} has none: use "
                         f"fairseq's cross_entropy / label_smoothed_cross_entropy with it")
    return scorer


def decoder_features(model, sample):
    """The decoder's output features (``B x T x m``) and its extra outputs: what the scorer reads. No ``B x T x V``
    logits are formed."""
    return model(**sample["net_input"], features_only=True)


@dataclass
class AdaptiveCrossEntropyConfig(CrossEntropyCriterionConfig):
    no_cluster_stats: bool = field(
        default=False, metadata={"help": "do not log the per-cluster loss_c{i} / frac_c{i} (shorter progress lines)"}
    )
    ar_alpha: float = field(
        default=0.0, metadata={"help": "activation regularisation (Merity et al. 2018): alpha x mean square of the "
                                       "body's output after its dropout, for models whose body hands its "
                                       "activations over (docs/design.md; Merity et al.: 2)"}
    )
    tar_beta: float = field(
        default=0.0, metadata={"help": "temporal activation regularisation (Merity et al. 2018): beta x mean square "
                                       "of the change of the body's output from step to step, for models whose "
                                       "body hands its activations over (docs/design.md; Merity et al.: 1)"}
    )


def activation_penalties(extra: dict, keep: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """AR and TAR (Merity et al. 2018, https://arxiv.org/abs/1708.02182, Sec. 4.6) over the positions ``keep``
    (``B x T``, not padding): ``alpha mean(h_drop^2) + beta mean((h_t - h_{t-1})^2)``, means over every element
    (positions x units), on the :class:`RegularizedActivations` a body hands over in its extra output (``h_drop``:
    ``dropped``, ``h``: ``raw``)."""
    activations = extra.get(ACTIVATIONS)
    if activations is None:
        raise ValueError("--ar-alpha / --tar-beta regularise the activations a model's body hands to the criterion, "
                         "and this model's body hands none (docs/design.md lists the bodies that do): drop them")
    # in fp32: under --fp16 the element count alone (tokens x units) is past half precision's range
    out, raw = activations.dropped.float(), activations.raw.float()
    mask = keep.unsqueeze(-1).float()
    units = out.size(-1)
    penalty = alpha * (out.pow(2) * mask).sum() / (mask.sum() * units).clamp(min=1)
    steps = mask[:, 1:] * mask[:, :-1]
    return penalty + beta * ((raw[:, 1:] - raw[:, :-1]).pow(2) * steps).sum() / (steps.sum() * units).clamp(min=1)


@register_criterion("adaptive_cross_entropy", dataclass=AdaptiveCrossEntropyConfig)
class AdaptiveCrossEntropyCriterion(CrossEntropyCriterion):
    def __init__(self, task, sentence_avg, no_cluster_stats=False, ar_alpha=0.0, tar_beta=0.0):
        super().__init__(task, sentence_avg)
        self.cluster_stats = not no_cluster_stats
        self.ar_alpha, self.tar_beta = ar_alpha, tar_beta

    def forward(self, model, sample, reduce=True):
        if not reduce:
            raise ValueError("adaptive_cross_entropy returns summed losses only (reduce=True)")
        scorer = scorer_of(model, "adaptive_cross_entropy")
        net_output = decoder_features(model, sample)
        target = model.get_targets(sample, net_output)
        loss, per_cluster, counts = scorer.loss(net_output[0], target, self.padding_idx)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data,  # the NLL alone: perplexities stay perplexities with AR/TAR on
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
        }
        if (self.ar_alpha or self.tar_beta) and model.training:
            # added to the summed loss times the sample size, so the step's gradient is that of Merity et al.'s mean loss
            penalty = activation_penalties(net_output[1], target != self.padding_idx, self.ar_alpha, self.tar_beta)
            loss = loss + penalty * sample_size
            logging_output["activation_penalty"] = penalty.data * sample_size
        if self.cluster_stats and per_cluster.numel() > 1:
            for i, (cluster_loss, cluster_tokens) in enumerate(zip(per_cluster, counts)):
                logging_output[f"cluster{i}_loss"] = cluster_loss
                logging_output[f"cluster{i}_ntokens"] = cluster_tokens
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
        if any("activation_penalty" in log for log in logging_outputs):
            penalty = sum(log.get("activation_penalty", 0) for log in logging_outputs)
            size = sum(log.get("sample_size", 0) for log in logging_outputs)
            metrics.log_scalar("ar_tar", float(penalty) / max(size, 1), size, priority=400, round=4)
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
