"""Word-level perplexity of a sub-word model (Baevski & Auli 2019, Table 3's BPE rows: "the probability of a word is
the product of the sub-word units"): fairseq-eval-lm --remove-bpe sums each word's unit scores and divides the total
by the number of words, on a corpus where words and units differ in number."""

import logging
import math

import pytest
from fairseq_cli import preprocess, train

from .helpers import USER_DIR, evaluate_lm, load_script, run_cli, write_text_sample

pytestmark = pytest.mark.cli


def split_words(line: str) -> str:
    """Words of eight letters or more as two units, fairseq's ``@@ `` continuation marker on the first."""
    return " ".join(f"{w[:4]}@@ {w[4:]}" if len(w) >= 8 else w for w in line.split())


def test_word_level_perplexity_of_a_subword_model(tmp_path, caplog):
    write_text_sample(tmp_path, {"train": 60_000, "valid": 8_000})
    # a test text of training words: no unit falls to <unk>, which eval-lm could not join to its word
    (tmp_path / "test.txt").write_text((tmp_path / "train.txt").read_text()[:8_000].rsplit(" ", 1)[0])
    for split in ("train", "valid", "test"):
        text = (tmp_path / f"{split}.txt").read_text().split()
        lines = [" ".join(text[i : i + 25]) for i in range(0, len(text), 25)]  # short lines: one sample each
        (tmp_path / f"{split}.bpe").write_text("\n".join(split_words(line) for line in lines) + "\n")
    # scored items: every unit (or word) of every line, and each line's end
    words = len(lines) + len(text)
    units = sum(len(line.split()) + 1 for line in (tmp_path / "test.bpe").read_text().splitlines())
    assert units > words  # the case the issue asks for
    run_cli(preprocess.cli_main, ["--only-source", "--trainpref", tmp_path / "train.bpe", "--validpref",
                                  tmp_path / "valid.bpe", "--testpref", tmp_path / "test.bpe", "--destdir",
                                  tmp_path / "bin", "--workers", "1"])
    ckpt = tmp_path / "ckpt"
    run_cli(train.cli_main, [tmp_path / "bin", "--user-dir", USER_DIR, "--task", "adaptive_language_modeling",
                             "--arch", "adaptive_lm_define_std_tiny", "--define-dim", "0",
                             "--criterion", "adaptive_cross_entropy", "--optimizer", "adam", "--lr", "0.003",
                             "--max-tokens", "1024", "--tokens-per-sample", "64", "--max-update", "6", "--cpu",
                             "--num-workers", "0", "--save-dir", ckpt, "--no-progress-bar", "--no-epoch-checkpoints"])
    caplog.set_level(logging.INFO)
    per_unit = evaluate_lm(tmp_path / "bin", ckpt / "checkpoint_last.pt", "--sample-break-mode", "eos")
    per_word = evaluate_lm(tmp_path / "bin", ckpt / "checkpoint_last.pt", "--sample-break-mode", "eos",
                        "--remove-bpe", "@@ ")
    scored = [int(r.getMessage().split()[1].replace(",", "")) for r in caplog.records
              if r.getMessage().startswith("Evaluated ")]
    assert scored == [units, units]  # every unit scored, both times
    assert per_word["perplexity"] > per_unit["perplexity"]
    # the same total NLL over fewer items: log ppl_word x words = log ppl_unit x units
    total_units = math.log(per_unit["perplexity"]) * units
    total_words = math.log(per_word["perplexity"]) * words
    assert abs(total_words - total_units) / total_units < 1e-4


def test_prepare_bpe_writes_units_that_join_back_into_the_words(tmp_path):
    prepare_bpe = load_script("prepare_bpe")
    write_text_sample(tmp_path, {"train": 30_000, "valid": 3_000, "test": 3_000})
    prepare_bpe.main([str(tmp_path), str(tmp_path / "bin"), "--vocab-size", "600"])
    for split in ("train", "valid", "test"):
        original = (tmp_path / f"{split}.txt").read_text().splitlines()
        units = (tmp_path / "bin" / "bpe" / f"{split}.bpe").read_text().splitlines()
        assert len(units) == len(original)
        assert [u.replace("@@ ", "") for u in units] == [" ".join(o.split()) for o in original]
        assert any("@@ " in u for u in units)  # words were split
    assert (tmp_path / "bin" / "test.bin").exists() and (tmp_path / "bin" / "dict.txt").exists()
    # a second run into the same folder stops before writing anything
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "bin").rglob("*")}
    with pytest.raises(SystemExit, match="already holds a binarised corpus: remove it first"):
        prepare_bpe.main([str(tmp_path), str(tmp_path / "bin"), "--vocab-size", "600"])
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "bin").rglob("*")} == before
    # the units of a word: '@@' closes every unit but the word's last
    assert prepare_bpe.to_fairseq_bpe(["\u2581Rep", "resent", "atives", "\u2581:", "\u2581", "1990"]) == \
        "Rep@@ resent@@ atives : 1990"
