"""benchmarks/gpu_all.sh at tiny sizes on CPU (``TINY=1 DEVICE=cpu``): every part runs with the flags the GPU run
gives it (only the sizes differ, and fp32 where fairseq's fp16 needs CUDA), so the one device call cannot fail on an
argument; each part leaves its table in tables.md, its JSON in results.json and "ok" in the summary. Two calls run
side by side (the two parts that share the synthetic corpus in one of them): the file takes about a minute on 2
cores. The paper-sized models of the end-to-end part are built on the meta device, so their flags are checked at
the sizes the GPU run uses."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from fairseq_adaptive.models.counting import build_on_meta, count_parameters

from .helpers import ROOT

pytestmark = pytest.mark.cli

SCRIPT = ROOT / "benchmarks" / "gpu_all.sh"
GROUPS = (("train_e2e", "eval_lm"), ("cuda_tests", "output_layer", "train_step", "txl", "lstm", "define_block"))
# a line of each part's table
EXPECTED = {
    "cuda_tests": "CUDA tests (python -m pytest tests/test_cuda.py): ",
    "output_layer": "| label-smoothed: ours (tied) | bf16 | 64 |",
    "train_step": "| fairseq transformer_lm_wiki103 + adaptive_loss | bf16 |",
    "train_e2e": "| txl | fairseq-adaptive-train | bf16 | 3 |",
    "txl": "| ours: txl_lm |",
    "lstm": "| ours, --weight-drop 0.5 |",
    "define_block": "| DeFINE train step | bf16 |",
    "eval_lm": "| ours (converted, target-only scoring) |",
}


def gpu_all(out, work, *parts, **env):
    """``bash benchmarks/gpu_all.sh out parts...`` at tiny sizes on CPU, started (not waited for)."""
    environment = dict(os.environ, TINY="1", DEVICE="cpu", WORK=str(work), PYTHON=sys.executable, **env)
    environment["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), environment.get("PATH", "")])
    return subprocess.Popen(["bash", str(SCRIPT), str(out), *parts], env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """Every part once: ``{part: (its tables.md section, its JSON, its summary entry)}``."""
    root = tmp_path_factory.mktemp("gpu_all")
    calls = [gpu_all(root / f"out{i}", root / f"work{i}", *parts) for i, parts in enumerate(GROUPS)]
    for call in calls:
        output = call.communicate(timeout=600)[0]
        assert call.returncode == 0, output[-3000:]
    runs = {}
    for i, parts in enumerate(GROUPS):
        tables = (root / f"out{i}" / "tables.md").read_text()
        results = json.loads((root / f"out{i}" / "results.json").read_text())
        for part in parts:
            section = tables.split(f"\n## {part} (", 1)[1].split("\n## ", 1)[0]
            runs[part] = (section, results.get(part), results["parts"][part])
    return runs


@pytest.mark.parametrize("part", list(EXPECTED))
def test_part_runs_at_tiny_sizes(dry_run, part):
    section, result, summary = dry_run[part]
    assert summary["status"] == "ok" and section.startswith("ok, "), section[-2000:]
    assert EXPECTED[part] in section, section
    assert result is not None, f"{part} wrote no JSON"
    if part == "cuda_tests":  # collected, then skipped without a GPU (conftest.py)
        assert result["rc"] == 0 and "skipped" in result["summary"] and not result["failures"], result
        return
    rows = result["rows"]
    if part == "output_layer":
        names = {r["impl"] for r in rows}
        assert {r["dtype"] for r in rows} == {"fp32", "bf16"} and len(rows) == 2 * len(names)
        for kind in ("ours (tied)", "fairseq AdaptiveSoftmax", "torch.nn.AdaptiveLogSoftmaxWithLoss",
                     "label-smoothed: ours", "full softmax: ours", "fairseq label_smoothed_cross_entropy"):
            assert any(kind in n for n in names), (kind, names)
    elif part == "train_step":
        assert len(rows) == 6 and all(r["loss_finite"] for r in rows)
    elif part == "train_e2e":
        assert [(r["body"], r["entry"]) for r in rows] == [
            (b, e) for b in ("lm", "txl", "lstm", "mt") for e in ("fairseq-adaptive-train", "fairseq-train")]
        for r in rows:
            assert "error" not in r and "eval_error" not in r, r
            assert r["updates"] == 3 and r["words_per_s"] > 0 and not r["nonfinite_loss"], r
            assert (r["body"] == "mt") == ("eval_ppl" not in r), r  # eval-lm on every language model
        assert {r["precision"] for r in rows} == {"bf16", "fp32 (fp16 needs CUDA)"}
    elif part == "txl":  # fairseq's row needs transformers 4.35.2: measured, or skipped saying so
        theirs = [r for r in rows if r["impl"].startswith("fairseq")]
        assert len(theirs) == 1 and ("params" in theirs[0] or "transformers 4.35.2" in theirs[0]["skipped"])
        assert any(r["impl"] == "ours: txl_lm" and r["finite"] for r in rows)
    elif part == "lstm":
        assert len(rows) == 5 and all(r["finite"] for r in rows)
    elif part == "define_block":
        assert {r["dtype"] for r in rows} == {"fp32", "bf16"}
    elif part == "eval_lm":
        fairseq, ours = rows
        assert abs(ours["ppl"] / fairseq["ppl"] - 1) < 1e-3  # the same weights


def test_parts_past_the_budget_are_skipped(tmp_path):
    call = gpu_all(tmp_path / "out", tmp_path / "work", "txl", "define_block", BUDGET="5")
    output = call.communicate(timeout=120)[0]
    assert call.returncode == 0, output
    assert "## txl: skipped" in output and "## define_block: skipped" in output
    parts = json.loads((tmp_path / "out" / "results.json").read_text())["parts"]
    assert {p["status"] for p in parts.values()} == {"skipped"}


def test_an_unknown_part_is_refused_before_anything_runs(tmp_path):
    call = gpu_all(tmp_path / "out", tmp_path / "work", "txl", "nonsense")
    output = call.communicate(timeout=120)[0]
    assert call.returncode == 2 and "unknown part 'nonsense'" in output
    assert not (tmp_path / "out" / "tables.md").exists()


def load_benchmark(name, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # a benchmark imports common.py beside it
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("body", ["lm", "txl", "lstm", "mt"])
def test_the_end_to_end_models_build_at_the_paper_sizes(body, monkeypatch):
    """The GPU run's flags for each body, at WikiText-103's dictionary, through fairseq's parser and the model's
    build (its checks included), on the meta device: nothing allocated."""
    e2e = load_benchmark("train_e2e", monkeypatch)
    _, flags, _ = e2e.body_flags(body, e2e.SIZES["paper"][body])
    task = flags[flags.index("--task") + 1]  # (the flags' own --task and --arch win over build_on_meta's)
    model = build_on_meta(flags[flags.index("--arch") + 1], 267744, [str(f) for f in flags], task)
    if body == "txl":  # Transformer-XL base: txl_wiki103_base's count at fairseq's 267,744-word dictionary
        assert count_parameters(model) == 151_123_537
    else:  # 146M (8 of the 16 blocks), 128M (its 267,744 x 400 table), 66M
        assert count_parameters(model) > {"lm": 140e6, "lstm": 120e6, "mt": 60e6}[body]
