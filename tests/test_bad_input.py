"""Bad flags and cutoffs fail before anything is built or logged, with a one-line message naming the flag, the value
and the fix; and our adaptive-softmax loss is the true NLL where fairseq's adaptive_loss is not."""

import logging

import pytest
import torch
import torch.nn.functional as F

from fairseq_adaptive.models.counting import build_on_meta
from fairseq_adaptive.modules.adaptive_softmax import AdaptiveSoftmax

CUT = ["--adaptive-input-cutoff", "40,120", "--adaptive-softmax-cutoff", "40,120"]


@pytest.mark.parametrize("factor", ["0", "-2", "0.5"])
def test_adaptive_factor_below_one_is_refused(factor):
    flags = [*CUT, "--adaptive-input-factor", factor, "--adaptive-softmax-factor", factor]
    with pytest.raises(ValueError, match=rf"^--adaptive-input-factor={float(factor)}: the factor must be at least 1"):
        build_on_meta("adaptive_lm_tiny", 300, flags)


def test_untied_softmax_factor_is_checked_too():
    flags = ["--adaptive-softmax-cutoff", "40,120", "--adaptive-softmax-factor", "0"]
    with pytest.raises(ValueError, match=r"^--adaptive-softmax-factor=0.0: the factor must be at least 1"):
        build_on_meta("adaptive_lm_wiki103_asm", 300, flags)


def test_factor_one_keeps_every_band_at_full_width():
    model = build_on_meta("adaptive_lm_tiny", 300, [*CUT, "--adaptive-input-factor", "1", "--adaptive-softmax-factor", "1"])
    assert model.decoder.embed_tokens.embedding.dims == [32, 32, 32]


@pytest.mark.parametrize("cutoff", ["40,300", "40,301"])
def test_cutoff_reaching_the_dictionary_size_is_refused(cutoff):
    with pytest.raises(ValueError, match=rf"^--adaptive-input-cutoff={cutoff} reaches the dictionary size 300"):
        build_on_meta("adaptive_lm_tiny", 300, ["--adaptive-input-cutoff", cutoff, "--adaptive-softmax-cutoff", cutoff])


def test_cutoffs_are_checked_before_the_task_logs_them(lm_data, caplog):
    from fairseq_cli import train

    from .conftest import run_cli
    from .test_end_to_end import TRAIN

    cut = "40,1000000"
    with caplog.at_level(logging.INFO), pytest.raises(ValueError, match="reaches the dictionary size"):
        run_cli(train.cli_main, [lm_data, *TRAIN, "--task", "adaptive_language_modeling", "--arch", "adaptive_lm_tiny",
                                 "--criterion", "adaptive_cross_entropy", "--adaptive-input-cutoff", cut,
                                 "--adaptive-softmax-cutoff", cut, "--save-dir", lm_data.parent / "never"])
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
