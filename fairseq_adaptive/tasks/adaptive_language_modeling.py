"""``adaptive_language_modeling``: fairseq's language-modeling task, plus the checks adaptive layers need.

Before a model is built it checks that the dictionary is sorted by frequency (the bands of adaptive input and
softmax are ranges of dictionary indices, so an unsorted dictionary puts frequent words in narrow bands), derives
cutoffs from coverage targets where the user wrote ``auto`` (or gave none with ``--adaptive-input``), and logs the
fraction of training tokens that falls in each band.
"""

import logging
from dataclasses import dataclass, field
from typing import List, Sequence

from fairseq.data import Dictionary
from fairseq.tasks import register_task
from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask

from .. import fairseq_fixes
from ..checks import check_dictionary, data_of, guard_task
from ..models.vocab_flags import LM, check_frequency_sorted, describe
from ..optim.nt_asgd import ValidatesWithAverage

logger = logging.getLogger(__name__)


def word_counts(dictionary: Dictionary) -> List[int]:
    """Counts of the regular entries (after the special symbols), in dictionary order."""
    return [int(c) for c in dictionary.count[dictionary.nspecial :]]


def band_fractions(dictionary: Dictionary, cutoff: Sequence[int]) -> List[float]:
    """Fraction of counted tokens in each band ``[0, c0), [c0, c1), ..., [c_last, V)``."""
    counts = [0] * dictionary.nspecial + word_counts(dictionary)
    total = max(sum(counts), 1)
    bounds = [0] + list(cutoff) + [len(dictionary)]
    return [sum(counts[a:b]) / total for a, b in zip(bounds, bounds[1:])]


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
        parse_coverage(args.cutoff_coverage)
        super().__init__(args, dictionary, output_dictionary, targets)
        guard_task(self)

    def build_model(self, args, from_checkpoint=False):
        dictionary = self.source_dictionary
        check_dictionary(args, dictionary, data_of(self))
        self.resolve_cutoffs(args, dictionary)
        return super().build_model(args, from_checkpoint)

    def resolve_cutoffs(self, args, dictionary: Dictionary) -> None:
        """Derive the cutoffs given as ``auto`` (or left unset with adaptive input) and write the numbers into the
        model config, so checkpoints store them; log the share of training tokens in each band."""
        derived: List[int] = []

        def auto() -> List[int]:
            if not derived:
                check_frequency_sorted(dictionary)
                coverage = parse_coverage(self.args.cutoff_coverage)
                derived.extend(derive_cutoffs(dictionary, coverage))
                logger.info(f"cutoffs derived from coverage {coverage}: {derived}")
            return derived

        layers = describe(args, dictionary, LM, auto_cutoffs=auto)
        for name in layers.derived:
            setattr(args, name, ",".join(map(str, derived)))
        for name, spec in (("adaptive_input_cutoff", layers.input), ("adaptive_softmax_cutoff", layers.output)):
            if spec.cutoff is not None:
                fractions = band_fractions(dictionary, spec.cutoff)
                logger.info(f"{name}={','.join(map(str, spec.cutoff))}: fraction of training tokens per band "
                            + " / ".join(f"{f:.4f}" for f in fractions))
