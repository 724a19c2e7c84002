"""``adaptive_label_smoothed_cross_entropy``: fairseq's label-smoothed cross-entropy for translation, over our adaptive
softmax (fairseq has none: its ``label_smoothed_cross_entropy`` asks the decoder for a V-wide log-probability matrix,
and its ``adaptive_loss`` has no smoothing and fails for translation, fairseq issue #1162).

Same smoothing formula and logged metrics (``loss``, ``nll_loss``, ``ppl``) as fairseq's criterion; the loss is
accumulated in fp32 and every parameter takes part in every step (any ``--ddp-backend``). Models without an adaptive
softmax get fairseq's own computation, on fp32 log-probabilities.
"""

from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)


@register_criterion("adaptive_label_smoothed_cross_entropy", dataclass=LabelSmoothedCrossEntropyCriterionConfig)
class AdaptiveLabelSmoothedCrossEntropyCriterion(LabelSmoothedCrossEntropyCriterion):
    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)

    def compute_loss(self, model, net_output, sample, reduce=True):
        adaptive_softmax = getattr(model.decoder, "adaptive_softmax", None)
        if adaptive_softmax is None:
            return super().compute_loss(model, net_output, sample, reduce=reduce)
        if not reduce:
            raise ValueError("adaptive_label_smoothed_cross_entropy returns summed losses only (reduce=True)")
        features, target = net_output[0], model.get_targets(sample, net_output)
        if self.ignore_prefix_size > 0:
            features, target = features[:, self.ignore_prefix_size :], target[:, self.ignore_prefix_size :]
        return adaptive_softmax.label_smoothed_loss(features, target, self.padding_idx, self.eps)

    def compute_accuracy(self, model, net_output, sample):
        if getattr(model.decoder, "adaptive_softmax", None) is not None:
            raise ValueError("--report-accuracy needs the argmax over the full vocabulary, which an adaptive softmax "
                             "does not compute in training: drop --report-accuracy")
        return super().compute_accuracy(model, net_output, sample)
