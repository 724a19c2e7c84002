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

_CLUSTER_KEY = re.compile(r"^cluster(\d+)_ntokens$")


def scorer_of(model, criterion: str):
    """The decoder's :class:`Scorer` (every model of this package has one)."""
    scorer = getattr(getattr(model, "decoder", None), "scorer", None)
    if scorer is None:
        raise ValueError(f"--criterion {criterion} scores through the output layer of this package's models "
                         f"(--arch adaptive_lm*, adaptive_transformer*); {type(model).__name__} has none: use "
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
        default=0.0, metadata={"help": "AWD-LSTM's activation regularisation: alpha x mean square of the LSTM's "
                                       "output after its dropout (--arch lstm_*; AWD-LSTM: 2)"}
    )
    tar_beta: float = field(
        default=0.0, metadata={"help": "AWD-LSTM's temporal activation regularisation: beta x mean square of the "
                                       "change of the last layer's output from step to step (--arch lstm_*; "
                                       "AWD-LSTM: 1)"}
    )


def activation_penalties(extra: dict, keep: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """AWD-LSTM's AR and TAR (Merity et al. 2018, Sec. 4.6) over the positions ``keep`` (``B x T``, not padding):
    ``alpha mean(h_drop^2) + beta mean((h_t - h_{t-1})^2)``, means over every element (positions x units), ``h_drop``
    the LSTM's output after its dropout, ``h`` the last layer's output before it."""
    if "lstm_output" not in extra:
        raise ValueError("--ar-alpha / --tar-beta regularise an LSTM's outputs: they need an LSTM model "
                         "(--arch lstm_*)")
    # in fp32: under --fp16 the element count alone (tokens x units) is past half precision's range
    out, raw = extra["lstm_output"].float(), extra["lstm_raw"].float()
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
            # added to the summed loss times the sample size, so the step's gradient is AWD-LSTM's mean-loss one
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
