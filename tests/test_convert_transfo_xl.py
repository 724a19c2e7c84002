"""scripts/convert_transfo_xl.py on tiny HuggingFace Transformer-XL folders written by transformers 4.35.2 itself
(tests/golden/transfo_xl_folders/, made by make_transfo_xl_folders.py): ``div_val`` 1 (pytorch_model.bin, the
released folder's vocab.bin) and ``div_val`` 4 with d_embed = d_model (model.safetensors, the tokenizer's vocab.pkl).
fairseq-eval-lm over a text encoded with the written dict.txt, the memory carried across segments, gives the
reference implementation's log-probability of every token; bad folders are refused before anything is written."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from fairseq_cli import eval_lm, preprocess

from .helpers import USER_DIR, load_script, run_cli

FOLDERS = Path(__file__).resolve().parent / "golden" / "transfo_xl_folders"
REFERENCE = torch.load(FOLDERS / "reference.pt")

pytestmark = pytest.mark.cli


def convert(hf_dir, out_dir):
    load_script("convert_transfo_xl").main([str(hf_dir), str(out_dir)])


@pytest.mark.parametrize("folder", ["div1", "div4"])
def test_eval_lm_of_the_converted_model_gives_the_references_log_probs(folder, tmp_path, caplog):
    out = tmp_path / "converted"
    convert(FOLDERS / folder, out)
    words = (out / "dict.txt").read_text().split("\n")[0].split()
    assert words[0] == "w0" and (out / "model.pt").is_file()  # the released order after fairseq's specials
    (tmp_path / "test.txt").write_text(REFERENCE["text"])
    run_cli(preprocess.cli_main, ["--only-source", "--srcdict", out / "dict.txt", "--testpref", tmp_path / "test.txt",
                                  "--destdir", tmp_path / "bin", "--workers", "1"])
    with caplog.at_level("INFO"):
        run_cli(eval_lm.cli_main, [tmp_path / "bin", "--task", "bptt_lm", "--user-dir", USER_DIR, "--path",
                                   out / "model.pt", "--batch-size", "1", "--tokens-per-sample", REFERENCE["segment"],
                                   "--cpu", "--output-word-probs"])
    lines = [r.getMessage() for r in caplog.records if r.name == "fairseq_cli.eval_lm"]
    got = torch.tensor([float(x) for line in lines if re.match(r"^\d+ ", line)
                        for x in re.findall(r"\[(-?[0-9.]+)\]", line)])
    expected = REFERENCE["log_probs"][folder]
    assert got.numel() == expected.numel() == REFERENCE["ids"].numel() - 1  # every token after the first, once
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def copy_folder(tmp_path, folder="div1"):
    dest = tmp_path / "hf"
    shutil.copytree(FOLDERS / folder, dest)
    return dest


def edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, **changes)))


@pytest.mark.parametrize("damage, message", [
    (lambda f: edit_config(f, model_type="gpt2"), "describes a 'gpt2' model, not a Transformer-XL"),
    (lambda f: (f / "pytorch_model.bin").unlink(), "has no pytorch_model.bin or model.safetensors"),
    (lambda f: (f / "pytorch_model.bin").write_bytes((f / "pytorch_model.bin").read_bytes()[:5000]),
     "cannot be read as model weights"),
    (lambda f: (f / "vocab.bin").unlink(), "has no vocab.bin or vocab.pkl"),
    (lambda f: (f / "vocab.bin").write_bytes(b"\x80\x04not a pickle"), "vocab.bin is damaged"),
    (lambda f: edit_config(f, vocab_size=57), "has 56 symbols but config.json's vocab_size is 57"),
    (lambda f: edit_config(f, d_inner=40), "do not fit its config.json"),
    (lambda f: (f / "config.json").unlink(), "has no config.json"),
])
def test_bad_folders_are_refused_before_anything_is_written(tmp_path, damage, message):
    hf = copy_folder(tmp_path)
    damage(hf)
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=message):
        convert(hf, out)
    assert not out.exists()


def test_an_output_folder_holding_a_model_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.pt").write_bytes(b"an earlier model")
    with pytest.raises(SystemExit, match="already holds model.pt: give a new output folder"):
        convert(FOLDERS / "div1", out)
    assert (out / "model.pt").read_bytes() == b"an earlier model" and not (out / "dict.txt").exists()
