"""Faults around the layers: checkpoint copies that a failure or a kill cannot truncate, data and dictionaries checked
before a step runs, each refused with the file and the fix named and nothing written."""

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from fairseq_cli import train

from fairseq_adaptive import fairseq_fixes

from .helpers import LM_TRAIN, MT_TRAIN, ROOT, SAMPLE, TINY_LM, evaluate_lm, json_log, load_script, run_cli, train_args


def failing_copy(after: int):
    """A ``shutil.copyfileobj`` that writes ``after`` bytes, then fails as a full disk does."""

    def copy(fin, fout, length=0):
        fout.write(fin.read(after))
        raise OSError(errno.ENOSPC, "No space left on device")

    return copy


@pytest.mark.parametrize("after", [0, 1, 4096, 500_000, 999_999])
def test_a_failed_checkpoint_copy_leaves_the_old_file(tmp_path, monkeypatch, after):
    src, dst = tmp_path / "checkpoint_1_4.pt", tmp_path / "checkpoint_last.pt"
    src.write_bytes(os.urandom(1_000_000))
    old = os.urandom(800_000)
    dst.write_bytes(old)
    monkeypatch.setattr(shutil, "copyfileobj", failing_copy(after))
    with pytest.raises(OSError, match=f"copying the checkpoint {src} to {dst} failed .*was left as it was"):
        fairseq_fixes.AtomicCopyPathManager.copy(str(src), str(dst), overwrite=True)
    assert dst.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == sorted([dst.name, src.name])
    monkeypatch.undo()
    assert fairseq_fixes.AtomicCopyPathManager.copy(str(src), str(dst), overwrite=True)
    assert dst.read_bytes() == src.read_bytes()


KILLED_COPIER = """
import sys
from fairseq_adaptive.fairseq_fixes import atomic_copy
a, b, dst = sys.argv[1:]
print("ready", flush=True)
while True:
    atomic_copy(a, dst)
    atomic_copy(b, dst)
"""


@pytest.mark.cli
def test_a_killed_checkpoint_copy_leaves_a_whole_file(tmp_path):
    """kill -9 at random points of copies that alternate two 8 MB checkpoints onto one file: the file is always one of
    them, whole."""
    a, b, dst = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "checkpoint_last.pt"
    a.write_bytes(os.urandom(8 << 20))
    b.write_bytes(os.urandom(8 << 20))
    shutil.copyfile(a, dst)
    contents = {a.read_bytes(), b.read_bytes()}
    rng = random.Random(0)
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", KILLED_COPIER, a, b, dst], stdout=subprocess.PIPE, cwd=ROOT)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.01, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert dst.read_bytes() in contents


@pytest.mark.cli
def test_training_resumes_after_a_checkpoint_copy_failed(lm_data, tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    common = [lm_data, *LM_TRAIN, *TINY_LM, "--save-dir", ckpt, "--save-interval-updates", "2",
              "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", "1"]
    run_cli(train.cli_main, [*common, "--max-update", "4"])
    before = (ckpt / "checkpoint_last.pt").read_bytes()
    monkeypatch.setattr(shutil, "copyfileobj", failing_copy(100_000))
    with pytest.raises(OSError, match=r"checkpoint_1_6.pt to .* failed \(No space left on device\); .* was left as it was"):
        run_cli(train.cli_main, [*common, "--max-update", "8"])
    assert (ckpt / "checkpoint_last.pt").read_bytes() == before
    monkeypatch.undo()
    run_cli(train.cli_main, [*common, "--max-update", "8", "--log-file", tmp_path / "log"])
    updates = [int(r["num_updates"]) for r in json_log(tmp_path / "log") if "num_updates" in r and "loss_c0" in r]
    assert min(updates) == 5 and max(updates) == 8  # continued from the last complete checkpoint


def copy_data(lm_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(lm_data, data)
    return data


def truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


def smaller_dictionary(data):
    lines = (data / "dict.txt").read_text().splitlines()
    (data / "dict.txt").write_text("\n".join(lines[:200]) + "\n")


def empty_split(data):
    from fairseq_cli import preprocess

    (data / "empty.txt").write_text("")
    (data / "out").mkdir()
    run_cli(preprocess.cli_main, ["--only-source", "--trainpref", data / "empty.txt", "--srcdict", data / "dict.txt",
                                  "--destdir", data / "out", "--workers", "1"])
    for ext in ("bin", "idx"):
        shutil.copyfile(data / "out" / f"train.{ext}", data / f"train.{ext}")


def random_bytes(path):
    path.write_bytes(os.urandom(path.stat().st_size))


DATA_FAULTS = {
    "random bytes as train.bin": (lambda d: random_bytes(d / "train.bin"), r"train.bin holds token id [\d,]+, past "
                                                                             r"the [\d,]+-entry dictionary"),
    "ids past the dictionary": (smaller_dictionary, r"valid.bin holds token id [\d,]+, past the 204-entry dictionary "
                                                    r".*dict.txt: it was binarised with another dictionary"),
    "truncated .bin": (lambda d: truncate(d / "train.bin", 1000), r"train.bin is cut short \(1,000 of the [\d,]+ bytes "
                                                                   r"its index .*train.idx lists\): re-run "
                                                                   r"fairseq-preprocess"),
    "truncated .idx": (lambda d: truncate(d / "train.idx", 40), r"train.idx is cut short \(40 of [\d,]+ bytes"),
    "index cut inside its header": (lambda d: truncate(d / "valid.idx", 10), r"valid.idx is not a fairseq index "
                                                                               r"\(10 bytes, too short\)"),
    "no index": (lambda d: (d / "train.bin").unlink(), r"train.idx has no data file .*train.bin"),
    "empty split": (empty_split, r"train.bin holds no sentences \(an empty split\)"),
}


@pytest.mark.cli
@pytest.mark.parametrize("fault", sorted(DATA_FAULTS))
def test_damaged_data_stops_training_before_a_step(lm_data, tmp_path, fault):
    mutate, message = DATA_FAULTS[fault]
    data = copy_data(lm_data, tmp_path)
    mutate(data)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(ValueError, match=message):
        run_cli(train.cli_main, [data, *LM_TRAIN, *TINY_LM, "--save-dir", ckpt, "--max-update", "2"])
    assert not any(ckpt.glob("*.pt"))  # no checkpoint written


@pytest.mark.cli
def test_ids_past_the_dictionary_stop_eval_lm_and_the_layers(lm_data, tmp_path):
    ckpt = tmp_path / "ckpt"
    run_cli(train.cli_main, [lm_data, *LM_TRAIN, *TINY_LM, "--save-dir", ckpt, "--max-update", "2"])
    data = copy_data(lm_data, tmp_path)
    from fairseq.data import indexed_dataset

    # a test split whose ids run past the dictionary: the original ids plus 10,000
    dataset = indexed_dataset.MMapIndexedDataset(str(lm_data / "test"))
    builder = indexed_dataset.MMapIndexedDatasetBuilder(str(data / "test.bin"), dtype=dataset._index.dtype)
    for sentence in dataset:
        builder.add_item(sentence + 10_000)
    builder.finalize(str(data / "test.idx"))
    with pytest.raises(ValueError, match=r"test.bin holds token id [\d,]+, past the [\d,]+-entry dictionary"):
        evaluate_lm(data, ckpt / "checkpoint_last.pt")
    from fairseq import checkpoint_utils

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(ckpt / "checkpoint_last.pt")],
                                                                 arg_overrides={"data": str(lm_data)})
    model = models[0].eval()
    vocab = len(model.decoder.dictionary)
    with pytest.raises(ValueError, match=rf"^id {vocab + 3}: a token id outside the {vocab:,}-entry dictionary"):
        model(torch.tensor([[4, 5, vocab + 3]]))
    features = model(torch.tensor([[4, 5, 6]]))[0]
    with pytest.raises(ValueError, match=rf"^id {vocab}: a target id outside the"):
        model.decoder.scorer.loss(features, torch.tensor([[5, 6, vocab]]), ignore_index=1)


@pytest.mark.cli
def test_eval_lm_with_another_dictionary_of_the_same_size_names_both(lm_data, tmp_path):
    ckpt = tmp_path / "ckpt"
    run_cli(train.cli_main, [lm_data, *LM_TRAIN, *TINY_LM, "--save-dir", ckpt, "--max-update", "2"])
    data = copy_data(lm_data, tmp_path)
    lines = (data / "dict.txt").read_text().splitlines()
    word, count = lines[10].split(" ", 1)
    lines[10] = f"{word}{word} {count}"  # one word renamed: same size, same counts, another dictionary
    (data / "dict.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"the dictionary of {data} \({data}/dict.txt\) is not the one the "
                                         rf"checkpoint was trained with \({lm_data.resolve()}/dict.txt\): both have "):
        evaluate_lm(data, ckpt / "checkpoint_last.pt")
    assert evaluate_lm(lm_data, ckpt / "checkpoint_last.pt")["perplexity"] > 0  # its own dictionary still scores


def test_checkpoints_without_a_fingerprint_keep_loading():
    """A checkpoint written before the fingerprint (the golden ones have none) loads with the size check alone."""
    from .golden.golden import CASES, HERE, score

    state = torch.load(HERE / "lm_adaptive" / "checkpoint.pt", weights_only=False)
    assert "dictionary_fingerprint" not in state["cfg"]["model"]
    assert score(HERE / "lm_adaptive", CASES["lm_adaptive"])["target_log_probs"].isfinite().all()


@pytest.fixture(scope="module")
def lm_checkpoint(lm_data, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("lm_ckpt")
    run_cli(train.cli_main, [lm_data, *LM_TRAIN, *TINY_LM, "--save-dir", ckpt, "--max-update", "2"])
    return ckpt


@pytest.fixture(scope="module")
def mt_checkpoint(mt_data, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("mt_ckpt")
    run_cli(train.cli_main, [mt_data, *MT_TRAIN, "--save-dir", ckpt, "--max-update", "2"])
    return ckpt


def damaged(kind, folder):
    path = folder / f"{kind}.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(os.urandom(5000))
    elif kind == "cut":
        path.write_bytes((folder / "checkpoint_last.pt").read_bytes()[:20_000])
    else:
        torch.save({"weights": torch.ones(3)}, path)  # readable, but no fairseq checkpoint
    return path


CHECKPOINT_FAULTS = {"empty": "is empty \\(0 bytes; a save was cut off\\)",
                     "random": "is not a checkpoint torch can read",
                     "cut": "is not a checkpoint torch can read|ends early|could not be read as a checkpoint",
                     "foreign": "is not a fairseq checkpoint"}


@pytest.mark.cli
@pytest.mark.parametrize("kind", sorted(CHECKPOINT_FAULTS))
def test_damaged_checkpoints_are_named_by_the_hub_and_by_a_resume(lm_data, lm_checkpoint, tmp_path, kind):
    from fairseq_adaptive.models.adaptive_lm import AdaptiveLanguageModel

    folder = tmp_path / "ckpt"
    shutil.copytree(lm_checkpoint, folder)
    path = damaged(kind, folder)
    message = rf"{path} (?:{CHECKPOINT_FAULTS[kind]}).*: use another checkpoint of the run"
    with pytest.raises(ValueError, match=message) as error:
        AdaptiveLanguageModel.from_pretrained(str(folder), path.name, str(lm_data))
    assert "weights_only" not in str(error.value)
    path.replace(folder / "checkpoint_last.pt")  # the file a plain resume reads
    with pytest.raises(ValueError, match=message.replace(str(path), str(folder / "checkpoint_last.pt"))):
        run_cli(train.cli_main, [lm_data, *LM_TRAIN, *TINY_LM, "--save-dir", folder, "--max-update", "4"])


@pytest.mark.cli
def test_entry_points_check_what_they_are_given(lm_data, mt_data, lm_checkpoint, mt_checkpoint, tmp_path):
    from fairseq_adaptive.models.adaptive_lm import AdaptiveLanguageModel
    from fairseq_adaptive.models.adaptive_transformer import AdaptiveTransformerModel

    last = "checkpoint_last.pt"
    with pytest.raises(ValueError, match=rf"^{tmp_path}/nowhere/dict.txt does not exist: give the data-bin folder"):
        AdaptiveLanguageModel.from_pretrained(str(lm_checkpoint), last, str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"holds a adaptive_transformer_tiny model trained with --task translation, "
                                         r"not a AdaptiveLanguageModel .*AdaptiveTransformerModel.from_pretrained"):
        AdaptiveLanguageModel.from_pretrained(str(mt_checkpoint), last, str(mt_data))
    with pytest.raises(ValueError, match=r"holds a adaptive_lm_tiny model trained with --task "
                                         r"adaptive_language_modeling, not a AdaptiveTransformerModel"):
        AdaptiveTransformerModel.from_pretrained(str(lm_checkpoint), last, str(lm_data))
    with pytest.raises(ValueError, match=rf"^{tmp_path}/missing is not a folder"):
        AdaptiveLanguageModel.from_pretrained(str(tmp_path / "missing"), last, str(lm_data))
    with pytest.raises(SystemExit, match=r"holds a adaptive_transformer_tiny model .*fairseq-generate --score-reference"):
        load_script("freq_loss").main([str(lm_data), str(mt_checkpoint / last)])


@pytest.mark.cli
def test_fairseqs_adaptive_loss_is_refused_with_ours_named(lm_data, tmp_path):
    ckpt = tmp_path / "ckpt"
    flags = [flag if flag != "adaptive_cross_entropy" else "adaptive_loss" for flag in TINY_LM]
    with pytest.raises(ValueError, match=r"^--criterion adaptive_loss needs fairseq's own adaptive softmax.*"
                                         r"use --criterion adaptive_cross_entropy"):
        run_cli(train.cli_main, [lm_data, *LM_TRAIN, *flags, "--save-dir", ckpt, "--max-update", "2"])
    assert not any(ckpt.glob("*.pt"))


@pytest.mark.cli
@pytest.mark.parametrize("split,text", [("train", ""), ("train", "a few words only\n"), ("valid", "\n")])
def test_prepare_lm_refuses_empty_inputs_before_writing(tmp_path, split, text):
    import gzip

    src = tmp_path / "src"
    src.mkdir()
    for name in ("train", "valid", "test"):
        with gzip.open(SAMPLE / f"{name}.txt.gz", "rt") as f:
            (src / f"{name}.txt").write_text(f.read(20_000))
    (src / f"{split}.txt").write_text(text)
    done = subprocess.run(["bash", ROOT / "scripts" / "prepare_lm.sh", src, tmp_path / "dest"], capture_output=True,
                          text=True)
    words = len(text.split())
    assert done.returncode == 1 and f"{split}.txt(.gz) holds {words} words; {split} needs at least" in done.stderr
    assert not (tmp_path / "dest").exists()


def test_prepare_mt_refuses_empty_inputs_before_writing(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    for split, n in (("train", 30), ("valid", 5), ("test", 5)):
        (src / f"{split}.tsv").write_text("".join(f"hello {i}\thallo {i}\n" for i in range(n)))
    with pytest.raises(SystemExit, match=r"the train split holds 30 sentence pairs; it needs at least 100"):
        load_script("prepare_mt").main([str(src), str(tmp_path / "dest"), "--workers", "1"])
    assert not (tmp_path / "dest").exists() and not (tmp_path / "dest.partial").exists()


@pytest.mark.cli
def test_the_hub_loads_an_ensemble(lm_data, lm_checkpoint):
    from fairseq_adaptive.models.adaptive_lm import AdaptiveLanguageModel

    hub = AdaptiveLanguageModel.from_pretrained(str(lm_checkpoint), "checkpoint_last.pt:checkpoint_last.pt", str(lm_data))
    assert len(hub.models) == 2


def test_a_source_only_translation_split_and_older_formats_are_left_to_fairseq(mt_data, tmp_path):
    from fairseq import tasks

    from fairseq_adaptive.checks import check_split, largest_id

    data = tmp_path / "bin"
    shutil.copytree(mt_data, data)
    for ext in ("bin", "idx"):
        (data / f"test.en-de.de.{ext}").unlink()  # generation on text without references
    args = train_args(data, "translation", "adaptive_transformer_tiny")
    check_split(tasks.setup_task(args), "test")
    (data / "old.idx").write_bytes(b"TNTIDX\x00\x00" + bytes(40))  # fairseq's cached/lazy format
    (data / "old.bin").write_bytes(bytes(8))
    assert largest_id(str(data / "old")) is None
