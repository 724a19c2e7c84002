"""Bad flags and cutoffs fail before anything is built or logged, with a one-line message naming the flag, the value
and the fix; and our adaptive-softmax loss is the true NLL where fairseq's adaptive_loss is not."""

import logging

import pytest
import torch
import torch.nn.functional as F

from fairseq_adaptive.modules.adaptive_softmax import AdaptiveSoftmax

from .helpers import LM_TRAIN, build_lm, build_translation, run_cli, train_args

CUT = ["--adaptive-input-cutoff", "40,120", "--adaptive-softmax-cutoff", "40,120"]


@pytest.mark.parametrize("factor", ["0", "-2", "0.5"])
def test_adaptive_factor_below_one_is_refused(factor):
    flags = [*CUT, "--adaptive-input-factor", factor, "--adaptive-softmax-factor", factor]
    with pytest.raises(ValueError, match=rf"^--adaptive-input-factor={float(factor)}: the factor must be at least 1"):
        build_lm("adaptive_lm_tiny", flags, vocab=300)


def test_untied_softmax_factor_is_checked_too():
    flags = ["--adaptive-softmax-cutoff", "40,120", "--adaptive-softmax-factor", "0"]
    with pytest.raises(ValueError, match=r"^--adaptive-softmax-factor=0.0: the factor must be at least 1"):
        build_lm("adaptive_lm_wiki103_asm", flags, vocab=300)


def test_factor_one_keeps_every_band_at_full_width():
    model = build_lm("adaptive_lm_tiny", [*CUT, "--adaptive-input-factor", "1", "--adaptive-softmax-factor", "1"],
                     vocab=300).model
    assert model.decoder.embed_tokens.embedding.dims == [32, 32, 32]


@pytest.mark.parametrize("cutoff", ["40,300", "40,301"])
def test_cutoff_reaching_the_dictionary_size_is_refused(cutoff):
    with pytest.raises(ValueError, match=rf"^--adaptive-input-cutoff={cutoff} reaches the dictionary size 300"):
        build_lm("adaptive_lm_tiny", ["--adaptive-input-cutoff", cutoff, "--adaptive-softmax-cutoff", cutoff],
                 vocab=300)


@pytest.mark.cli
def test_cutoffs_are_checked_before_the_task_logs_them(lm_data, caplog):
    from fairseq_cli import train

    cut = "40,1000000"
    with caplog.at_level(logging.INFO), pytest.raises(ValueError, match="reaches the dictionary size"):
        run_cli(train.cli_main, [lm_data, *LM_TRAIN, "--task", "adaptive_language_modeling", "--arch",
                                 "adaptive_lm_tiny", "--criterion", "adaptive_cross_entropy", "--adaptive-input-cutoff",
                                 cut, "--adaptive-softmax-cutoff", cut, "--save-dir", lm_data.parent / "never"])
    assert "fraction of training tokens" not in caplog.text
    never = lm_data.parent / "never"  # fairseq-train creates the save directory first; nothing is written into it
    assert not never.exists() or not any(never.iterdir())


def test_loss_at_cutoff_plus_padding_index_is_the_true_nll():
    """fairseq's adaptive_loss renumbers a tail cluster's targets from the cluster's start and then ignores the
    padding index among them, so the word at cutoff[i] + padding_idx loses its in-cluster term. Ours does not."""
    torch.manual_seed(0)
    pad = 1
    sm = AdaptiveSoftmax(100, 16, [10, 30, 60], factor=2).double()
    x = torch.randn(6, 16, dtype=torch.double)
    target = torch.tensor([10 + pad, 30 + pad, 60 + pad, 3, 45, pad])
    total = sm.loss(x, target, ignore_index=pad)[0]
    reference = F.nll_loss(sm.get_log_prob(x), target, ignore_index=pad, reduction="sum")
    torch.testing.assert_close(total, reference)
    per_row = F.nll_loss(sm.get_log_prob(x), target, ignore_index=pad, reduction="none")
    assert (per_row[:3] > 0).all()  # the three words at cutoff[i] + padding_idx are scored, not ignored


# Each flag case found by trying the plugin as a new user: the message names the flag, the value and the fix, and the
# model is refused before it is built (on the meta device: nothing allocated, nothing written).
DEFINE_TINY = ["--adaptive-input-cutoff", "40,120", "--adaptive-softmax-cutoff", "40,120"]
FLAG_CASES = [
    ("adaptive_lm_define_tiny", [*DEFINE_TINY, "--define-dim", "128", "--define-expand-dim", "64"],
     r"^--define-expand-dim=64 is narrower than --define-dim=128: DeFINE expands"),
    ("adaptive_lm_define_tiny", [*DEFINE_TINY, "--define-dim", "-5"], r"^--define-dim=-5 must be positive"),
    ("adaptive_lm_define_tiny", [*DEFINE_TINY, "--define-dropout", "1.5"],
     r"^--define-dropout=1.5 must lie in \[0, 1\)"),
    ("adaptive_lm_define_tiny", [*DEFINE_TINY, "--define-embed-dropout", "2"],
     r"^--define-embed-dropout=2.0 must lie in \[0, 1\)"),
    ("adaptive_lm_define_tiny", [*DEFINE_TINY, "--define-proj-dim", "-8"], r"^--define-proj-dim=-8 must be positive"),
    ("adaptive_lm_tiny", [*CUT, "--adaptive-softmax-dropout", "1"], r"^--adaptive-softmax-dropout=1.0 must lie in"),
]


@pytest.mark.parametrize("arch,flags,message", FLAG_CASES)
def test_flag_case_is_refused_with_its_fix(arch, flags, message):
    with pytest.raises(ValueError, match=message):
        build_lm(arch, flags, vocab=300)


@pytest.mark.parametrize("smoothing", ["1.0", "2.0", "-0.1"])
def test_label_smoothing_outside_zero_one_is_refused(mt_data, smoothing):
    from fairseq import tasks

    args = train_args(mt_data, "translation", "adaptive_transformer_tiny",
                      ["--criterion", "adaptive_label_smoothed_cross_entropy", "--label-smoothing", smoothing])
    with pytest.raises(ValueError, match=rf"^--label-smoothing={float(smoothing)} must lie in \[0, 1\)"):
        tasks.setup_task(args).build_criterion(args)


def unsorted_dictionary(size: int = 300):
    from fairseq.data import Dictionary

    d = Dictionary()
    for i in range(size - len(d)):
        d.add_symbol(f"w{i}", n=10 + i)  # counts increase: rare words first
    return d


@pytest.mark.parametrize("task,arch,flags", [
    ("language_modeling", "adaptive_lm_tiny", CUT),  # fairseq's own task: the check is the model's, not our task's
    ("translation", "adaptive_transformer_tiny", ["--adaptive-input", "--adaptive-input-cutoff", "40,120"]),
    ("translation", "adaptive_transformer_tiny", ["--adaptive-softmax-cutoff", "40,120"]),
])
def test_unsorted_dictionary_is_refused_with_any_task(task, arch, flags):
    build = {"language_modeling": build_lm, "translation": build_translation}[task]
    with pytest.raises(ValueError, match=r"^the dictionary \((dict|dict\.tgt)\.txt\) is not sorted by frequency: "
                                         r"entry 5 .w1. .* or sort (dict|dict\.tgt)\.txt by count"):
        build(arch, flags, vocab=unsorted_dictionary())


@pytest.mark.parametrize("coverage,cutoffs,message", [
    ("0.001,0.002,0.003", None, r"^--cutoff-coverage=0.001,0.002,0.003: target 0.002 gives the same band boundary "
                                r"\(8, .*choose targets further apart"),
    ("5", "40,120", r"^--cutoff-coverage=5 must be increasing fractions in \(0, 1\)"),
])
def test_cutoff_coverage_is_checked(lm_data, coverage, cutoffs, message):
    explicit = ["--adaptive-input-cutoff", cutoffs, "--adaptive-softmax-cutoff", cutoffs] if cutoffs else []
    with pytest.raises(ValueError, match=message):
        build_lm("adaptive_lm_tiny", ["--cutoff-coverage", coverage, *explicit], data=lm_data)


def test_translation_checkpoint_meets_its_dictionaries(mt_data):
    """Translation records both dictionary sizes and names the file that differs (it checked none before)."""
    from fairseq import tasks

    args = train_args(mt_data, "translation", "adaptive_transformer_tiny")
    task = tasks.setup_task(args)
    with torch.device("meta"):
        task.build_model(args)
    assert args.source_dictionary_size == len(task.source_dictionary)
    args.target_dictionary_size += 8  # as a checkpoint trained with another target dictionary
    with pytest.raises(ValueError, match=rf"has {len(task.target_dictionary):,} entries, but the checkpoint was "
                                         rf"trained with a {args.target_dictionary_size:,}-entry dictionary "
                                         rf"\(.*dict.de.txt\): .*own dictionary \(fairseq-preprocess --tgtdict"):
        task.build_model(args)


def test_our_criterion_with_a_model_without_a_scorer_names_the_fix():
    from types import SimpleNamespace

    from fairseq_adaptive.criterions.adaptive_cross_entropy import AdaptiveCrossEntropyCriterion

    from fairseq.data import Dictionary

    class TransformerLanguageModel(torch.nn.Module):  # as fairseq's: a decoder with an output projection, no scorer
        def __init__(self):
            super().__init__()
            self.decoder = torch.nn.Module()
            self.decoder.output_projection = torch.nn.Linear(4, 10)

    criterion = AdaptiveCrossEntropyCriterion(SimpleNamespace(target_dictionary=Dictionary()), False)
    model = TransformerLanguageModel()
    with pytest.raises(ValueError, match=r"^--criterion adaptive_cross_entropy scores through the output layer of "
                                         r"this package's models .* TransformerLanguageModel has none"):
        criterion(model, {"net_input": {"src_tokens": torch.ones(1, 3, dtype=torch.long)}})
