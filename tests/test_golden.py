"""Checkpoints written by an earlier version (tests/golden/, made by tests/golden/make_golden.py) load strictly through
fairseq's loader and score their fixed input as they did when they were written; their parameters come back in the
order the saved optimizer state assumes (fairseq matches that state to parameters by position)."""

import pytest
import torch

from .golden.golden import CASES, HERE, load, score
from .golden.init_digest import ARCHS, digest


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_checkpoint_scores_as_written(name):
    expected = torch.load(HERE / name / "expected.pt")
    got = score(HERE / name, CASES[name])
    assert torch.equal(got["target"], expected["target"])
    torch.testing.assert_close(got["target_log_probs"], expected["target_log_probs"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["log_probs"], expected["log_probs"], rtol=1e-5, atol=1e-5)
    assert got["log_probs"].exp().sum(-1).sub(1).abs().max() < 1e-4  # a whole distribution per position
    assert sorted(got) == sorted(expected)
    if "stream_target_log_probs" in expected:  # a stream model: the same targets in segments, its state carried
        torch.testing.assert_close(got["stream_target_log_probs"], expected["stream_target_log_probs"], rtol=1e-5,
                                   atol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_parameter_order_matches_the_saved_optimizer_state(name):
    model, _ = load(HERE / name)
    state = torch.load(HERE / name / "checkpoint.pt", weights_only=False)
    assert [list(p.shape) for p in model.parameters()] == state["order"]


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_a_seed_initialises_as_an_earlier_version_did(arch):
    """Same seed, same initial weights as the version that wrote init_seed0.pt (the order in which the layers are
    built draws from the seed's stream)."""
    expected = torch.load(HERE / "init_seed0.pt")[arch]
    assert digest(arch) == expected
