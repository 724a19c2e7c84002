"""The LSTM language model: the fused stack against step-by-step cells, AWD-LSTM's regularisers as their definitions
say, AR/TAR against their formula, state across segments and in incremental decoding, counts, and train -> eval-lm
-> generate through fairseq's CLIs."""

import io

import pytest
import torch
import torch.nn.functional as F
from fairseq_cli import interactive, train

from fairseq_adaptive.criterions.adaptive_cross_entropy import activation_penalties
from fairseq_adaptive.models.lm_base import ACTIVATIONS, RegularizedActivations
from fairseq_adaptive.models.counting import count_parameters
from fairseq_adaptive.models.lstm_lm import LSTMLanguageModel
from fairseq_adaptive.modules.lstm import LSTMStack, count_lstm_parameters, locked_dropout, word_dropout

from .helpers import (
    STREAM_TRAIN, USER_DIR, assert_incremental_equals_full, build_lm, build_lstm, evaluate_streams, load_script,
    run_cli, stream_length,
)


def stack(**kw):
    torch.manual_seed(0)
    return LSTMStack(**{"input_dim": 6, "hidden_dim": 10, "output_dim": 6, "layers": 3, **kw}).double()


def cells(lstm: torch.nn.LSTM, x, w_hh=None):
    """One layer step by step with ``LSTMCell`` arithmetic (the reference of the fused call)."""
    h = x.new_zeros(x.size(0), lstm.hidden_size)
    c = torch.zeros_like(h)
    outs = []
    for t in range(x.size(1)):
        gates = x[:, t] @ lstm.weight_ih_l0.t() + lstm.bias_ih_l0 + h @ (lstm.weight_hh_l0 if w_hh is None
                                                                       else w_hh).t() + lstm.bias_hh_l0
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs, 1)


def test_state_carried_across_two_segments_equals_one_pass():
    net = stack().eval()
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    whole, _, _ = net(x)
    first, state, _ = net(x[:, :4])
    second, _, _ = net(x[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    fresh, _, _ = net(x[:, 4:])
    assert (fresh - second).abs().max() > 1e-6  # the comparison can fail


def test_weight_drop_uses_one_mask_for_every_step_and_is_off_in_eval():
    net = stack(layers=1, hidden_dim=6, weight_drop=0.5).train()
    layer = net.layers[0]
    x = torch.randn(3, 7, 6, dtype=torch.float64)
    torch.manual_seed(5)
    out, _, _ = net(x)
    torch.manual_seed(5)
    dropped = F.dropout(layer.weight_hh_l0, 0.5, True)  # the same draw: one mask for the whole segment
    torch.testing.assert_close(out, cells(layer, x, dropped))
    assert (out - cells(layer, x)).abs().max() > 1e-3
    net.eval()
    torch.testing.assert_close(net(x)[0], cells(layer, x))
    out.sum().backward()
    assert layer.weight_hh_l0.grad is not None and layer.weight_hh_l0.grad.abs().sum() > 0


def test_locked_dropout_shares_its_mask_across_time():
    x = torch.ones(4, 9, 16)
    y = locked_dropout(x, 0.5, True)
    assert torch.equal(y, y[:, :1].expand_as(y))  # the same at every step
    assert set(y.unique().tolist()) <= {0.0, 2.0} and not torch.equal(y[0], y[1])
    assert torch.equal(locked_dropout(x, 0.5, False), x)


def test_word_dropout_drops_whole_words():
    tokens = torch.tensor([[4, 5, 4, 6], [6, 4, 7, 5]])
    embedded = torch.ones(2, 4, 3)
    torch.manual_seed(1)
    out = word_dropout(tokens, embedded, 10, 0.5, True)
    for w in (4, 5, 6, 7):
        rows = out[tokens == w]
        assert torch.equal(rows, rows[:1].expand_as(rows))  # one decision per word, wherever it occurs
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(word_dropout(tokens, embedded, 10, 0.5, False), embedded)


def test_ar_tar_against_the_formula():
    torch.manual_seed(0)
    dropped, raw = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    keep = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    got = activation_penalties({ACTIVATIONS: RegularizedActivations(dropped, raw)}, keep, alpha=2.0, beta=1.0)
    ar = sum(float((dropped[b, t] ** 2).sum()) for b in range(2) for t in range(5) if keep[b, t]) / (9 * 3)
    pairs = [(b, t) for b in range(2) for t in range(1, 5) if keep[b, t] and keep[b, t - 1]]
    tar = sum(float(((raw[b, t] - raw[b, t - 1]) ** 2).sum()) for b, t in pairs) / (len(pairs) * 3)
    assert got.item() == pytest.approx(2.0 * ar + 1.0 * tar, rel=1e-6)


def test_ar_tar_in_half_precision_equals_fp32():
    """Under --fp16 the penalty's element count (tokens x units) alone is past half precision's range."""
    torch.manual_seed(0)
    dropped, raw = torch.randn(80, 70, 400), torch.randn(80, 70, 400)
    keep = torch.ones(80, 70, dtype=torch.bool)
    ref = activation_penalties({ACTIVATIONS: RegularizedActivations(dropped, raw)}, keep, 2.0, 1.0)
    half = activation_penalties({ACTIVATIONS: RegularizedActivations(dropped.half(), raw.half())}, keep, 2.0, 1.0)
    assert torch.isfinite(half) and half.item() == pytest.approx(ref.item(), rel=1e-3)


def test_counts():
    # AWD-LSTM on Penn Treebank: 24M (Merity et al. 2018), a 10,000-word table of 400 tied to the softmax, plus biases
    v = 10000
    awd = build_lstm("lstm_awd_ptb", vocab=v).model
    assert count_parameters(awd) == v * 400 + v + count_lstm_parameters(400, 1150, 400, 3)
    assert round(count_lstm_parameters(400, 1150, 400, 3) / 1e6, 2) == 20.21
    # DeFINE Table 1a's context models: 4 layers of 1,024 units whose first reads m and last outputs m
    assert [round(count_lstm_parameters(m, 1024, m, 4) / 1e6, 2) for m in (256, 384, 512)] == [23.36, 24.73, 26.24]
    assert count_parameters(stack()) == count_lstm_parameters(6, 10, 6, 3)


MODELS = {
    "adaptive input": ["--arch", "lstm_tiny", "--adaptive-input", "--adaptive-input-cutoff", "300,1000",
                       "--adaptive-softmax-cutoff", "300,1000", "--tie-adaptive-weights", "--tie-adaptive-proj"],
    "define": ["--arch", "lstm_define_tiny"],
}
AWD = ["--weight-drop", "0.3", "--input-dropout", "0.2", "--hidden-dropout", "0.2", "--dropout", "0.2",
       "--word-dropout", "0.1", "--ar-alpha", "2", "--tar-beta", "1"]


@pytest.mark.cli
@pytest.mark.parametrize("model", sorted(MODELS))
def test_train_eval_generate(lm_data, tmp_path, model, capsys, monkeypatch, caplog):
    ckpt = tmp_path / "ckpt"
    run_cli(train.cli_main, [lm_data, *STREAM_TRAIN, *MODELS[model], *AWD, "--save-dir", ckpt, "--max-update", "8",
                             "--log-format", "simple", "--log-interval", "4"])
    assert "ar_tar" in caplog.text  # the regularisers took part
    last = ckpt / "checkpoint_last.pt"
    caplog.clear()
    result = evaluate_streams(lm_data, last)
    counts = [int(r.getMessage().split()[1].replace(",", "")) for r in caplog.records
              if r.getMessage().startswith("Evaluated ")]
    assert counts == [stream_length(lm_data, "test") - 1] and result["perplexity"] < 10 ** 4
    # the loss by word frequency scores the same streams (state carried) and adds up to eval-lm's loss
    rows = load_script("freq_loss").main([str(lm_data), str(last), "--names", "m", "--cpu", "--batch-size", "2",
                                          "--tokens-per-sample", "8"])["m"]
    assert sum(r["tokens"] for r in rows.values()) == counts[0]
    mean = sum(r["tokens"] * r["loss"] for r in rows.values() if r["tokens"]) / counts[0]
    assert mean == pytest.approx(float(result["loss"]), rel=1e-5)
    monkeypatch.setattr("sys.stdin", io.StringIO("The President of the United States\n"))
    run_cli(interactive.cli_main, [lm_data, "--task", "bptt_lm", "--user-dir", USER_DIR, "--path", last, "--cpu",
                                   "--beam", "2", "--min-len", "9", "--max-len-b", "12"])
    hyps = [line.split("\t") for line in capsys.readouterr().out.splitlines() if line.startswith("H-")]
    assert len(hyps) == 1 and hyps[0][2].startswith("The President of the United States")


@pytest.mark.cli
def test_incremental_decoding_equals_the_full_pass(lm_data, tmp_path):
    ckpt = tmp_path / "ckpt"
    run_cli(train.cli_main, [lm_data, *STREAM_TRAIN, *MODELS["define"], "--save-dir", ckpt, "--max-update", "3"])
    hub = LSTMLanguageModel.from_pretrained(str(ckpt), "checkpoint_last.pt", str(lm_data), user_dir=USER_DIR)
    hub.eval()
    assert_incremental_equals_full(hub)


def test_define_without_reduction_feeds_k_to_the_first_layer():
    # lstm_define_tiny: n=16, k=64, m=32; Table 6b's "- Reduce" hands the LSTM DeFINE's k-wide output
    reduced = build_lstm("lstm_define_tiny", vocab=300).model
    kept = build_lstm("lstm_define_tiny", ["--define-no-reduce"], vocab=300).model
    first = kept.decoder.body.layers[0]
    assert first.input_size == 64 and kept.decoder.body.layers[-1].hidden_size == 32
    assert reduced.decoder.body.layers[0].input_size == 32
    unit = kept.decoder.embed_tokens.define_parameters() - reduced.decoder.embed_tokens.define_parameters()
    assert count_parameters(kept) - count_parameters(reduced) == unit + 4 * 64 * (64 - 32)  # W_ih reads 64, not 32


def test_define_without_reduction_is_refused_where_the_body_runs_at_m():
    with pytest.raises(ValueError, match="--define-no-reduce feeds DeFINE's k-wide output .* drop --define-no-reduce"):
        build_lm("adaptive_lm_wiki103_define_n64", ["--define-no-reduce", "--adaptive-softmax-cutoff", "200,500",
                                                    "--adaptive-input-cutoff", "200,500"], vocab=1000)
