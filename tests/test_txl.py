"""Transformer-XL: the body against direct computations (relative shift, clamp_len, same_length, memory), the clustered
softmax with output biases, the bptt_lm task's streams, and train -> eval-lm -> generate through fairseq's CLIs."""

import io
import logging
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from fairseq_cli import interactive, train

from fairseq_adaptive.models.counting import build_arch, count_parameters, dictionary_of_size
from fairseq_adaptive.models.txl_lm import TransformerXLLanguageModel
from fairseq_adaptive.modules.adaptive_softmax import AdaptiveSoftmax
from fairseq_adaptive.modules.transformer_xl import (
    TransformerXL, blocked, count_layer_parameters, next_memory, relative_shift, sinusoid,
)
from fairseq_adaptive.tasks.bptt_lm import StreamDataset

from .helpers import (
    STREAM_TRAIN, USER_DIR, assert_incremental_equals_full, build_txl, evaluate_streams, finish, free_port,
    last_weights, run_cli, stream_length,
)


def body(**kw):
    torch.manual_seed(0)
    args = dict(dim=8, layers=2, heads=2, head_dim=4, ffn_dim=16, mem_len=6)
    args.update(kw)
    return TransformerXL(**args).double().eval()


# ------------------------------------------------------------------------------------------------------- the body
def test_relative_shift_matches_the_direct_computation():
    torch.manual_seed(0)
    b, h, t, m, d = 2, 3, 5, 4, 6
    k = m + t
    q, r = torch.randn(b, h, t, d, dtype=torch.float64), torch.randn(k, d, dtype=torch.float64)  # r[p]: distance k-1-p
    shifted = relative_shift(q @ r.t())
    checked = 0
    for i in range(t):
        for j in range(k):
            if i + m - j >= 0:
                torch.testing.assert_close(shifted[..., i, j], q[..., i, :] @ r[k - 1 - (i + m - j)])
                checked += 1
    assert checked == t * m + t * (t + 1) // 2


def test_masks_on_a_hand_built_case():
    # 3 queries after 2 memory positions; with same_length and mem_len 3 each query sees 3 keys (itself included)
    expected_causal = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    expected_same = torch.tensor([[0, 0, 0, 1, 1], [1, 0, 0, 0, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(blocked(3, 2, False, 3), expected_causal)
    assert torch.equal(blocked(3, 2, True, 3), expected_same)
    assert (~blocked(3, 2, True, 3)).sum(1).tolist() == [3, 3, 3]


def reference_layer_output(net, x, memory, clamp_len, same_length, mem_len):
    """The first layer's attention output computed score by score from Sec. 3.3 (no shift, no SDPA)."""
    att = net.layers[0].attention
    h = x if memory is None else torch.cat([memory, x], 1)
    b, t, m = x.size(0), x.size(1), h.size(1) - x.size(1)
    hd, heads = att.head_dim, att.heads
    w = att.qkv.weight
    q = (x @ w[: heads * hd].t()).view(b, t, heads, hd)
    key = (h @ w[heads * hd : 2 * heads * hd].t()).view(b, m + t, heads, hd)
    val = (h @ w[2 * heads * hd :].t()).view(b, m + t, heads, hd)
    u, v = net.u[0], net.v[0]
    scores = torch.full((b, heads, t, m + t), float("-inf"), dtype=x.dtype)
    for i in range(t):
        for j in range(m + t):
            dist = i + m - j
            if dist < 0 or (same_length and dist >= mem_len):
                continue
            enc = sinusoid(torch.tensor([min(dist, clamp_len) if clamp_len > 0 else dist]), x.size(-1)).to(x.dtype)
            r = att.pos(enc).view(heads, hd)
            scores[:, :, i, j] = ((q[:, i] + u) * key[:, j]).sum(-1) + ((q[:, i] + v) * r).sum(-1)
    probs = (scores / math.sqrt(hd)).softmax(-1)
    out = torch.einsum("bhij,bjhd->bihd", probs, val).reshape(b, t, heads * hd)
    return att.norm(x + att.out(out))


@pytest.mark.parametrize("clamp_len,same_length", [(-1, False), (2, False), (-1, True), (3, True)])
def test_attention_equals_the_score_by_score_formula(clamp_len, same_length):
    net = body(layers=1, clamp_len=clamp_len, same_length=same_length, mem_len=4)
    torch.manual_seed(1)
    x, memory = torch.randn(2, 5, 8, dtype=torch.float64), torch.randn(2, 3, 8, dtype=torch.float64)
    att = net.layers[0].attention
    distances = torch.arange(7, -1, -1)
    if clamp_len > 0:
        distances = distances.clamp(max=clamp_len)
    ours = att(x, memory, sinusoid(distances, 8).double(), net.u[0], net.v[0], blocked(5, 3, same_length, 4))
    torch.testing.assert_close(ours, reference_layer_output(net, x, memory, clamp_len, same_length, 4))


def test_two_segments_with_memory_equal_one_pass():
    net = body(mem_len=6)
    x = torch.randn(2, 10, 8, dtype=torch.float64)
    whole, _ = net(x)
    first, inputs = net(x[:, :4])
    second, _ = net(x[:, 4:], next_memory(None, inputs, 6))
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    # a memory shorter than the context changes the result: the comparison can fail
    short, _ = net(x[:, 4:], next_memory(None, inputs, 2))
    assert (short - second).abs().max() > 1e-6


def test_no_gradient_reaches_the_memory():
    net = body().train()
    x1 = torch.randn(2, 4, 8, dtype=torch.float64, requires_grad=True)
    _, inputs = net(x1)
    memory = next_memory(None, inputs, 6)
    assert not any(m.requires_grad for m in memory)
    out, _ = net(torch.randn(2, 3, 8, dtype=torch.float64), memory)
    (out * torch.randn_like(out)).sum().backward()
    assert x1.grad is None and net.u.grad is not None and net.u.grad.abs().sum() > 0


def test_shared_and_per_layer_rel_bias_counts():
    per_layer, shared = body(layers=3), body(layers=3, shared_rel_bias=True)
    closed = 3 * count_layer_parameters(8, 2, 4, 16)
    assert count_parameters(per_layer) == closed + 3 * 2 * 2 * 4
    assert count_parameters(shared) == closed + 2 * 2 * 4


def test_same_length_needs_a_memory():
    with pytest.raises(ValueError, match="--same-length .* --mem-len > 0"):
        TransformerXL(8, 1, 2, 4, 16, same_length=True, mem_len=0)


# ------------------------------------------------------------------------------------------- the output layer
def test_clustered_softmax_tied_to_a_plain_table_with_biases():
    torch.manual_seed(0)
    table = torch.nn.Parameter(torch.randn(30, 6, dtype=torch.float64))
    sm = AdaptiveSoftmax(30, 6, [10, 20], factor=1, table=table, bias=True).double()
    with torch.no_grad():
        sm.word_bias.normal_()
        sm.cluster_bias.normal_()
    x, target = torch.randn(7, 6, dtype=torch.float64), torch.randint(0, 30, (7,))
    # Transformer-XL's clustered softmax written out: head over 10 words + 2 clusters, each tail over its 10 words
    head = F.log_softmax(x @ torch.cat([table[:10], sm.head_clusters]).t() + torch.cat([sm.word_bias[:10],
                                                                                       sm.cluster_bias]), -1)
    full = [head[:, :10]]
    for c in range(2):
        rows = slice(10 * (c + 1), 10 * (c + 2))
        full.append(head[:, 10 + c : 11 + c] + F.log_softmax(x @ table[rows].t() + sm.word_bias[rows], -1))
    expected = torch.cat(full, 1)
    torch.testing.assert_close(sm.get_log_prob(x), expected)
    torch.testing.assert_close(sm.target_log_prob(x, target), expected.gather(1, target[:, None]).squeeze(1))
    loss = sm.loss(x, target, ignore_index=-1)[0]
    torch.testing.assert_close(loss, -expected.gather(1, target[:, None]).sum())
    loss.backward()
    assert table.grad.abs().sum() > 0 and sm.word_bias.grad.abs().sum() > 0 and sm.cluster_bias.grad.abs().sum() > 0
    assert not list(sm.tail.parameters())  # clusters at full width: no projections
    dropped = AdaptiveSoftmax(30, 6, [10, 20], dropout=0.5, factor=1, table=table).train()
    assert all(tail.hidden(x) is x for tail in dropped.tail)  # the input is dropped once, by the layer, not again


# ----------------------------------------------------------------------------------------------- parameter counts
def test_txl_wiki103_base_counts():
    # fairseq's examples/truncated_bptt prints 151,123,537 for this model on its 267,744-word dictionary
    assert count_parameters(build_txl("txl_wiki103_base", vocab=267744).model) == 151_123_537
    shared = build_txl("txl_wiki103_base", ["--shared-rel-bias"], vocab=267735).model
    v, d = 267735, 410
    assert count_parameters(shared) == v * d + v + 3 * d + 3 + 16 * count_layer_parameters(d, 10, 41, 2100) + 2 * d


# ------------------------------------------------------------------------------------------------ the task's streams
@pytest.mark.parametrize("tokens,batch,shards,groups", [(5, 2, 1, 1), (4, 3, 2, 1), (7, 1, 1, 3), (3, 2, 2, 2)])
def test_streams_score_every_token_once(tokens, batch, shards, groups):
    stream = [torch.arange(0, 37), torch.arange(37, 101)]  # two lines of one text
    rows = {}
    for shard in range(shards):
        ds = StreamDataset(stream, "train", tokens, batch, shard, shards, groups)
        for k in range(len(ds)):
            _, key, segments = ds[k]
            assert (key.split, key.step, key.group) == ("train", k // groups, k % groups)
            group = key.group
            for i, (src, tgt) in enumerate(segments):
                assert torch.equal(tgt[:-1], src[1:]) and len(src) == len(tgt) <= tokens
                row = (shard * groups + group) * batch + i
                rows.setdefault(row, []).append(tgt)
    targets = torch.cat([torch.cat(rows[r]) for r in sorted(rows)])
    assert torch.equal(targets, torch.arange(1, 101))  # every token after the first, once, in stream order


# --------------------------------------------------------------------------------------- fairseq's entry points
MODELS = {
    "txl layers": ["--arch", "txl_tiny", "--adaptive-softmax-cutoff",
                   "300,1000", "--adaptive-softmax-factor", "1", "--tie-adaptive-weights"],
    "adaptive input": ["--arch", "txl_tiny", "--adaptive-input",
                       "--adaptive-input-cutoff", "300,1000", "--adaptive-softmax-cutoff", "300,1000",
                       "--tie-adaptive-weights", "--tie-adaptive-proj"],
    "define": ["--arch", "txl_define_tiny"],
}


@pytest.mark.cli
@pytest.mark.parametrize("model", sorted(MODELS))
def test_train_eval_generate(lm_data, tmp_path, model, capsys, monkeypatch, caplog):
    ckpt = tmp_path / "ckpt"
    run_cli(train.cli_main, [lm_data, *STREAM_TRAIN, *MODELS[model], "--save-dir", ckpt, "--max-update", "8"])
    last = ckpt / "checkpoint_last.pt"
    caplog.set_level(logging.INFO)
    with_memory = evaluate_streams(lm_data, last, "--model-overrides",
                                   '{"mem_len":24,"clamp_len":16,"same_length":True}')
    without = evaluate_streams(lm_data, last, "--model-overrides", '{"mem_len":0}')
    counts = [int(r.getMessage().split()[1].replace(",", "")) for r in caplog.records
              if r.getMessage().startswith("Evaluated ")]
    assert counts == [stream_length(lm_data, "test") - 1] * 2  # every token but the first, once
    assert math.isfinite(with_memory["perplexity"]) and with_memory["perplexity"] != without["perplexity"]
    monkeypatch.setattr("sys.stdin", io.StringIO("The President of the United States\n"))
    run_cli(interactive.cli_main, [lm_data, "--task", "bptt_lm", "--user-dir", USER_DIR, "--path", last, "--cpu",
                                   "--beam", "2", "--min-len", "9", "--max-len-b", "12"])
    hyps = [line.split("\t") for line in capsys.readouterr().out.splitlines() if line.startswith("H-")]
    assert len(hyps) == 1 and hyps[0][2].startswith("The President of the United States")
    assert len(hyps[0][2].split()) > 6


@pytest.mark.cli
def test_incremental_decoding_equals_the_full_pass(lm_data, tmp_path):
    ckpt = tmp_path / "ckpt"
    run_cli(train.cli_main, [lm_data, *STREAM_TRAIN, *MODELS["txl layers"], "--save-dir", ckpt, "--max-update", "3"])
    hub = TransformerXLLanguageModel.from_pretrained(str(ckpt), "checkpoint_last.pt", str(lm_data), user_dir=USER_DIR)
    hub.eval()
    assert_incremental_equals_full(hub)
    scored = hub.score("The President of the United States")["positional_scores"]
    assert scored.numel() == 6 and torch.isfinite(scored).all()  # each word once (not the sentence end)
    torch.manual_seed(0)
    sampled = hub.sample("The President of the United States", beam=1, sampling=True, max_len_b=12)
    assert sampled.startswith("The President of the United States") and len(sampled.split()) > 6


@pytest.mark.cli
def test_fairseq_truncated_bptt_task_is_refused(lm_data, tmp_path):
    with pytest.raises(ValueError, match="use --task bptt_lm"):
        run_cli(train.cli_main, [lm_data, *[a if a != "bptt_lm" else "truncated_bptt_lm" for a in STREAM_TRAIN],
                                 "--arch", "txl_tiny", "--save-dir", tmp_path, "--max-update", "1"])


@pytest.mark.cli
def test_plain_table_tie_needs_factor_1(lm_data, tmp_path):
    flags = [a if a != "1" else "4" for a in MODELS["txl layers"]]
    with pytest.raises(ValueError, match="--adaptive-softmax-factor 1"):
        run_cli(train.cli_main, [lm_data, *STREAM_TRAIN, *flags, "--save-dir", tmp_path, "--max-update", "1"])


# ------------------------------------------------------------------------------- data parallel, accumulation, resume
def train_process(data, save_dir, *extra):
    cmd = [sys.executable, "-m", "fairseq_cli.train", str(data), *STREAM_TRAIN, *MODELS["txl layers"], "--optimizer",
           "sgd", "--lr", "0.5", "--disable-validation", "--save-dir", str(save_dir), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.cli
def test_two_gloo_processes_equal_update_freq_2_with_memory(lm_data, tmp_path):
    """Three updates, so the memory of each stream group is carried twice: one memory per micro-batch of an update
    on one process must equal one memory per process."""
    init = f"tcp://127.0.0.1:{free_port()}"
    ranks = [train_process(lm_data, tmp_path / f"rank{r}", "--max-update", "3", "--distributed-world-size", "2",
                           "--distributed-rank", str(r), "--distributed-no-spawn", "--distributed-init-method", init,
                           "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp") for r in range(2)]
    for p in ranks:
        finish(p)
    finish(train_process(lm_data, tmp_path / "accumulated", "--max-update", "3", "--update-freq", "2"))
    finish(train_process(lm_data, tmp_path / "one", "--max-update", "3"))
    multi, accumulated, one = (last_weights(tmp_path / d) for d in ("rank0", "accumulated", "one"))
    for name, w in multi.items():
        torch.testing.assert_close(w, accumulated[name], atol=1e-6, rtol=1e-5, msg=name)
    assert max((multi[k] - one[k]).abs().max().item() for k in multi) > 1e-3  # the comparison can fail


@pytest.mark.cli
def test_resume_continues_the_stream(lm_data, tmp_path):
    """Stopped at update 3 and resumed to 6, training reads the segments an uninterrupted run reads (equal weights at
    --mem-len 0; the memory itself is not saved, so with a memory the first resumed segment sees none)."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    finish(train_process(lm_data, straight, "--max-update", "6", "--mem-len", "0"))
    finish(train_process(lm_data, resumed, "--max-update", "3", "--mem-len", "0"))
    halfway = last_weights(resumed)
    finish(train_process(lm_data, resumed, "--max-update", "6", "--mem-len", "0"))
    a, b = last_weights(straight), last_weights(resumed)
    for name, w in a.items():
        torch.testing.assert_close(w, b[name], atol=1e-6, rtol=1e-5, msg=name)
    assert max((a[k] - halfway[k]).abs().max().item() for k in a) > 1e-3


TIE_PROJS = ["--decoder-input-dim", "16", "--adaptive-softmax-cutoff", "50,100", "--adaptive-softmax-factor", "1",
             "--tie-adaptive-weights", "--output-bias"]


@pytest.mark.parametrize("setting", ["0,1,1", "1,0,0"])
def test_tie_projs_gives_each_cluster_the_input_projection_or_its_own(setting):
    """Transformer-XL's tie_projs over a plain table narrower than the model: a cluster marked 1 reads the input
    table's projection (the same parameter, transposed), one marked 0 its own; no shared projection before the
    softmax; every distribution still sums to 1."""
    model, _ = build_arch("txl_tiny", dictionary_of_size(200), [*TIE_PROJS, "--tie-projs", setting])
    decoder = model.decoder
    projection = decoder.embed_tokens.project.weight
    softmax = decoder.scorer.softmax
    assert decoder.scorer.project is None
    tied = [flag == "1" for flag in setting.split(",")]
    assert (softmax.input_proj is projection) == tied[0] and (softmax.head_proj is None) == tied[0]
    for tail, is_tied in zip(softmax.tail, tied[1:]):
        assert (tail.proj is projection) == is_tied and tail.proj_transposed == is_tied
    own = sum(not t for t in tied)
    plain, _ = build_arch("txl_tiny", dictionary_of_size(200), TIE_PROJS)
    assert count_parameters(model) - count_parameters(plain) == (own - 1) * 16 * 32
    with torch.no_grad():
        probs = decoder.get_normalized_probs(decoder(torch.randint(4, 200, (2, 5))), log_probs=True).exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 5))


@pytest.mark.parametrize("flags, message", [
    ([*TIE_PROJS, "--tie-projs", "0,1"], "one entry per softmax cluster, head first \\(3 for"),
    ([*TIE_PROJS, "--tie-projs", "0,2,1"], "give 0 or 1 per softmax cluster"),
    ([*TIE_PROJS[2:], "--tie-projs", "0,1,1"], "has no such projection"),
])
def test_tie_projs_is_checked(flags, message):
    with pytest.raises(ValueError, match=message):
        build_arch("txl_tiny", dictionary_of_size(200), flags)
