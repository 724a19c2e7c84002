"""fairseq's released adaptive-input language models at tiny size: a checkpoint written by fairseq's own
``transformer_lm`` in the layout of ``adaptive_lm_wiki103.v2`` (tail projections tied to the adaptive input's) or of
``adaptive_lm_gbw_huge`` (the Billion Word body, tail projections the softmax's own), stored as those files store it
(an argparse Namespace, no hydra config), converted by scripts/convert_fairseq_checkpoint.py: fairseq-eval-lm with
the flags of fairseq's evaluation command, and the hub's ``score``, give what fairseq's own model gives.

And fastai's pretrained AWD-LSTM: the key table (``convert.convert_fastai_awd_lstm_state``) puts a state dict of
fastai's shape into ``adaptive_lstm_lm`` (``--arch lstm_awd_ptb``), whose scores then equal fastai's forward pass
computed with torch's LSTMs; scripts/convert_fastai_awd_lstm.py writes it as a checkpoint fairseq's loader reads. docs/released_models.md says what this does and does not show about the full-size files."""

import pickle
import shutil

import pytest
import torch
import torch.nn.functional as F
from fairseq import checkpoint_utils, options
from fairseq.models.transformer_lm import TransformerLanguageModel
from fairseq_cli import preprocess, train

from fairseq_adaptive.convert import convert_fastai_awd_lstm_state, fastai_rows
from fairseq_adaptive.models.adaptive_lm import AdaptiveLanguageModel

from .helpers import LM_TRAIN, USER_DIR, build_lstm, evaluate_lm, load_script, run_cli

CUTOFF = "200,800"  # three bands over the tiny corpus's 3,160 words, as the released models have three
TINY_BODY = ["--decoder-layers", "2", "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
             "--decoder-attention-heads", "2"]
ADAPTIVE = ["--adaptive-input", "--adaptive-input-factor", "4", "--adaptive-input-cutoff", CUTOFF,
            "--adaptive-softmax-factor", "4", "--adaptive-softmax-cutoff", CUTOFF, "--tie-adaptive-weights"]
LAYOUTS = {
    # transformer_lm_wiki103 sets --tie-adaptive-proj itself; sinusoidal positions
    "wiki103": ["--arch", "transformer_lm_wiki103", *ADAPTIVE],
    # transformer_lm_gbw: no --tie-adaptive-proj; learned positions, so that between them the two layouts cover both
    # kinds of position (fairseq's documents do not say which the released Billion Word model has)
    "gbw": ["--arch", "transformer_lm_gbw", *ADAPTIVE, "--decoder-learned-pos"],
}
# fairseq's evaluation command (--sample-break-mode complete --context-window 2560 --softmax-batch 1024, 3072 tokens
# per sample) at the tiny corpus's 64 tokens per sample
EVAL = ["--sample-break-mode", "complete", "--context-window", "32", "--softmax-batch", "256"]


@pytest.fixture(scope="module")
def sentences(lm_data, tmp_path_factory):
    """The test text one sentence a line, binarised with the training dictionary: complete mode skips a line longer
    than the model's positions (the bundled test text is one long line), so each must fit."""
    root = tmp_path_factory.mktemp("sentences")
    text = (lm_data.parent / "test.txt").read_text(encoding="utf-8")
    lines = [s.strip() + " ." for line in text.splitlines() for s in line.split(" . ") if 0 < len(s.split()) < 50]
    (root / "test.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_cli(preprocess.cli_main, ["--only-source", "--srcdict", lm_data / "dict.txt", "--testpref", root / "test.txt",
                                  "--destdir", root / "bin", "--workers", "1"])
    return root / "bin", lines


def as_released(trained, argv, dest):
    """``trained`` (a checkpoint of today's fairseq) as fairseq's released files store theirs: the training's
    argparse Namespace under ``args``, no ``cfg``, no optimizer state."""
    state = torch.load(trained, weights_only=False)
    args = options.parse_args_and_arch(options.get_training_parser(), [str(a) for a in argv])
    args.user_dir = None  # the released files name no plugin
    torch.save({"args": args, "model": state["model"], "optimizer_history": state["optimizer_history"],
                "extra_state": state["extra_state"], "last_optimizer_state": None}, dest)


@pytest.mark.cli
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_released_layout_converts_to_the_same_scores(lm_data, sentences, tmp_path, layout):
    argv = [lm_data, *LM_TRAIN, "--task", "language_modeling", *TINY_BODY, *LAYOUTS[layout], "--criterion",
            "adaptive_loss", "--ddp-backend", "legacy_ddp", "--save-dir", tmp_path / "fairseq", "--max-update", "3",
            "--no-epoch-checkpoints"]
    run_cli(train.cli_main, argv)
    folder = tmp_path / "models"  # as the released archives hold them: model.pt beside its dict.txt
    folder.mkdir()
    shutil.copy(lm_data / "dict.txt", folder / "dict.txt")
    as_released(tmp_path / "fairseq" / "checkpoint_last.pt", argv, folder / "model.pt")
    assert "cfg" not in torch.load(folder / "model.pt", weights_only=False)
    load_script("convert_fairseq_checkpoint").main([str(folder / "model.pt"), str(folder / "converted.pt")])

    data, lines = sentences
    theirs = evaluate_lm(data, folder / "model.pt", *EVAL)
    ours = evaluate_lm(data, folder / "converted.pt", *EVAL)
    vocab = sum(1 for _ in open(lm_data / "dict.txt")) + 4
    assert 1 < float(theirs["perplexity"]) < vocab  # tokens were scored
    assert float(ours["loss"]) == pytest.approx(float(theirs["loss"]), rel=1e-5)
    assert float(ours["perplexity"]) == pytest.approx(float(theirs["perplexity"]), rel=1e-5)

    fairseq_hub = TransformerLanguageModel.from_pretrained(str(folder), "model.pt")
    our_hub = AdaptiveLanguageModel.from_pretrained(str(folder), "converted.pt", user_dir=USER_DIR)
    fairseq_hub.eval()
    our_hub.eval()
    sentence = next(line for line in lines if len(line.split()) >= 30)
    expected, got = fairseq_hub.score(sentence), our_hub.score(sentence)
    assert got["positional_scores"].numel() == len(sentence.split())  # every word (fairseq's score drops the </s>)
    torch.testing.assert_close(got["positional_scores"], expected["positional_scores"], rtol=1e-5, atol=1e-5)

    # the layout the converted model has: word rows tied to the adaptive input's bands throughout; the tails'
    # projections tied to the input's (wiki103) or their own (gbw); positions learned only where fairseq's were
    decoder = our_hub.models[0].decoder
    softmax, bands = decoder.scorer.softmax, decoder.embed_tokens.embedding.embeddings
    assert softmax.head_words is bands[0][0].weight
    for i, tail in enumerate(softmax.tail):
        assert tail.words is bands[i + 1][0].weight
        assert (tail.proj is bands[i + 1][1].weight) == (layout == "wiki103")
    assert hasattr(decoder.embed_positions, "weight") == (layout == "gbw")


# ---------------------------------------------------------------------------------------------- fastai's AWD-LSTM
def fastai_lm_state(vocab: int, emb: int, hidden: int, layers: int, generator) -> dict:
    """Random weights under the names and shapes of fastai's ``SequentialRNN(AWD_LSTM, LinearDecoder)`` (tied, with
    an output bias): layer ``l`` reads ``emb`` (the first) or ``hidden`` units and gives ``hidden`` (the last:
    ``emb``). fastai v1 files also hold ``module.weight_hh_l0``, the last weight-dropped copy (here: zeros)."""
    state = {"0.encoder.weight": torch.randn(vocab, emb, generator=generator) * 0.3}
    state["0.encoder_dp.emb.weight"] = state["1.decoder.weight"] = state["0.encoder.weight"]
    state["1.decoder.bias"] = torch.randn(vocab, generator=generator) * 0.3
    sizes = [emb] + [hidden] * (layers - 1) + [emb]
    for l, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        for name, shape in (("weight_hh_l0_raw", (4 * n_out, n_out)), ("module.weight_ih_l0", (4 * n_out, n_in)),
                            ("module.bias_ih_l0", (4 * n_out,)), ("module.bias_hh_l0", (4 * n_out,))):
            state[f"0.rnns.{l}.{name}"] = torch.randn(*shape, generator=generator) * 0.3
        state[f"0.rnns.{l}.module.weight_hh_l0"] = torch.zeros(4 * n_out, n_out)
    return state


def test_fastai_awd_lstm_weights_map_exactly(lm_data):
    emb, hidden, layers = 8, 12, 3  # fastai's WikiText-103 model: 400, 1152, 3
    model = build_lstm("lstm_awd_ptb", ["--decoder-embed-dim", str(emb), "--decoder-hidden-dim", str(hidden),
                                        "--decoder-layers", str(layers)], data=lm_data).model.eval()
    vocab = len(model.decoder.dictionary)
    fastai = fastai_lm_state(vocab, emb, hidden, layers, torch.Generator().manual_seed(0))
    model.load_state_dict(convert_fastai_awd_lstm_state(fastai), strict=True)  # every weight has its place, once

    tokens = torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # fastai's forward at evaluation: the table unscaled, its LSTMs (torch's) from a zero state, the tied decoder
        x = F.embedding(fastai_rows(vocab)[tokens], fastai["0.encoder.weight"])
        for l in range(layers):
            lstm = torch.nn.LSTM(x.size(-1), fastai[f"0.rnns.{l}.weight_hh_l0_raw"].size(1), batch_first=True)
            lstm.load_state_dict({"weight_ih_l0": fastai[f"0.rnns.{l}.module.weight_ih_l0"],
                                  "weight_hh_l0": fastai[f"0.rnns.{l}.weight_hh_l0_raw"],
                                  "bias_ih_l0": fastai[f"0.rnns.{l}.module.bias_ih_l0"],
                                  "bias_hh_l0": fastai[f"0.rnns.{l}.module.bias_hh_l0"]})
            x = lstm(x)[0]
        expected = F.log_softmax(F.linear(x, fastai["1.decoder.weight"], fastai["1.decoder.bias"]), -1)
        expected = expected[..., fastai_rows(vocab)]  # fairseq's ids
        decoder = model.decoder
        whole = decoder.get_normalized_probs(decoder(tokens), log_probs=True)
        # in two segments of one stream, the state carried over as fastai carries its hidden state between batches
        segments = [decoder.get_normalized_probs(decoder(part, stream=("test", 0, step)), log_probs=True)
                    for step, part in enumerate((tokens[:, :5], tokens[:, 5:]))]
    torch.testing.assert_close(whole, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat(segments, 1), expected, rtol=1e-5, atol=1e-5)


def test_convert_fastai_awd_lstm_script_writes_a_checkpoint_that_scores_as_fastai(tmp_path):
    """scripts/convert_fastai_awd_lstm.py on a fastai-shaped file pair (``learn.save``'s {"model": ...} and a
    pickled itos list): the checkpoint loads through fairseq's loader and scores as the fastai weights do; a
    vocabulary of another size, or one without fastai's special tokens, is refused before anything is written."""
    emb, hidden, layers, vocab = 8, 12, 3, 40
    fastai = fastai_lm_state(vocab, emb, hidden, layers, torch.Generator().manual_seed(0))
    torch.save({"model": fastai, "opt": None}, tmp_path / "lstm_fwd.pth")
    itos = ["xxunk", "xxpad", "xxbos", "xxeos"] + [f"w{i}" for i in range(vocab - 4)]
    (tmp_path / "itos.pkl").write_bytes(pickle.dumps(itos))
    script = load_script("convert_fastai_awd_lstm")
    for bad, message in ((itos[:-1], "different models"), (["a", "b", "c", "d"] + itos[4:], "not fastai's")):
        (tmp_path / "bad.pkl").write_bytes(pickle.dumps(bad))
        with pytest.raises(SystemExit, match=message):
            script.main([str(tmp_path / "lstm_fwd.pth"), str(tmp_path / "bad.pkl"), str(tmp_path / "bad_out")])
        assert not (tmp_path / "bad_out").exists()
    script.main([str(tmp_path / "lstm_fwd.pth"), str(tmp_path / "itos.pkl"), str(tmp_path / "out")])
    assert (tmp_path / "out" / "dict.txt").read_text().split()[0] == "w0"
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(tmp_path / "out" / "model.pt")],
                                                                 arg_overrides={"data": str(tmp_path / "out")})
    model = models[0].eval()
    state = model.state_dict()
    expected = convert_fastai_awd_lstm_state(fastai)
    assert all(torch.equal(state[k], v) for k, v in expected.items())
