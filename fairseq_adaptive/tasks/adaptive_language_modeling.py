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
from fairseq.utils import safe_getattr

from .. import fairseq_fixes
from ..models.config import AUTO, check_dictionary_size, data_of, parse_cutoff
from ..modules.adaptive_input import check_cutoff

logger = logging.getLogger(__name__)


def word_counts(dictionary: Dictionary) -> List[int]:
    """Counts of the regular entries (after the special symbols), in dictionary order."""
    return [int(c) for c in dictionary.count[dictionary.nspecial :]]


def check_frequency_sorted(dictionary: Dictionary, path: str = "dict.txt") -> None:
    counts = word_counts(dictionary)
    for i in range(1, len(counts)):
        if counts[i] > counts[i - 1]:
            k = dictionary.nspecial + i
            raise ValueError(
                f"the dictionary ({path}) is not sorted by frequency: entry {k} '{dictionary[k]}' has count "
                f"{counts[i]} > {counts[i - 1]} of entry {k - 1} '{dictionary[k - 1]}'. Adaptive bands are index "
                f"ranges, so rebuild it with fairseq-preprocess (without --srcdict), or sort dict.txt by count"
            )


def band_fractions(dictionary: Dictionary, cutoff: Sequence[int]) -> List[float]:
    """Fraction of counted tokens in each band ``[0, c0), [c0, c1), ..., [c_last, V)``."""
    counts = [0] * dictionary.nspecial + word_counts(dictionary)
    total = max(sum(counts), 1)
    bounds = [0] + list(cutoff) + [len(dictionary)]
    return [sum(counts[a:b]) / total for a, b in zip(bounds, bounds[1:])]


def parse_coverage(value) -> List[float]:
    try:
        return [float(c) for c in str(value).split(",")]
    except ValueError:
        raise ValueError(f"--cutoff-coverage={value!r} is not a comma-separated list of fractions, e.g. 0.9,0.98") from None


def derive_cutoffs(dictionary: Dictionary, coverage: Sequence[float], multiple: int = 8) -> List[int]:
    """Band boundaries from coverage targets: boundary ``j`` is the smallest dictionary index whose head covers
    ``coverage[j]`` of the training tokens, rounded up to a multiple of ``multiple`` (tensor-core friendly
    shapes); boundaries that collide or reach the dictionary size are dropped."""
    if not coverage or any(not 0.0 < c < 1.0 for c in coverage) or list(coverage) != sorted(set(coverage)):
        raise ValueError(f"--cutoff-coverage={coverage} must be increasing fractions in (0, 1), e.g. 0.9,0.98")
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
        if boundary < len(dictionary) and (not cutoffs or boundary > cutoffs[-1]):
            cutoffs.append(boundary)
    if not cutoffs:
        raise ValueError(
            f"--cutoff-coverage={','.join(map(str, coverage))} leaves no band boundary below the dictionary size "
            f"{len(dictionary)}: lower the coverage targets or give explicit cutoffs"
        )
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
class AdaptiveLanguageModelingTask(LanguageModelingTask):
    def __init__(self, args, dictionary, output_dictionary=None, targets=None):
        fairseq_fixes.apply()
        super().__init__(args, dictionary, output_dictionary, targets)

    def build_model(self, args, from_checkpoint=False):
        dictionary = self.source_dictionary
        check_dictionary_size(args, dictionary, data_of(self))
        self.resolve_cutoffs(args, dictionary)
        return super().build_model(args, from_checkpoint)

    def resolve_cutoffs(self, args, dictionary: Dictionary) -> None:
        """Replace ``auto`` cutoffs in the model config (in place, so checkpoints store the numbers)."""
        names = [n for n in ("adaptive_input_cutoff", "adaptive_softmax_cutoff") if safe_getattr(args, n) is not None]
        if safe_getattr(args, "adaptive_input", False) and safe_getattr(args, "adaptive_input_cutoff") is None:
            names.append("adaptive_input_cutoff")
            args.adaptive_input_cutoff = AUTO
        if not names:
            return
        check_frequency_sorted(dictionary)
        derived = None
        for name in names:
            if str(getattr(args, name)).strip() == AUTO:
                if derived is None:
                    coverage = parse_coverage(self.args.cutoff_coverage)
                    derived = derive_cutoffs(dictionary, coverage)
                    logger.info(f"cutoffs derived from coverage {coverage}: {derived}")
                setattr(args, name, ",".join(map(str, derived)))
        for name in names:
            flag = "--" + name.replace("_", "-")
            cutoff = check_cutoff(parse_cutoff(getattr(args, name), flag), len(dictionary), flag)[:-1]
            fractions = band_fractions(dictionary, cutoff)
            logger.info(
                f"{name}={','.join(map(str, cutoff))}: fraction of training tokens per band "
                + " / ".join(f"{f:.4f}" for f in fractions)
            )

