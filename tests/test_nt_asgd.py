"""NT-ASGD (optim/nt_asgd.py): the steps against torch's SGD and ASGD (which AWD-LSTM runs), the non-monotone
trigger against AWD-LSTM's rule, the swap of the average in for validation, and a fairseq-train run that saves the
averaged model and resumes the average."""

from types import SimpleNamespace

import pytest
import torch
from fairseq_cli import train

from fairseq_adaptive.optim.nt_asgd import NTASGD, AveragedSGD, ValidatesWithAverage

from .helpers import USER_DIR, run_cli


def params(seed=0):
    torch.manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(4))]


def run(optimizer, ps, steps, seed=1):
    torch.manual_seed(seed)
    for _ in range(steps):
        for p in ps:
            p.grad = torch.randn_like(p)
        optimizer.step()


def test_sgd_then_torch_asgd_from_the_switch():
    ours, sgd_ref, asgd_ref = params(), params(), params()
    opt = AveragedSGD(ours, lr=0.3, weight_decay=0.01)
    run(opt, ours, 4)
    run(torch.optim.SGD(sgd_ref, lr=0.3, weight_decay=0.01), sgd_ref, 4)
    for a, b in zip(ours, sgd_ref):
        torch.testing.assert_close(a, b)
    # AWD-LSTM switches by building torch's ASGD with t0=0, lambd=0 over the same weights
    opt.start_averaging()
    for a, b in zip(asgd_ref, ours):
        a.data.copy_(b)
    asgd = torch.optim.ASGD(asgd_ref, lr=0.3, t0=0, lambd=0.0, weight_decay=0.01)
    run(opt, ours, 6, seed=2)
    run(asgd, asgd_ref, 6, seed=2)
    for a, b in zip(ours, asgd_ref):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(opt.state[a]["ax"], asgd.state[b]["ax"])


def test_average_is_the_mean_of_the_iterates_and_swaps_in_and_out():
    ps = params()
    opt = AveragedSGD(ps, lr=0.1)
    opt.start_averaging()
    iterates = []
    for seed in range(4):
        run(opt, ps, 1, seed=seed)
        iterates.append([p.detach().clone() for p in ps])
    raw = [p.detach().clone() for p in ps]
    opt.use_average()
    for i, p in enumerate(ps):  # torch's ASGD (t0=0) averages from the second step after the switch
        torch.testing.assert_close(p.detach(), sum(it[i] for it in iterates[1:]) / 3)
    opt.use_average()  # a second call (every validation batch makes one) changes nothing
    with pytest.raises(RuntimeError, match="use_raw"):
        opt.step()
    opt.use_raw()
    for p, r in zip(ps, raw):
        assert torch.equal(p.detach(), r)


def test_nothing_is_swapped_before_the_switch():
    ps = params()
    opt = AveragedSGD(ps, lr=0.1)
    run(opt, ps, 2)
    before = [p.detach().clone() for p in ps]
    opt.use_average()
    assert all(torch.equal(p.detach(), b) for p, b in zip(ps, before)) and not opt.param_groups[0]["swapped"]


def nt_asgd(nonmono=5, average_from_epoch=0, **cfg):
    base = dict(weight_decay=0.0, lr=[1.0], fp16=False, bf16=False, amp=False, zero_sharding="none",
                disable_validation=False, nonmono=nonmono, average_from_epoch=average_from_epoch)
    return NTASGD(SimpleNamespace(**{**base, **cfg}), params())


def awd_lstm_switch_epoch(losses, nonmono):
    """AWD-LSTM's main.py: switch when len(best) > nonmono and val > min(best[:-nonmono]); then append."""
    best = []
    for epoch, val in enumerate(losses, 1):
        if len(best) > nonmono and val > min(best[:-nonmono]):
            return epoch
        best.append(val)
    return None


@pytest.mark.parametrize("losses,nonmono", [([5, 4, 3, 3.5, 3.2, 3.1, 3.0], 2), ([5, 4, 3, 2, 1, 0.5], 1),
                                            ([5, 6, 7, 8], 1), ([5, 4.9, 5.1, 4.8, 4.95, 5.0, 4.7, 4.99], 3)])
def test_switch_follows_awd_lstms_rule_and_is_saved_with_the_optimizer(losses, nonmono):
    optimizer = nt_asgd(nonmono)
    switched = None
    for epoch, val in enumerate(losses, 1):
        optimizer.observe_validation(val)
        if optimizer.averaging and switched is None:
            switched = epoch
    assert switched == awd_lstm_switch_epoch(losses, nonmono)
    # the losses and the switch are optimizer state: a checkpoint written after the last validation holds them
    restored = nt_asgd(nonmono)
    restored.load_state_dict(optimizer.state_dict())
    assert restored.history == [float(v) for v in losses] and restored.averaging == (switched is not None)


def test_average_from_epoch_and_bad_settings():
    optimizer = nt_asgd(average_from_epoch=3)
    optimizer.begin_epoch(2)
    assert not optimizer.averaging
    optimizer.begin_epoch(3)
    assert optimizer.averaging
    for flag in ("fp16", "bf16", "amp"):
        with pytest.raises(ValueError, match="drop --fp16 / --bf16 / --amp"):
            nt_asgd(**{flag: True})
    with pytest.raises(ValueError, match="drop --zero-sharding"):
        nt_asgd(zero_sharding="os")
    with pytest.raises(ValueError, match="drop --disable-validation"):
        nt_asgd(disable_validation=True)
    with pytest.raises(ValueError, match="--nonmono=0 must be at least 1"):
        nt_asgd(nonmono=0)


TRAIN = ["--user-dir", USER_DIR, "--task", "bptt_lm", "--arch", "lstm_tiny", "--criterion", "adaptive_cross_entropy",
         "--optimizer", "nt_asgd", "--lr", "1", "--weight-decay", "1e-6",
         "--clip-norm", "0.25", "--batch-size", "16", "--tokens-per-sample", "32", "--train-subset", "valid",
         "--valid-subset", "test", "--cpu", "--seed", "1", "--num-workers", "0", "--no-progress-bar",
         "--no-epoch-checkpoints", "--log-format", "simple"]


def saved(path):
    """The checkpoint, its optimizer's group and per-parameter state, and the model's parameters in the optimizer's
    order (model.parameters(): tied weights once)."""
    from fairseq import checkpoint_utils

    state = torch.load(path, map_location="cpu", weights_only=False)
    opt = state["last_optimizer_state"]
    models, _ = checkpoint_utils.load_model_ensemble([str(path)])
    return state, opt["param_groups"][0], opt["state"], [p.detach() for p in models[0].parameters()]


@pytest.mark.cli
def test_fairseq_train_saves_the_average_and_resumes_it(lm_data, tmp_path):
    ckpt = tmp_path / "ckpt"
    run_cli(train.cli_main, [lm_data, *TRAIN, "--average-from-epoch", "2", "--max-epoch", "3", "--save-dir", ckpt])
    state, group, per_param, weights = saved(ckpt / "checkpoint_last.pt")
    updates = state["optimizer_history"][-1]["num_updates"]
    assert updates % 3 == 0 and group["averaging"] and group["averaged_steps"] == 2 * updates // 3
    assert group["swapped"]  # saved right after validation: the model holds the average, the raw weights are kept
    assert len(per_param) == len(weights)
    for i, w in enumerate(weights):
        assert torch.equal(w, per_param[i]["ax"])
    assert any(not torch.equal(w, per_param[i]["raw"]) for i, w in enumerate(weights))

    # resume: the same average runs on (its count continues) and the next checkpoint holds it again
    run_cli(train.cli_main, [lm_data, *TRAIN, "--average-from-epoch", "2", "--max-epoch", "4", "--save-dir", ckpt])
    state, group, per_param, weights = saved(ckpt / "checkpoint_last.pt")
    assert group["averaged_steps"] == 3 * updates // 3
    for i, w in enumerate(weights):
        assert torch.equal(w, per_param[i]["ax"])


class Recorder:
    """A task's own hooks, recording the weights its steps see."""

    def begin_epoch(self, epoch, model):
        pass

    def begin_valid_epoch(self, epoch, model):
        pass

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        return [p.detach().clone() for p in model]

    def valid_step(self, sample, model, criterion):
        return [p.detach().clone() for p in model]


class Task(ValidatesWithAverage, Recorder):
    pass


def test_task_switches_before_the_save_validates_with_the_average_and_resumes_from_the_raw_weights():
    optimizer = nt_asgd(nonmono=1)
    ps = optimizer.params
    task = Task()
    assert not hasattr(task, "get_checkpoint_dict")  # before NT-ASGD shows up, fairseq sees no such hook
    task.begin_epoch(1, ps)
    saved_switch = []
    for loss in (5.0, 4.0, 4.5, 6.0, 3.0):  # one epoch each: a step, then validation on two subsets
        task.train_step(None, ps, None, optimizer, 0)
        run(optimizer.optimizer, ps, 3)
        task.begin_valid_epoch(1, ps)
        task.valid_step(None, ps, None)
        task.post_validate(ps, {"loss": loss}, None)
        task.post_validate(ps, {"loss": 100.0}, None)  # a second validation subset does not count
        task.get_checkpoint_dict()
        saved_switch.append(optimizer.state_dict()["param_groups"][0]["averaging"])  # what this checkpoint holds
    # 6.0 > min(5.0, 4.0): switched at the fourth validation, before its checkpoint was written
    assert saved_switch == [False, False, False, True, True]
    assert optimizer.history == [5.0, 4.0, 4.5, 6.0, 3.0]
    ax = [optimizer.optimizer.state[p]["ax"].clone() for p in ps]
    assert all(torch.equal(p.detach(), a) for p, a in zip(ps, ax))  # what the checkpoint's model holds
    raw = [optimizer.optimizer.state[p]["raw"].clone() for p in ps]
    assert not any(torch.equal(r, a) for r, a in zip(raw, ax))
    model_state = [p.detach().clone() for p in ps]
    optimizer_state = optimizer.state_dict()
    # a new process loads both, then trains: its first step sees the raw weights
    resumed = nt_asgd(nonmono=1)
    fresh = resumed.params
    for p, w in zip(fresh, model_state):
        p.data.copy_(w)
    resumed.load_state_dict(optimizer_state)
    seen = Task().train_step(None, fresh, None, resumed, 4)
    assert all(torch.equal(s, r) for s, r in zip(seen, raw))
    assert resumed.averaging and resumed.history == [5.0, 4.0, 4.5, 6.0, 3.0]


@pytest.mark.cli
def test_nt_asgd_needs_a_task_that_swaps_the_average(lm_data, tmp_path):
    argv = [lm_data, *TRAIN, "--max-update", "1", "--save-dir", tmp_path / "ckpt"]
    argv[argv.index("bptt_lm")] = "language_modeling"
    with pytest.raises(ValueError, match="--task bptt_lm or --task adaptive_language_modeling"):
        run_cli(train.cli_main, argv)
    assert not list((tmp_path / "ckpt").glob("*.pt"))
