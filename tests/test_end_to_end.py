"""fairseq's real entry points with --user-dir on a small real corpus: train -> checkpoint -> resume -> eval-lm,
bf16 through our entry point, and conversion of a checkpoint trained with fairseq's own adaptive LM."""

import math
import subprocess
import sys

import pytest
import torch
from fairseq_cli import train

from fairseq_adaptive import train as adaptive_train

from .helpers import LM_TRAIN, ROOT, TINY_LM, evaluate_lm, json_log, run_cli


@pytest.mark.cli
def test_train_checkpoint_resume_eval(lm_data, tmp_path):
    ckpt = tmp_path / "ckpt"
    log1, log2 = tmp_path / "log1", tmp_path / "log2"
    common = [lm_data, *LM_TRAIN, *TINY_LM, "--save-dir", ckpt, "--log-format", "json", "--log-interval", "1"]
    run_cli(train.cli_main, [*common, "--max-update", "6", "--log-file", log1])
    first = torch.load(ckpt / "checkpoint_last.pt", weights_only=False)
    assert first["optimizer_history"][-1]["num_updates"] == 6
    run_cli(train.cli_main, [*common, "--max-update", "10", "--log-file", log2])
    second = torch.load(ckpt / "checkpoint_last.pt", weights_only=False)
    assert second["optimizer_history"][-1]["num_updates"] == 10
    updates = [int(r["num_updates"]) for r in json_log(log2) if "num_updates" in r and "loss_c0" in r]
    assert updates and min(updates) == 7, "the second run did not resume from update 6"
    assert all(math.isfinite(float(r["loss"])) for r in json_log(log2) if "loss" in r)

    result = evaluate_lm(lm_data, ckpt / "checkpoint_last.pt", "--context-window", "32")
    vocab = sum(1 for _ in open(lm_data / "dict.txt")) + 4
    assert math.isfinite(result["perplexity"]) and result["perplexity"] < vocab  # better than uniform
    no_context = evaluate_lm(lm_data, ckpt / "checkpoint_last.pt")
    assert no_context["perplexity"] != result["perplexity"]  # the window changes what is scored


@pytest.mark.cli
def test_bf16_through_our_entry_point(lm_data, tmp_path):
    ckpt = tmp_path / "ckpt"
    run_cli(adaptive_train.cli_main, [lm_data, *LM_TRAIN, *TINY_LM, "--save-dir", ckpt, "--max-update", "4", "--bf16"])
    state = torch.load(ckpt / "checkpoint_last.pt", weights_only=False)
    assert state["cfg"]["common"]["bf16"] and not state["cfg"]["common"]["tpu"]
    w = state["model"]["decoder.embed_tokens.embedding.embeddings.0.0.weight"]
    assert torch.equal(w, w.bfloat16().to(w.dtype))  # saved as fp32, but every value is a bf16 value
    assert math.isfinite(state["extra_state"]["best"])


@pytest.mark.cli
@pytest.mark.parametrize("tie", [True, False])
def test_fairseq_adaptive_checkpoint_converts_to_the_same_perplexity(lm_data, tmp_path, tie):
    """A model trained by fairseq's own transformer_lm with adaptive input/softmax (as transformer_lm_wiki103,
    at tiny size), converted by our script, evaluates to the same perplexity under adaptive_lm."""
    ckpt = tmp_path / "fairseq"
    cut = "200,800"
    fairseq_model = ["--task", "language_modeling", "--arch", "transformer_lm", "--decoder-layers", "2",
                     "--decoder-embed-dim", "32", "--decoder-input-dim", "32", "--decoder-output-dim", "32",
                     "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "2",
                     "--adaptive-input", "--adaptive-input-cutoff", cut, "--adaptive-softmax-cutoff", cut,
                     "--adaptive-input-factor", "2", "--adaptive-softmax-factor", "2",
                     "--criterion", "adaptive_loss", "--ddp-backend", "legacy_ddp"]
    if tie:
        fairseq_model += ["--tie-adaptive-weights", "--tie-adaptive-proj"]
    run_cli(train.cli_main, [lm_data, *LM_TRAIN, *fairseq_model, "--save-dir", ckpt, "--max-update", "5"])
    theirs = evaluate_lm(lm_data, ckpt / "checkpoint_last.pt", "--context-window", "16")

    converted = tmp_path / "ours.pt"
    script = ROOT / "scripts" / "convert_fairseq_checkpoint.py"
    before = (ckpt / "checkpoint_last.pt").read_bytes()
    done = subprocess.run([sys.executable, script, ckpt / "checkpoint_last.pt", converted], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (ckpt / "checkpoint_last.pt").read_bytes() == before  # the input is never modified
    assert torch.load(converted, weights_only=False)["cfg"]["model"]["_name"] == "adaptive_lm"
    ours = evaluate_lm(lm_data, converted, "--context-window", "16")
    assert float(ours["perplexity"]) == pytest.approx(float(theirs["perplexity"]), rel=1e-4)
    assert float(ours["loss"]) == pytest.approx(float(theirs["loss"]), rel=1e-4)


@pytest.mark.cli
def test_converter_refuses_bad_input(tmp_path):
    script = ROOT / "scripts" / "convert_fairseq_checkpoint.py"
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    done = subprocess.run([sys.executable, script, junk, tmp_path / "out.pt"], capture_output=True, text=True)
    assert done.returncode != 0 and "cannot read" in done.stderr
    assert not (tmp_path / "out.pt").exists()
    same = subprocess.run([sys.executable, script, junk, junk], capture_output=True, text=True)
    assert same.returncode != 0 and "never overwritten" in same.stderr


def test_argparse_era_checkpoints_load_with_weights_only(tmp_path):
    """fairseq's load_checkpoint_to_cpu calls torch.load with its default weights_only=True (torch >= 2.6); older
    checkpoints (e.g. fairseq's released adaptive LMs) hold an argparse.Namespace, which the plugin registers."""
    import argparse

    path = tmp_path / "old.pt"
    torch.save({"args": argparse.Namespace(arch="transformer_lm_wiki103"), "model": {}}, path)
    assert torch.load(path)["args"].arch == "transformer_lm_wiki103"


@pytest.mark.cli
@pytest.mark.parametrize("arch", ["adaptive_lm_define_tiny", "adaptive_lm_define_std_tiny"])
def test_define_trains_and_the_eval_cache_scores_the_same(lm_data, tmp_path, arch):
    ckpt = tmp_path / "ckpt"
    define = ["--task", "adaptive_language_modeling", "--arch", arch, "--criterion", "adaptive_cross_entropy"]
    run_cli(train.cli_main, [lm_data, *LM_TRAIN, *define, "--save-dir", ckpt, "--max-update", "8"])
    state = torch.load(ckpt / "checkpoint_last.pt", weights_only=False)
    assert any(k.startswith("decoder.embed_tokens.embedding.layers.1.") for k in state["model"])
    assert "decoder.scorer.project.weight" in state["model"]  # m -> n before the tied softmax
    plain = evaluate_lm(lm_data, ckpt / "checkpoint_last.pt")
    cached = evaluate_lm(lm_data, ckpt / "checkpoint_last.pt", "--model-overrides", "{'define_cache': True}")
    vocab = sum(1 for _ in open(lm_data / "dict.txt")) + 4
    assert math.isfinite(plain["perplexity"]) and plain["perplexity"] < vocab
    assert float(cached["perplexity"]) == pytest.approx(float(plain["perplexity"]), rel=1e-6)


@pytest.mark.cli
def test_define_in_bf16_through_our_entry_point(lm_data, tmp_path):
    ckpt = tmp_path / "ckpt"
    define = ["--task", "adaptive_language_modeling", "--arch", "adaptive_lm_define_tiny",
              "--criterion", "adaptive_cross_entropy"]
    run_cli(adaptive_train.cli_main, [lm_data, *LM_TRAIN, *define, "--save-dir", ckpt, "--max-update", "4", "--bf16"])
    state = torch.load(ckpt / "checkpoint_last.pt", weights_only=False)
    assert state["cfg"]["common"]["bf16"] and not state["cfg"]["common"]["tpu"]
    for name in ("decoder.embed_tokens.embedding.layers.1.weight", "decoder.embed_tokens.embedding.output_layer.weight"):
        w = state["model"][name]
        assert torch.equal(w, w.bfloat16().to(w.dtype)), name  # trained in bf16: every value a bf16 value
    assert math.isfinite(state["extra_state"]["best"])
