"""Every path a language-model user takes after training, through fairseq's real entry points on the bundled corpus:
fairseq-interactive (sampling and beam), the Python hub interface (sample, score, generate) and fairseq-eval-lm in
every --sample-break-mode, with --context-window, --output-word-probs and --output-word-stats; for the adaptive,
DeFINE and full-softmax models."""

import io
import logging
import math
import re

import pytest
import torch
from fairseq_cli import interactive, train

from fairseq_adaptive.models.adaptive_lm import AdaptiveLanguageModel

from .helpers import LM_TRAIN, USER_DIR, evaluate_lm, load_script, run_cli, write_text_sample

pytestmark = pytest.mark.cli  # every test reads a model that fairseq-train wrote (the trained fixture)

MODELS = {
    "adaptive": ["--arch", "adaptive_lm_tiny"],
    "define": ["--arch", "adaptive_lm_define_tiny"],
    "full softmax": ["--arch", "adaptive_lm_define_std_tiny", "--define-dim", "0"],
}
PROMPT = "The President of the United States"


@pytest.fixture(scope="module", params=sorted(MODELS))
def trained(request, lm_data, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("paths") / "ckpt"
    run_cli(train.cli_main, [lm_data, *LM_TRAIN, "--task", "adaptive_language_modeling",
                             "--criterion", "adaptive_cross_entropy", *MODELS[request.param],
                             "--save-dir", ckpt, "--max-update", "6", "--no-epoch-checkpoints"])
    return request.param, ckpt


def interact(data, ckpt, capsys, monkeypatch, *extra):
    monkeypatch.setattr("sys.stdin", io.StringIO(PROMPT + "\n"))
    run_cli(interactive.cli_main, [data, "--task", "language_modeling", "--user-dir", USER_DIR, "--path",
                                   ckpt / "checkpoint_last.pt", "--cpu", "--min-len", "9", "--max-len-b", "12", "--seed", "3", *extra])
    return [line.split("\t") for line in capsys.readouterr().out.splitlines() if line.startswith("H-")]


def test_interactive_sampling_and_beam(lm_data, trained, capsys, monkeypatch):
    _, ckpt = trained
    words = set(line.split()[0] for line in open(lm_data / "dict.txt", encoding="utf-8"))
    for extra in (["--sampling", "--sampling-topk", "10", "--beam", "1"], ["--beam", "2", "--nbest", "2"]):
        hyps = interact(lm_data, ckpt, capsys, monkeypatch, *extra)
        assert len(hyps) == (2 if "--nbest" in extra else 1)
        for _, score, text in hyps:
            assert text.startswith(PROMPT) and len(text.split()) > len(PROMPT.split())
            assert math.isfinite(float(score)) and float(score) < 0
            assert set(text.split()[len(PROMPT.split()):]) <= words | {"<unk>"}


def test_hub_interface_sample_score_generate(lm_data, trained):
    _, ckpt = trained
    hub = AdaptiveLanguageModel.from_pretrained(str(ckpt), "checkpoint_last.pt", str(lm_data), user_dir=USER_DIR)
    hub.eval()
    torch.manual_seed(0)
    text = hub.sample(PROMPT, sampling=True, sampling_topk=10, min_len=9, max_len_b=12)
    assert text.startswith(PROMPT) and len(text.split()) > len(PROMPT.split())
    beam = hub.generate(hub.encode(PROMPT), beam=2, min_len=9, max_len_b=12)
    assert len(beam) == 2 and all(h["tokens"].numel() > len(PROMPT.split()) for h in beam)

    scored = hub.score(PROMPT)
    tokens = hub.encode(PROMPT)[:-1]  # the words, without the end-of-sentence symbol the scorer strips
    # the positional scores are the model's log-probabilities of each word given the ones before it
    model = hub.models[0]
    with torch.no_grad():
        prev = torch.cat([tokens.new_tensor([hub.task.dictionary.eos()]), tokens[:-1]]).unsqueeze(0)
        lprobs = model.get_normalized_probs(model(prev), log_probs=True)[0]
    expected = lprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(scored["positional_scores"], expected, rtol=1e-4, atol=1e-4)
    assert torch.allclose(lprobs.exp().sum(-1), torch.ones(len(tokens)), atol=1e-4)  # a real distribution


@pytest.fixture(scope="module")
def sentences(lm_data):
    """The test text cut into sentences, one a line, documents of four sentences apart by an empty line: every
    sentence fits a 64-token sample, so each break mode scores every token. Binarised with the training dictionary."""
    from fairseq_cli import preprocess

    root = lm_data.parent / "sentences"
    root.mkdir(exist_ok=True)
    text = (lm_data.parent / "test.txt").read_text(encoding="utf-8")
    cut = [s.strip() + " ." for line in text.splitlines() for s in line.split(" . ") if 0 < len(s.split()) < 50]
    lines = [line for i, sentence in enumerate(cut) for line in ([sentence, ""] if i % 4 == 3 else [sentence])]
    (root / "test.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_cli(preprocess.cli_main, ["--only-source", "--srcdict", lm_data / "dict.txt", "--testpref",
                                  root / "test.txt", "--destdir", root / "bin", "--workers", "1"])
    return root / "bin", sum(len(line.split()) + 1 for line in lines), lines.count("")


def evaluated_tokens(caplog) -> int:
    found = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Evaluated ")]
    return int(found[-1].split()[1].replace(",", ""))


def test_eval_lm_every_break_mode(trained, sentences, caplog):
    name, ckpt = trained
    data, n_tokens, n_documents = sentences
    vocab = sum(1 for _ in open(data / "dict.txt")) + 4
    results = {}
    for mode in ("none", "eos", "complete", "complete_doc"):
        with caplog.at_level(logging.INFO):
            results[mode] = evaluate_lm(data, ckpt / "checkpoint_last.pt", "--sample-break-mode", mode)
        # every token scored once; complete_doc drops the empty lines that separate documents
        assert evaluated_tokens(caplog) == n_tokens - (n_documents if mode == "complete_doc" else 0), (name, mode)
        assert math.isfinite(results[mode]["perplexity"]) and 1 < results[mode]["perplexity"] < vocab, (name, mode)
    windowed = evaluate_lm(data, ckpt / "checkpoint_last.pt", "--context-window", "32")
    assert windowed["perplexity"] != results["none"]["perplexity"]
    assert len({round(float(r["loss"]), 6) for r in results.values()}) > 1  # the modes cut the text differently

    caplog.clear()
    with caplog.at_level(logging.INFO):
        probs = evaluate_lm(data, ckpt / "checkpoint_last.pt", "--sample-break-mode", "eos", "--output-word-probs",
                         "--output-word-stats")
    assert float(probs["loss"]) == pytest.approx(float(results["eos"]["loss"]), rel=1e-5)
    messages = [r.getMessage() for r in caplog.records]
    # --output-word-probs: one line per sentence (its id, then each word with its log-probability)
    word_probs = [float(v) for m in messages if re.match(r"\d+ ", m) for v in re.findall(r" \[(-?[\d.]+)\]", m)]
    assert len(word_probs) == n_tokens and all(v <= 0 for v in word_probs)
    # --output-word-stats: word, count, summed log-probability, ... one line per word type
    stats = [row for row in (m.split("\t") for m in messages) if len(row) == 6 and row[3] in ("True", "False")]
    assert len(stats) > 50 and all(int(row[1]) >= 1 and float(row[2]) <= 0 for row in stats)


# ------------------------------------------------------------------------------------------------- bad input
def preprocess_text(root, chars):
    from fairseq_cli import preprocess

    root.mkdir()
    write_text_sample(root, {"train": chars, "test": 5_000})
    run_cli(preprocess.cli_main, ["--only-source", "--trainpref", root / "train.txt", "--testpref",
                                  root / "test.txt", "--destdir", root / "bin", "--workers", "1"])
    return root / "bin"


@pytest.mark.parametrize("chars", [30_000, 200_000])  # a smaller and a larger dictionary than the model's
def test_eval_lm_on_another_dictionary_says_so(lm_data, trained, tmp_path, chars):
    _, ckpt = trained
    other = preprocess_text(tmp_path / "other", chars)
    size, trained_size = sum(1 for _ in open(other / "dict.txt")) + 4, sum(1 for _ in open(lm_data / "dict.txt")) + 4
    assert size != trained_size
    with pytest.raises(ValueError, match=f"has {size:,} entries, but the checkpoint was trained with a "
                                         f"{trained_size:,}-entry dictionary.*--srcdict"):
        evaluate_lm(other, ckpt / "checkpoint_last.pt")



def test_loss_by_frequency_adds_up_to_eval_lms_loss(trained, sentences, tmp_path, capsys):
    _, ckpt = trained
    data, n_tokens, _ = sentences
    rows = load_script("freq_loss").main([str(data), str(ckpt / "checkpoint_last.pt"), "--names", "m", "--cpu",
                                          "--tokens-per-sample", "64", "--plot", str(tmp_path / "f.png")])["m"]
    assert sum(r["tokens"] for r in rows.values()) == n_tokens and rows["</s>"]["tokens"] > 0
    mean = sum(r["tokens"] * r["loss"] for r in rows.values() if r["tokens"]) / n_tokens
    assert mean == pytest.approx(float(evaluate_lm(data, ckpt / "checkpoint_last.pt")["loss"]), rel=1e-5)
    frequent, rare = rows[">= 10,000"] if rows[">= 10,000"]["tokens"] else rows["1,000-9,999"], rows["0-9"]
    assert frequent["loss"] < rare["loss"]  # a trained model finds frequent words easier
    assert (tmp_path / "f.png").stat().st_size > 1000 and "| all (eval-lm's loss) |" in capsys.readouterr().out
