"""What the test files share (a test file imports from here, never from another test file or from conftest.py):
paths, the in-process runner of fairseq's entry points and the flags the end-to-end tests train with, one builder per
model kind, and the Triton helpers."""

import gzip
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple, Optional

import pytest
import torch
from fairseq import options, tasks
from fairseq.data import Dictionary, data_utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq_cli import eval_lm

from fairseq_adaptive.models.counting import build_arch, dictionary_of_size

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "lm-sample"
MT_SAMPLE = ROOT / "data" / "mt-sample"
USER_DIR = str(ROOT / "fairseq_adaptive")


# ------------------------------------------------------------------------------------------------ files and scripts
def write_text_sample(dest: Path, chars: dict) -> None:
    """The first ``chars[split]`` characters of the bundled LM sample's splits, as ``dest/{split}.txt``."""
    for split, n in chars.items():
        with gzip.open(SAMPLE / f"{split}.txt.gz", "rt") as f:
            (dest / f"{split}.txt").write_text(f.read(n))


def load_script(name):
    """A module from scripts/ (they are not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------- fairseq's entry points
def run_cli(main, argv):
    """Run a fairseq console entry point in-process with ``argv`` (as fairseq's own tests do)."""
    old = sys.argv
    sys.argv = [main.__module__] + [str(a) for a in argv]
    try:
        return main()
    finally:
        sys.argv = old


# fairseq-train on the LM corpus (tests' lm_data fixture): the common flags, and our task, tiny model and criterion
LM_TRAIN = ["--user-dir", USER_DIR, "--cpu", "--optimizer", "adam", "--lr", "0.003", "--max-tokens", "1024",
            "--tokens-per-sample", "64", "--no-progress-bar", "--seed", "1", "--num-workers", "0"]
TINY_LM = ["--task", "adaptive_language_modeling", "--arch", "adaptive_lm_tiny", "--criterion",
           "adaptive_cross_entropy"]
# fairseq-train with --task bptt_lm (Transformer-XL, LSTM): add --arch and its flags
STREAM_TRAIN = ["--user-dir", USER_DIR, "--task", "bptt_lm", "--criterion", "adaptive_cross_entropy", "--optimizer",
                "adam", "--lr", "0.003", "--batch-size", "4", "--tokens-per-sample", "16", "--cpu", "--seed", "1",
                "--num-workers", "0", "--no-progress-bar", "--no-epoch-checkpoints"]
# fairseq-train on the translation corpus (tests' mt_data fixture), tiny model and label-smoothed criterion included
MT_TRAIN = ["--user-dir", USER_DIR, "--cpu", "--task", "translation", "--arch", "adaptive_transformer_tiny",
            "--criterion", "adaptive_label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--optimizer", "adam",
            "--lr", "0.003", "--max-tokens", "1024", "--no-progress-bar", "--num-workers", "0", "--seed", "1"]


def evaluate_lm(data, checkpoint, *extra):
    """fairseq-eval-lm on the test split in 64-token samples: its result (loss, perplexity)."""
    args = options.parse_args_and_arch(options.get_eval_lm_parser(), [
        str(data), "--user-dir", USER_DIR, "--path", str(checkpoint), "--cpu", "--gen-subset", "test",
        "--tokens-per-sample", "64", "--max-tokens", "1024", "--num-workers", "0", *extra])
    return eval_lm.main(convert_namespace_to_omegaconf(args))


def evaluate_streams(data, checkpoint, *extra):
    """fairseq-eval-lm with the bptt_lm task on the test split (2 streams, 8-token segments): its result."""
    args = options.parse_args_and_arch(options.get_eval_lm_parser(), [
        str(data), "--task", "bptt_lm", "--user-dir", USER_DIR, "--path", str(checkpoint), "--cpu", "--gen-subset",
        "test", "--batch-size", "2", "--tokens-per-sample", "8", "--num-workers", "0", *extra])
    return eval_lm.main(convert_namespace_to_omegaconf(args))


def stream_length(data, split) -> int:
    """Tokens in a binarised split, line ends included: what a stream over it holds."""
    dataset = data_utils.load_indexed_dataset(str(data / split), Dictionary.load(str(data / "dict.txt")))
    return int(dataset.sizes.sum())  # (the sizes are a view of the dataset's memory map: keep it alive)


def assert_incremental_equals_full(hub):
    """Step by step through ``incremental_state`` (fairseq's generators' route) equals one pass, and two segments of a
    stream equal one pass over both (a bptt_lm model's hub interface)."""
    decoder = hub.models[0].decoder
    tokens = torch.randint(4, len(hub.task.dictionary), (2, 9))
    full = decoder.get_normalized_probs(decoder(tokens), log_probs=True)
    state = {}
    steps = [decoder.get_normalized_probs(decoder(tokens[:, : t + 1], incremental_state=state), log_probs=True)
             for t in range(9)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    first = decoder(tokens[:, :4], stream=("test", 0, 0))[0]
    second = decoder(tokens[:, 4:], stream=("test", 0, 1))[0]
    torch.testing.assert_close(torch.cat([first, second], 1), decoder(tokens)[0], atol=1e-5, rtol=1e-5)


def json_log(path):
    """The records of a ``--log-format json --log-file`` log."""
    rows = [line.split("|")[-1].strip() for line in path.read_text().splitlines()]
    return [json.loads(r) for r in rows if r.startswith('{"')]


# ------------------------------------------------------------------------------------ training in other processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finish(proc):
    """Wait for a ``subprocess.Popen`` (stderr joined to stdout) that must succeed: its output."""
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


def last_weights(save_dir):
    """The model's weights in ``save_dir/checkpoint_last.pt``."""
    return torch.load(save_dir / "checkpoint_last.pt", weights_only=False)["model"]


# ------------------------------------------------------------------------------------------- one builder per kind
class Built(NamedTuple):
    """A model and what built it: the fairseq task over the corpus, or (at a vocabulary size) the stand-in holding
    the dictionary; and the parsed flags (None at a vocabulary size: counting.build_arch keeps them)."""

    model: torch.nn.Module
    task: object
    args: Optional[object]


def train_args(data, task: str, arch: str, flags=()):
    """fairseq-train's option parsing of ``data --user-dir ... --task task --arch arch --cpu flags``."""
    return options.parse_args_and_arch(options.get_training_parser(), [
        str(data), "--user-dir", USER_DIR, "--task", task, "--arch", arch, "--cpu", *flags])


def _build(arch, flags, vocab, data, corpus_task, vocab_task, task=None) -> Built:
    if (vocab is None) == (data is None):
        raise TypeError("give a vocabulary (vocab=) or a binarised corpus (data=), one of them")
    if data is None:
        dictionary = dictionary_of_size(vocab) if isinstance(vocab, int) else vocab
        model, stand_in = build_arch(arch, dictionary, list(flags), vocab_task, device="meta")
        return Built(model, stand_in, None)
    args = train_args(data, task or corpus_task, arch, flags)
    built_task = tasks.setup_task(args)
    return Built(built_task.build_model(args), built_task, args)


# Each builder takes the registered architecture, its command-line flags, and one of: ``vocab``, a dictionary size
# (a frequency-sorted dictionary of that many entries) or a Dictionary, to build on the meta device (nothing
# allocated: parameter counts, build-time checks); or ``data``, a binarised corpus, to build with real weights through
# fairseq's option parsing and the task, as fairseq-train does (the task's dictionary and its counts); ``task``
# replaces the kind's usual task over a corpus.
def build_lm(arch: str = "adaptive_lm_tiny", flags=(), *, vocab=None, data=None, task=None) -> Built:
    """A Transformer language model (adaptive_lm archs: adaptive input, DeFINE, character CNN); over a corpus with
    --task adaptive_language_modeling (which derives automatic cutoffs), at a vocabulary size with fairseq's
    language_modeling."""
    return _build(arch, flags, vocab, data, "adaptive_language_modeling", "language_modeling", task)


def build_txl(arch: str = "txl_tiny", flags=(), *, vocab=None, data=None, task=None) -> Built:
    """A Transformer-XL language model; over a corpus with --task bptt_lm."""
    return _build(arch, flags, vocab, data, "bptt_lm", "language_modeling", task)


def build_lstm(arch: str = "lstm_tiny", flags=(), *, vocab=None, data=None, task=None) -> Built:
    """An LSTM language model; over a corpus with --task bptt_lm."""
    return _build(arch, flags, vocab, data, "bptt_lm", "language_modeling", task)


def build_translation(arch: str = "adaptive_transformer_tiny", flags=(), *, vocab=None, data=None, task=None) -> Built:
    """A translation model (adaptive_transformer archs or fairseq's transformer ones); at a vocabulary size both
    sides share the one dictionary."""
    return _build(arch, flags, vocab, data, "translation", "translation", task)


def steps_with_and_without_autocast(model, criterion, sample):
    """One training step in fp32, then one under CPU bf16 autocast (the code fairseq's ``--amp`` runs on CUDA):
    ``[(loss, gradients), (loss, gradients)]``."""
    steps = []
    for amp in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = criterion(model, sample)[0]
        loss.backward()
        steps.append((loss.detach(), [p.grad for p in model.parameters()]))
    return steps


# ------------------------------------------------------------------------------------------------------- Triton
def run_interpreted(code: str) -> None:
    """Run ``code`` in a fresh interpreter with Triton's CPU interpreter on; it must print ``kernel ok``."""
    pytest.importorskip("triton")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # tests.interpreted importable
    env = dict(os.environ, TRITON_INTERPRET="1", FAIRSEQ_ADAPTIVE_NO_TRITON="0", PYTHONPATH=path)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "kernel ok" in proc.stdout, proc.stderr[-3000:]


def compile_for_h100(kernel, signature: dict, constexprs: dict, num_warps: int) -> None:
    """Triton's whole compiler, to an sm_90 cubin through ptxas, runs without a GPU: ``kernel`` must get through."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    source = ASTSource(kernel, {**signature, **{name: "constexpr" for name in constexprs}}, constexprs=constexprs)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    assert len(compiled.asm["cubin"]) > 1000 and ".target sm_90" in compiled.asm["ptx"]
