"""Multi-process training through fairseq's own entry point (`python -m fairseq_cli.train`, what fairseq-train
runs) on CPU: 2 gloo processes, one update each on its shard, give the same weights as one process that
accumulates the same two batches with --update-freq 2. (On CPU fairseq's launcher can only run the
`legacy_ddp` backend: its PyTorch-DDP wrapper passes CUDA device ids; tests/test_ddp.py covers PyTorch DDP.)"""

import subprocess
import sys

import pytest
import torch

from .helpers import USER_DIR, finish, free_port, last_weights

pytestmark = pytest.mark.cli

COMMON = ["--user-dir", USER_DIR, "--task", "adaptive_language_modeling", "--arch", "adaptive_lm_tiny",
          "--criterion", "adaptive_cross_entropy", "--optimizer", "sgd", "--lr", "0.5", "--max-tokens", "512",
          "--tokens-per-sample", "64", "--max-update", "1", "--cpu", "--seed", "1", "--num-workers", "0",
          "--no-progress-bar", "--disable-validation", "--no-epoch-checkpoints"]


def train(data, save_dir, *extra):
    cmd = [sys.executable, "-m", "fairseq_cli.train", str(data), *COMMON, "--save-dir", str(save_dir), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_gloo_processes_equal_one_process_with_update_freq_2(lm_data, tmp_path):
    init = f"tcp://127.0.0.1:{free_port()}"
    ranks = [
        train(lm_data, tmp_path / f"rank{r}", "--distributed-world-size", "2", "--distributed-rank", str(r),
              "--distributed-no-spawn", "--distributed-init-method", init, "--distributed-backend", "gloo",
              "--ddp-backend", "legacy_ddp")
        for r in range(2)
    ]
    logs = [finish(p) for p in ranks]
    assert all(f"distributed init (rank {r})" in log for r, log in enumerate(logs))
    finish(train(lm_data, tmp_path / "accumulated", "--update-freq", "2"))
    finish(train(lm_data, tmp_path / "one_batch"))

    multi, accumulated, one_batch = (last_weights(tmp_path / d) for d in ("rank0", "accumulated", "one_batch"))
    for name, w in multi.items():
        torch.testing.assert_close(w, accumulated[name], atol=1e-6, rtol=1e-5, msg=name)
    # the comparison can fail: one batch alone moves the weights elsewhere
    assert max((multi[k] - one_batch[k]).abs().max().item() for k in multi) > 1e-3
