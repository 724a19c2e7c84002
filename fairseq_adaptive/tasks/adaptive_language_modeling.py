"""``adaptive_language_modeling``: fairseq's language-modeling task, plus the checks adaptive layers need.

It derives cutoffs from coverage targets where the user wrote ``auto`` (or gave none with ``--adaptive-input``),
when the model asks (:meth:`AdaptiveLanguageModelingTask.auto_cutoffs`, called once per build by
``lm_base.LanguageModelBase``), after checking that the dictionary is sorted by frequency (the bands of adaptive input
and softmax are ranges of dictionary indices, so an unsorted dictionary puts frequent words in narrow bands); the model
then logs the fraction of training tokens that falls in each band.
"""

import logging
from dataclasses import dataclass, field
from typing import List, Sequence

from fairseq.data import Dictionary
from fairseq.tasks import register_task
from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask

from .. import fairseq_fixes
from ..checks import check_sizes, guard_task
from ..models.lm_base import keep_config_record, word_counts
from ..models.vocab_flags import check_frequency_sorted
from ..optim.nt_asgd import ValidatesWithAverage

logger = logging.getLogger(__name__)


def parse_coverage(value) -> List[float]:
    """``--cutoff-coverage``, checked whether or not cutoffs are derived (a typo should not wait for ``auto``)."""
    try:
        coverage = [float(c) for c in str(value).split(",")]
    except ValueError:
        raise ValueError(f"--cutoff-coverage={value!r} is not a comma-separated list of fractions, e.g. 0.9,0.98") from None
    if not coverage or any(not 0.0 < c < 1.0 for c in coverage) or coverage != sorted(set(coverage)):
        raise ValueError(f"--cutoff-coverage={value} must be increasing fractions in (0, 1), e.g. 0.9,0.98")
    return coverage


def derive_cutoffs(dictionary: Dictionary, coverage: Sequence[float], multiple: int = 8) -> List[int]:
    """Band boundaries from coverage targets: boundary ``j`` is the smallest dictionary index whose head covers
    ``coverage[j]`` of the training tokens, rounded up to a multiple of ``multiple`` (tensor-core friendly
    shapes). Targets that give the same boundary, or one at the dictionary's end, are an error: each target asks for
    a band."""
    counts = word_counts(dictionary)
    total = sum(counts)
    if total <= 0:
        raise ValueError("the dictionary has no counts: cutoffs cannot be derived, give explicit cutoffs")
    cutoffs: List[int] = []
    seen, j = 0, 0
    for target in coverage:
        while j < len(counts) and seen < target * total:
            seen += counts[j]
            j += 1
        boundary = -(-(dictionary.nspecial + j) // multiple) * multiple
        if boundary >= len(dictionary):
            raise ValueError(
                f"--cutoff-coverage target {target} puts a band boundary at {boundary}, past the last word of the "
                f"{len(dictionary)}-entry dictionary: lower the target or drop it"
            )
        if cutoffs and boundary <= cutoffs[-1]:
            raise ValueError(
                f"--cutoff-coverage={','.join(map(str, coverage))}: target {target} gives the same band boundary "
                f"({boundary}, words rounded up to a multiple of {multiple}) as the target before it, so one band "
                f"would be empty: choose targets further apart, or fewer"
            )
        cutoffs.append(boundary)
    return cutoffs


@dataclass
class AdaptiveLanguageModelingConfig(LanguageModelingConfig):
    cutoff_coverage: str = field(
        default="0.9,0.98",
        metadata={
            "help": "for cutoffs given as 'auto': comma-separated fractions of training tokens covered by the "
            "head band, then by head + first tail band, ... (each boundary rounded up to a multiple of 8)"
        },
    )


@register_task("adaptive_language_modeling", dataclass=AdaptiveLanguageModelingConfig)
class AdaptiveLanguageModelingTask(ValidatesWithAverage, LanguageModelingTask):
    def __init__(self, args, dictionary, output_dictionary=None, targets=None):
        fairseq_fixes.apply()
        check_sizes(args, ("tokens_per_sample",))
        parse_coverage(args.cutoff_coverage)
        super().__init__(args, dictionary, output_dictionary, targets)
        guard_task(self)

    def build_model(self, args, from_checkpoint=False):
        model = super().build_model(args, from_checkpoint)
        keep_config_record(args, model)  # the derived cutoffs and the dictionary, saved with the checkpoint
        return model

    def auto_cutoffs(self, dictionary: Dictionary) -> List[int]:
        """Cutoffs for flags given as ``auto`` (or left unset with adaptive input), from ``--cutoff-coverage`` and the
        dictionary's counts: what a language model of this package asks its task for (``lm_base``), once per build."""
        check_frequency_sorted(dictionary)
        coverage = parse_coverage(self.args.cutoff_coverage)
        cutoffs = derive_cutoffs(dictionary, coverage)
        logger.info(f"cutoffs derived from coverage {coverage}: {cutoffs}")
        return cutoffs
