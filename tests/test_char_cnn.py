"""The CNN row of Baevski & Auli's Table 3: word vectors from a character CNN, equal to fairseq's
CharacterTokenEmbedder on the same weights, counted, trained and scored through fairseq's entry points."""

import math

import pytest
import torch
from fairseq.modules.character_token_embedder import CharacterTokenEmbedder
from fairseq_cli import train

from fairseq_adaptive.models.counting import count_parameters, dictionary_of_size
from fairseq_adaptive.modules.char_cnn import CharCNN, CharCNNOptions

from .helpers import USER_DIR, build_lm, evaluate_lm, run_cli

FILTERS = ((1, 8), (2, 16), (3, 8))


def test_equals_fairseq_character_token_embedder():
    d = dictionary_of_size(40)
    d.add_symbol("Transformer")
    d.add_symbol("x" * 70)  # longer than the 50 characters kept
    torch.manual_seed(0)
    ours = CharCNN(d.symbols, d.nspecial, d.pad(), d.eos(), d.unk(), CharCNNOptions(FILTERS, 6, 2), 12)
    theirs = CharacterTokenEmbedder(d, [list(f) for f in FILTERS], 6, 12, 2)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    tokens = torch.tensor([[d.eos(), 5, 17, len(d) - 2, len(d) - 1, d.unk(), d.pad()]])
    torch.testing.assert_close(ours(tokens), theirs(tokens))
    assert ours(tokens)[0, -1].abs().sum() == 0  # padding


def test_cnn_row_count():
    model = build_lm("adaptive_lm_wiki103_cnn", vocab=267744).model
    asm = build_lm("adaptive_lm_wiki103_asm", vocab=267744).model
    # the character CNN replaces ASM's 64-d table and its projection to 1024
    widths, features = zip(*[(1, 128), (2, 256), (3, 384), (4, 512), (5, 512), (6, 512), (7, 512)])
    pooled = sum(features)
    cnn = (257 * 128 + sum(w * 128 * c + c for w, c in zip(widths, features)) + pooled * 2 * pooled + 2 * pooled
           + pooled * 1024 + 1024 + 2 * 1024)
    assert count_parameters(model) == count_parameters(asm) - 267744 * 64 - 64 * 1024 + cnn
    assert round(count_parameters(model) / 1e6, 1) == 266.3  # Table 3


@pytest.mark.cli
def test_cnn_trains_and_scores(lm_data, tmp_path):
    ckpt = tmp_path / "ckpt"
    run_cli(train.cli_main, [
        lm_data, "--user-dir", USER_DIR, "--task", "adaptive_language_modeling", "--arch", "adaptive_lm_wiki103_cnn",
        "--decoder-layers", "1", "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
        "--decoder-attention-heads", "2", "--character-filters", "[(1, 8), (2, 16), (3, 8)]",
        "--character-embedding-dim", "8", "--adaptive-softmax-cutoff", "300,1000", "--criterion",
        "adaptive_cross_entropy", "--optimizer", "adam", "--lr", "0.003", "--max-tokens", "1024",
        "--tokens-per-sample", "64", "--max-update", "6", "--cpu", "--num-workers", "0", "--save-dir", ckpt,
        "--no-progress-bar", "--no-epoch-checkpoints", "--dropout", "0", "--adaptive-softmax-dropout", "0"])
    state = torch.load(ckpt / "checkpoint_last.pt", weights_only=False)
    assert any(k.startswith("decoder.embed_tokens.embedding.convolutions.") for k in state["model"])
    assert not any("word_chars" in k for k in state["model"])  # rebuilt from the dictionary, not saved
    result = evaluate_lm(lm_data, ckpt / "checkpoint_last.pt")
    vocab = sum(1 for _ in open(lm_data / "dict.txt")) + 4
    assert math.isfinite(result["perplexity"]) and result["perplexity"] < vocab


@pytest.mark.parametrize("extra,message", [
    (["--adaptive-input", "--adaptive-input-cutoff", "300"], "drop --adaptive-input"),
    (["--define-dim", "16"], "drop --define-dim"),
    (["--share-decoder-input-output-embed"], "no word table to tie"),
    (["--character-filters", "[(1,)]"], "not a list of \\(width, features\\) pairs"),
])
def test_bad_character_flags(extra, message):
    flags = ["--character-embeddings", "--character-filters", "[(1, 8)]", "--character-embedding-dim", "4",
             "--adaptive-softmax-cutoff", "None"]
    with pytest.raises(ValueError, match=message):
        build_lm("adaptive_lm_define_std_tiny", ["--define-dim", "0", *flags, *extra], vocab=500)
