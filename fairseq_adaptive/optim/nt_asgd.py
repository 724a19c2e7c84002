"""NT-ASGD (Merity et al. 2018, https://arxiv.org/abs/1708.02182, Sec. 3): SGD until the validation loss is above
its best of more than ``nonmono`` validations ago, then averaged SGD: the same SGD steps, plus the running mean of the
weights since the switch, with which the model is validated and saved.

Two pieces, each where fairseq looks for it:

- ``--optimizer nt_asgd``: plain SGD (``--lr``, constant under fairseq's default ``--lr-scheduler fixed``;
  ``--weight-decay``; AWD-LSTM: 30 and 1.2e-6, with ``--clip-norm 0.25``) that keeps the average once switched on.
  The switch (``--nonmono``, AWD-LSTM's 5; or ``--average-from-epoch N``), the validation losses it reads, the
  average and the raw weights all live in the optimizer's state, so a checkpoint resumes them;
- the tasks ``bptt_lm`` and ``adaptive_language_modeling`` (:class:`ValidatesWithAverage`): they hand the optimizer
  each validation loss of the first validation subset before the checkpoint of that validation is written; once
  averaging, the model's weights are the average while it is validated and saved (so fairseq-eval-lm scores the
  averaged model, as AWD-LSTM saves its averaged model) and the raw weights again before each training step (a
  resumed run continues from them; with ``--reset-optimizer`` it continues from the average).

Why no schedule: fairseq steps the schedule at the end of an epoch only after the epoch's checkpoint is written, so a
switch decided there would be missing from that checkpoint, and a resumed run would not switch as the uninterrupted
one does. Choices where AWD-LSTM's code is not a fairseq habit: the rule reads every validation of the first subset
(fairseq validates once per epoch by default, as AWD-LSTM does; with ``--validate-interval-updates`` each counts);
mixed precision and sharded optimizer states are refused (the average and the swap work on the model's own fp32
weights).
"""

import logging
from dataclasses import dataclass, field
from typing import List

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from omegaconf import II

logger = logging.getLogger(__name__)
TASKS_HINT = "use --task bptt_lm or --task adaptive_language_modeling"


class AveragedSGD(torch.optim.Optimizer):
    """SGD (``p -= lr * (grad + weight_decay * p)``) that, once :meth:`start_averaging` is called, keeps ``ax``, the
    mean of the weights after each step since then, as torch's ASGD computes it for AWD-LSTM (a new ASGD at the switch,
    ``t0=0``, ``lambd=0``): its weight lags one step, so the mean runs over the iterates from the second step after the
    switch on. :meth:`use_average` / :meth:`use_raw` swap the average into the parameters and back."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"--lr={lr} must be positive")
        if weight_decay < 0:
            raise ValueError(f"--weight-decay={weight_decay} must be at least 0")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, averaging=False, averaged_steps=0,
                                      swapped=False, val_history=[]))

    @property
    def averaging(self) -> bool:
        return bool(self.param_groups[0]["averaging"])

    def start_averaging(self) -> None:
        for group in self.param_groups:
            group["averaging"], group["averaged_steps"] = True, 0

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            if group["swapped"]:
                raise RuntimeError("an optimizer step on the averaged weights: call use_raw() first")
            if group["averaging"]:
                group["averaged_steps"] += 1
            for p in group["params"]:
                if p.grad is not None:
                    grad = p.grad if group["weight_decay"] == 0 else p.grad.add(p, alpha=group["weight_decay"])
                    p.add_(grad, alpha=-group["lr"])
                if group["averaging"]:  # every weight's mean over the same steps, whether it moved or not
                    state = self.state[p]
                    # torch's weight: 1 / max(1, k - 1) at the k-th step, so the first iterate is overwritten
                    weight = 1.0 / max(1, group["averaged_steps"] - 1)
                    if weight == 1.0:
                        state["ax"] = p.detach().clone()
                    else:
                        state["ax"].lerp_(p, weight)
        return loss

    @torch.no_grad()
    def use_average(self) -> None:
        """Put the average into the parameters (the raw weights kept aside); nothing before the switch."""
        for group in self.param_groups:
            if not group["averaging"] or group["swapped"]:
                continue
            for p in group["params"]:
                state = self.state[p]
                if "ax" in state:
                    state["raw"] = p.detach().clone()
                    p.copy_(state["ax"])
            group["swapped"] = True

    @torch.no_grad()
    def use_raw(self) -> None:
        """Put the raw weights back after :meth:`use_average`."""
        for group in self.param_groups:
            if not group["swapped"]:
                continue
            for p in group["params"]:
                raw = self.state[p].pop("raw", None)
                if raw is not None:
                    p.copy_(raw)
            group["swapped"] = False


@dataclass
class NTASGDConfig(FairseqDataclass):
    weight_decay: float = field(default=0.0, metadata={"help": "L2 penalty added to the gradient (AWD-LSTM: 1.2e-6)"})
    nonmono: int = field(
        default=5,
        metadata={"help": "switch to averaging when a validation loss is above the best of those before the last "
                          "nonmono validations (AWD-LSTM's --nonmono)"},
    )
    average_from_epoch: int = field(
        default=0,
        metadata={"help": "also switch at the start of this epoch whatever the validation loss (1: from the first "
                          "step, as AWD-LSTM's fine-tuning runs ASGD); 0: the validation rule alone"},
    )
    lr: List[float] = II("optimization.lr")
    fp16: bool = II("common.fp16")
    bf16: bool = II("common.bf16")
    amp: bool = II("common.amp")
    zero_sharding: str = II("distributed_training.zero_sharding")
    disable_validation: bool = II("dataset.disable_validation")


@register_optimizer("nt_asgd", dataclass=NTASGDConfig)
class NTASGD(FairseqOptimizer):
    """fairseq's face of :class:`AveragedSGD` and the switch; see the module docstring."""

    def __init__(self, cfg: NTASGDConfig, params):
        super().__init__(cfg)
        if cfg.fp16 or cfg.bf16 or cfg.amp:
            raise ValueError("--optimizer nt_asgd averages the model's own fp32 weights and validates with them: drop "
                             "--fp16 / --bf16 / --amp")
        if cfg.zero_sharding not in (None, "none"):
            raise ValueError("--optimizer nt_asgd keeps the average beside every weight: drop --zero-sharding")
        if cfg.nonmono < 1:
            raise ValueError(f"--nonmono={cfg.nonmono} must be at least 1")
        if cfg.disable_validation and cfg.average_from_epoch < 1:
            raise ValueError("--optimizer nt_asgd switches on the validation loss: drop --disable-validation (or give "
                             "--average-from-epoch)")
        self._optimizer = AveragedSGD(params, cfg.lr[0], cfg.weight_decay)
        self.attached = False  # set by the task that swaps the average in for validation and saving

    @property
    def optimizer_config(self):
        return {"lr": self.cfg.lr[0], "weight_decay": self.cfg.weight_decay}

    def step(self, closure=None, scale=1.0, groups=None):
        if not self.attached:
            raise ValueError(f"--optimizer nt_asgd needs a task that validates and saves with its averaged weights: "
                             f"{TASKS_HINT}")
        super().step(closure, scale, groups)

    @property
    def averaging(self) -> bool:
        return self._optimizer.averaging

    @property
    def history(self) -> List[float]:
        return self._optimizer.param_groups[0]["val_history"]

    def start_averaging(self, why: str) -> None:
        if not self.averaging:
            logger.info(f"NT-ASGD: {why}: averaging the weights from now on")
            self._optimizer.start_averaging()

    def begin_epoch(self, epoch: int) -> None:
        if 0 < self.cfg.average_from_epoch <= epoch:
            self.start_averaging(f"epoch {epoch} (--average-from-epoch {self.cfg.average_from_epoch})")

    def observe_validation(self, loss: float) -> None:
        """AWD-LSTM's rule: switch when ``loss`` is above the best of the losses before the last ``nonmono``."""
        n, history = self.cfg.nonmono, self.history
        if not self.averaging and len(history) > n and loss > min(history[:-n]):
            self.start_averaging(f"validation loss {loss:.3f} is above {min(history[:-n]):.3f}, the best before the "
                                 f"last {n} validations")
        history.append(float(loss))

    def use_average(self) -> None:
        self._optimizer.use_average()

    def use_raw(self) -> None:
        self._optimizer.use_raw()


class ValidatesWithAverage:
    """Task mixin for ``--optimizer nt_asgd``: train on the raw weights, hand the optimizer the validation losses,
    validate and save with the average."""

    _averaging_optimizer = None
    _epoch = 1
    _subsets_seen = 0

    def begin_epoch(self, epoch, model):
        self._epoch = epoch
        super().begin_epoch(epoch, model)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if isinstance(optimizer, NTASGD):
            optimizer.attached = True
            optimizer.use_raw()
            optimizer.begin_epoch(self._epoch)
            self._averaging_optimizer = optimizer
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def begin_valid_epoch(self, epoch, model):
        self._subsets_seen = 0
        super().begin_valid_epoch(epoch, model)

    def valid_step(self, sample, model, criterion):
        if self._averaging_optimizer is not None:
            self._averaging_optimizer.use_average()
        return super().valid_step(sample, model, criterion)

    def post_validate(self, model, stats, agg):
        """fairseq calls this per validation subset, before the checkpoint of that validation is written."""
        if self._averaging_optimizer is not None and self._subsets_seen == 0 and "loss" in stats:
            self._averaging_optimizer.observe_validation(float(stats["loss"]))
        self._subsets_seen += 1
        parent = getattr(super(), "post_validate", None)
        if parent is not None:
            parent(model, stats, agg)

    @property
    def get_checkpoint_dict(self):
        """fairseq calls this (when the task has it) before it writes a checkpoint: the model then holds the average,
        also when the save follows no validation. Without NT-ASGD the task has no such method (no log line)."""
        if self._averaging_optimizer is None:
            raise AttributeError("get_checkpoint_dict")

        def average_in():
            self._averaging_optimizer.use_average()
            return {}

        return average_in
