"""``adaptive_label_smoothed_cross_entropy``: fairseq's label-smoothed cross-entropy for translation, over our adaptive
softmax (fairseq has none: its ``label_smoothed_cross_entropy`` asks the decoder for a V-wide log-probability matrix,
and its ``adaptive_loss`` has no smoothing and fails for translation, fairseq issue #1162).

Same smoothing formula and logged metrics (``loss``, ``nll_loss``, ``ppl``) as fairseq's criterion; the loss is
accumulated in fp32 and every parameter takes part in every step (any ``--ddp-backend``). Adaptive and full softmax
alike go through the blockwise engine (``modules/linear_cross_entropy.py``): the decoder hands its features to the
criterion, the smoothing term is reduced block by block with the NLL, and no V-wide row is ever held.
"""

from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)

from .adaptive_cross_entropy import decoder_features, scorer_of

NAME = "adaptive_label_smoothed_cross_entropy"


@register_criterion(NAME, dataclass=LabelSmoothedCrossEntropyCriterionConfig)
class AdaptiveLabelSmoothedCrossEntropyCriterion(LabelSmoothedCrossEntropyCriterion):
    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing={label_smoothing} must lie in [0, 1): it is the probability mass "
                             f"moved from the target to the other words (0.1 is usual)")
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)

    def forward(self, model, sample, reduce=True):
        if not reduce:
            raise ValueError(f"{NAME} returns summed losses only (reduce=True)")
        scorer_of(model, NAME)
        net_output = decoder_features(model, sample)
        loss, nll_loss = self.compute_loss(model, net_output, sample)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            "nll_loss": nll_loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
        }
        if self.report_accuracy:
            n_correct, total = self.compute_accuracy(model, net_output, sample)
            logging_output["n_correct"], logging_output["total"] = n_correct.data, total.data
        return loss, sample_size, logging_output

    def compute_accuracy(self, model, net_output, sample):
        """fairseq's accuracy (argmax == target over non-padding positions) from the features, a block of rows at a
        time, for a full or an adaptive softmax."""
        x, target = self.scored(model, net_output, sample)
        best = scorer_of(model, NAME).predictions(x.detach())
        keep = target != self.padding_idx
        return (best.eq(target) & keep).sum(), keep.sum()

    def compute_loss(self, model, net_output, sample, reduce=True):
        """``net_output[0]`` holds the decoder's features (see ``forward``)."""
        x, target = self.scored(model, net_output, sample)
        return scorer_of(model, NAME).label_smoothed_loss(x, target, self.padding_idx, self.eps)

    def scored(self, model, net_output, sample):
        """The positions the loss scores: ``N x m`` features and ``N`` targets, after ``--ignore-prefix-size``."""
        features, target = net_output[0], model.get_targets(sample, net_output)
        if self.ignore_prefix_size > 0:
            features, target = features[:, self.ignore_prefix_size :], target[:, self.ignore_prefix_size :]
        return features.reshape(-1, features.size(-1)), target.reshape(-1)
