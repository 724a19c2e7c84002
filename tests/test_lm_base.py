"""The language-model base (``models/lm_base.py``): one description of the vocabulary layers per build under every
task, the task's cutoff deriver asked once and its numbers kept in the config, the stream key surviving fairseq's
sample movers, the activation channel to the criterion, and the direction of imports (models never import tasks;
criteria never name a body)."""

import ast
import re
from pathlib import Path

import pytest
import torch
from fairseq import utils

from fairseq_adaptive.criterions.adaptive_cross_entropy import AdaptiveCrossEntropyCriterion
from fairseq_adaptive.models import lm_base
from fairseq_adaptive.models.lm_base import StreamKey
from fairseq_adaptive.models.vocab_flags import describe

from .helpers import build_lm, build_lstm, build_txl

PACKAGE = Path(lm_base.__file__).resolve().parents[1]

CUTOFFS = ["--adaptive-input-cutoff", "96,400", "--adaptive-softmax-cutoff", "96,400"]
SHORT = ["--tokens-per-sample", "16"]
# (builder, arch, task, flags) for each task a language model is built under
BUILDS = {
    "language_modeling": (build_lm, "adaptive_lm_tiny", "language_modeling", [*SHORT, *CUTOFFS]),
    "adaptive_language_modeling": (build_lm, "adaptive_lm_tiny", "adaptive_language_modeling", SHORT),  # auto
    "bptt_lm": (build_txl, "txl_tiny", "bptt_lm", [*SHORT, "--batch-size", "2", "--mem-len", "4"]),
    "bptt_lm-lstm": (build_lstm, "lstm_tiny", "bptt_lm", [*SHORT, "--batch-size", "2", "--adaptive-input",
                                                          "--adaptive-input-cutoff", "auto"]),
}


def build(data, name):
    builder, arch, task, flags = BUILDS[name]
    return builder(arch, flags, data=data, task=task)


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_one_description_per_build_under_each_task(lm_data, monkeypatch, name):
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return describe(*args, **kwargs)

    monkeypatch.setattr(lm_base, "describe", counted)
    if name == "bptt_lm-lstm":  # auto cutoffs need a task that derives them: bptt_lm has none
        with pytest.raises(ValueError, match="auto needs the dictionary's counts"):
            build(lm_data, name)
        assert calls == [1]
        return
    assert build(lm_data, name).model.decoder.scorer is not None
    assert calls == [1]


@pytest.mark.parametrize("arch", [
    ["--arch", "adaptive_lm_tiny"],
    # a model name: fairseq builds it from a copy of the config, the task copies the record back
    ["--arch", "adaptive_lm", "--adaptive-input", "--decoder-embed-dim", "32", "--decoder-layers", "1",
     "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "2"],
])
def test_the_task_derives_auto_cutoffs_once_and_the_config_keeps_the_numbers(lm_data, monkeypatch, arch):
    from fairseq_adaptive.tasks.adaptive_language_modeling import AdaptiveLanguageModelingTask

    derived = []
    original = AdaptiveLanguageModelingTask.auto_cutoffs

    def counted(self, dictionary):
        derived.append(original(self, dictionary))
        return derived[-1]

    monkeypatch.setattr(AdaptiveLanguageModelingTask, "auto_cutoffs", counted)
    model, task, args = build_lm(arch[1], [*SHORT, *arch[2:]], data=lm_data)
    assert len(derived) == 1  # the input (and the softmax, for the tiny arch) asked for auto: derived once
    numbers = ",".join(map(str, derived[0]))
    assert args.adaptive_input_cutoff == numbers and args.dictionary_size == len(task.dictionary)
    assert list(model.decoder.embed_tokens.spec.cutoff) == derived[0]


def test_stream_key_survives_fairseqs_sample_movers():
    """fairseq moves samples (to the GPU, to half precision) by rebuilding tuples: the key must come through whole."""
    key = StreamKey("train", 1, 3)
    sample = {"net_input": {"src_tokens": torch.zeros(2, 3, dtype=torch.long), "stream": key}}
    moved = utils.apply_to_sample(lambda t: t.clone(), sample)
    assert moved["net_input"]["stream"] is key and moved["net_input"]["stream"].state_key == ("train", 1)


def test_activation_penalties_need_a_body_that_hands_activations_over(lm_data):
    model, task, _ = build(lm_data, "language_modeling")
    criterion = AdaptiveCrossEntropyCriterion(task, sentence_avg=False, ar_alpha=2.0)
    tokens = torch.full((2, 6), task.dictionary.index("the"), dtype=torch.long)
    sample = {"net_input": {"src_tokens": tokens, "src_lengths": torch.full((2,), 6)}, "target": tokens,
              "ntokens": 12}
    model.train()
    with pytest.raises(ValueError, match="this model's body hands none"):
        criterion(model, sample)


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield "." * node.level + (node.module or "")
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


@pytest.mark.parametrize("folder", ["models", "modules"])
def test_models_and_modules_never_import_tasks(folder):
    offending = [f"{path.name}: {name}" for path in sorted((PACKAGE / folder).glob("*.py"))
                 for name in _imports(path) if re.search(r"(^|\.)tasks(\.|$)", name)]
    assert not offending


def test_no_criterion_names_a_body():
    for path in sorted((PACKAGE / "criterions").glob("*.py")):
        assert not re.search(r"lstm|txl|transformer_xl", path.read_text(), re.IGNORECASE), path.name


def test_bptt_lm_refuses_a_model_without_streams_before_anything_runs(lm_data):
    with pytest.raises(ValueError, match="--arch adaptive_lm_tiny scores each sample on its own: train it with --task "
                                         "adaptive_language_modeling"):
        build_lm("adaptive_lm_tiny", [*SHORT, *CUTOFFS, "--batch-size", "2"], data=lm_data, task="bptt_lm")
