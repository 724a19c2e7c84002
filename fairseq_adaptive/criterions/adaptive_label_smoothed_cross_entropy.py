"""``adaptive_label_smoothed_cross_entropy``: fairseq's label-smoothed cross-entropy for translation, over our adaptive
softmax (fairseq has none: its ``label_smoothed_cross_entropy`` asks the decoder for a V-wide log-probability matrix,
and its ``adaptive_loss`` has no smoothing and fails for translation, fairseq issue #1162).

Same smoothing formula and logged metrics (``loss``, ``nll_loss``, ``ppl``) as fairseq's criterion; the loss is
accumulated in fp32 and every parameter takes part in every step (any ``--ddp-backend``). Adaptive and full softmax
alike go through the blockwise engine (``modules/linear_cross_entropy.py``): the decoder hands its features to the
criterion, the smoothing term is reduced block by block with the NLL, and no V-wide row is ever held.
"""

import torch
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)

from ..modules.linear_cross_entropy import (
    block_elements_for,
    label_smoothing_weights,
    linear_cross_entropy,
    rows_per_block,
)
from .adaptive_cross_entropy import decoder_features, output_weight


@register_criterion("adaptive_label_smoothed_cross_entropy", dataclass=LabelSmoothedCrossEntropyCriterionConfig)
class AdaptiveLabelSmoothedCrossEntropyCriterion(LabelSmoothedCrossEntropyCriterion):
    def forward(self, model, sample, reduce=True):
        if not reduce:
            raise ValueError("adaptive_label_smoothed_cross_entropy returns summed losses only (reduce=True)")
        if self.report_accuracy and output_weight(model) is None:
            raise ValueError("--report-accuracy needs the argmax over the full vocabulary, which an adaptive softmax "
                             "does not compute in training: drop --report-accuracy")
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
        time (a full softmax only)."""
        x, target = self.scored(model, net_output, sample)
        x = x.detach()
        weight = output_weight(model).detach()
        with torch.no_grad():
            step = rows_per_block(x.size(0), weight.size(0), block_elements_for(x))
            best = torch.cat([(rows @ weight.t()).argmax(1) for rows in x.split(step)])
        keep = target != self.padding_idx
        return (best.eq(target) & keep).sum(), keep.sum()

    def compute_loss(self, model, net_output, sample, reduce=True):
        """``net_output[0]`` holds the decoder's features (see ``forward``)."""
        x, target = self.scored(model, net_output, sample)
        adaptive_softmax = getattr(model.decoder, "adaptive_softmax", None)
        if adaptive_softmax is not None:
            return adaptive_softmax.label_smoothed_loss(x, target, self.padding_idx, self.eps)
        weight = output_weight(model)
        keep, smooth = label_smoothing_weights(target != self.padding_idx, self.eps, weight.size(0))
        loss, nll = linear_cross_entropy(x, weight, target, keep, smooth)
        return loss, nll.sum()

    def scored(self, model, net_output, sample):
        """The positions the loss scores: ``N x d`` features and ``N`` targets, after ``--ignore-prefix-size``."""
        features, target = net_output[0], model.get_targets(sample, net_output)
        if self.ignore_prefix_size > 0:
            features, target = features[:, self.ignore_prefix_size :], target[:, self.ignore_prefix_size :]
        return features.reshape(-1, features.size(-1)), target.reshape(-1)
