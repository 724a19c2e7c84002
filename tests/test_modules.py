"""Unit tests of AdaptiveInput / AdaptiveSoftmax at tiny sizes, and equivalence with fairseq's modules."""

import pytest
import torch
import torch.nn.functional as F
from fairseq.modules import AdaptiveInput as FairseqAdaptiveInput
from fairseq.modules import AdaptiveSoftmax as FairseqAdaptiveSoftmax

from fairseq_adaptive.convert import convert_adaptive_softmax_state
from fairseq_adaptive.modules import AdaptiveInput, AdaptiveSoftmax

V, PAD, CUT = 103, 1, [20, 60]


def build(tied=True, tie_proj=True, initial_dim=16, model_dim=16, factor=2.0, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    emb = AdaptiveInput(V, PAD, initial_dim, factor, model_dim, CUT)
    sm = AdaptiveSoftmax(V, model_dim, CUT, dropout, factor, emb if tied else None, tie_proj=tie_proj and tied)
    return emb, sm


def tokens_with_every_band(shape=(3, 9), seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, shape, generator=g)
    x.view(-1)[:3] = torch.tensor([5, 30, 90])  # one token per band
    return x


# ------------------------------------------------------------------------------------------------ AdaptiveInput
def test_input_shapes_band_widths_and_padding():
    emb, _ = build(initial_dim=16, model_dim=24)
    assert [e.weight.shape for e, _ in emb.embeddings] == [(20, 16), (40, 8), (43, 4)]
    assert [p.weight.shape for _, p in emb.embeddings] == [(24, 16), (24, 8), (24, 4)]
    x = tokens_with_every_band()
    x[0, -1] = PAD
    out = emb(x)
    assert out.shape == (3, 9, 24)
    assert torch.count_nonzero(out[0, -1]) == 0
    assert torch.count_nonzero(emb.embeddings[0][0].weight[PAD]) == 0


def test_input_equals_per_band_reference():
    emb, _ = build(initial_dim=16, model_dim=24)
    x = tokens_with_every_band()
    expected = torch.empty(*x.shape, 24)
    for (table, proj), start, end in zip(emb.embeddings, [0] + emb.cutoff[:-1], emb.cutoff):
        mask = (x >= start) & (x < end)
        expected[mask] = proj(table(x[mask] - start))
    torch.testing.assert_close(emb(x), expected)


def test_input_initialisation_scales():
    torch.manual_seed(0)
    emb = AdaptiveInput(4000, PAD, 256, 4.0, 256, [1000, 2000])
    for table, _ in emb.embeddings:
        std = table.weight[2:].std().item()
        assert abs(std - table.weight.shape[1] ** -0.5) < 0.1 * table.weight.shape[1] ** -0.5


@pytest.mark.parametrize(
    "cutoff,message",
    [([60, 20], "strictly increasing"), ([20, 200], "reaches the dictionary size"), ([20, V], "reaches the dictionary size"),
     ([], "empty"), ([0, 5], "positive")],
)
def test_input_bad_cutoffs(cutoff, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveInput(V, PAD, 16, 2.0, 16, cutoff)


def test_input_band_width_reaching_zero_is_an_error():
    with pytest.raises(ValueError, match="reach zero"):
        AdaptiveInput(V, PAD, 4, 4.0, 16, CUT)


# ------------------------------------------------------------------------------------------------ AdaptiveSoftmax
@pytest.mark.parametrize("tied,tie_proj", [(False, False), (True, False), (True, True)])
def test_log_prob_rows_sum_to_one_and_target_only_matches_full(tied, tie_proj):
    _, sm = build(tied=tied, tie_proj=tie_proj)
    sm.eval()
    x = torch.randn(3, 9, 16, dtype=torch.float64)
    sm.double()
    target = tokens_with_every_band()
    full = sm.get_log_prob(x)
    assert full.shape == (3, 9, V)
    torch.testing.assert_close(full.exp().sum(-1), torch.ones(3, 9, dtype=torch.float64))
    expected = full.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(sm.target_log_prob(x, target), expected)
    with torch.no_grad():  # the blockwise scoring path (fairseq-eval-lm)
        torch.testing.assert_close(sm.target_log_prob(x, target), expected)
    scored = sm.get_log_prob(x, target).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(scored, expected)
    torch.testing.assert_close(sm(x, target), -expected.sum())


def test_tying_is_by_parameter_identity():
    emb, sm = build(tied=True, tie_proj=True, initial_dim=16, model_dim=24)
    assert sm.head_words is emb.embeddings[0][0].weight
    assert sm.head_proj is not None  # head band (16) narrower than the model (24): own projection
    for i, tail in enumerate(sm.tail):
        assert tail.words is emb.embeddings[i + 1][0].weight
        assert tail.proj is emb.embeddings[i + 1][1].weight and tail.proj_transposed
    _, untied_proj = build(tied=True, tie_proj=False)
    assert all(t.proj is not e[1].weight for t, e in zip(untied_proj.tail, emb.embeddings[1:]))
    n_unique = len({id(p) for p in list(emb.parameters()) + list(sm.parameters())})
    assert n_unique == len(list(torch.nn.ModuleList([emb, sm]).parameters()))


def test_parameter_count_closed_form():
    d, k = 16, 2.0
    emb, sm = build(tied=False, initial_dim=d, model_dim=d, factor=k)
    dims = [16, 8, 4]
    sizes = [20, 40, 43]
    assert sum(p.numel() for p in emb.parameters()) == sum(s * w + w * d for s, w in zip(sizes, dims))
    head = (20 + 2) * d
    tails = sum(d * w + w * s for s, w in zip(sizes[1:], dims[1:]))
    assert sum(p.numel() for p in sm.parameters()) == head + tails
    emb_t, sm_t = build(tied=True, tie_proj=True, initial_dim=d, model_dim=d, factor=k)
    own = [p for p in sm_t.parameters() if not any(p is q for q in emb_t.parameters())]
    assert sum(p.numel() for p in own) == 2 * d  # only the cluster logits of the head are the softmax's own


def test_gradient_reaches_every_parameter_even_with_an_empty_cluster():
    emb, sm = build(tied=True, tie_proj=False)
    target = torch.randint(2, 20, (2, 6))  # head words only: both tail clusters are empty
    target[0, 0] = 30  # ... except one word of cluster 0; cluster 1 stays empty
    x = emb(torch.randint(0, V, (2, 6)))
    loss, per_cluster, counts = sm.loss(x, target, ignore_index=PAD)
    loss.backward()
    params = dict(emb.named_parameters(prefix="input"))
    params.update(dict(sm.named_parameters(prefix="softmax")))
    for name, p in params.items():
        assert p.grad is not None, f"{name} took no part in the step"
    assert counts.tolist() == [11, 1, 0]
    assert per_cluster[2].item() == 0.0
    torch.testing.assert_close(per_cluster.sum(), loss.detach())


def test_ignored_targets_do_not_count():
    _, sm = build()
    x = torch.randn(2, 5, 16)
    target = tokens_with_every_band((2, 5))
    full, _, _ = sm.loss(x, target, ignore_index=PAD)
    target2 = target.clone()
    target2[1, 3:] = PAD
    part, _, counts = sm.loss(x, target2, ignore_index=PAD)
    expected = -sm.target_log_prob(x, target)[target2 != PAD].sum()
    torch.testing.assert_close(part, expected)
    assert counts.sum().item() == 8
    assert part.item() < full.item()


def test_half_precision_loss_is_accumulated_in_fp32():
    _, sm = build(tied=False)
    x = torch.randn(64, 40, 16) * 30
    target = torch.randint(0, V, (64, 40))
    loss = sm.bfloat16()(x.bfloat16(), target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_dropout_only_in_training():
    _, sm = build(tied=False, dropout=0.5)
    x, target = torch.randn(4, 16), torch.randint(0, V, (4,))
    sm.eval()
    assert torch.equal(sm(x, target), sm(x, target))
    sm.train()
    torch.manual_seed(0)
    a = sm(x, target)
    torch.manual_seed(1)
    assert not torch.equal(a, sm(x, target))


# ------------------------------------------------------------------------------------------------ fairseq reference
@pytest.mark.parametrize(
    "tied,tie_proj,initial_dim",
    [(False, False, 16), (True, False, 16), (True, True, 16), (True, True, 24)],
)
def test_same_outputs_as_fairseq_modules(tied, tie_proj, initial_dim):
    model_dim, factor = 16, 2.0
    emb, sm = build(tied=tied, tie_proj=tie_proj, initial_dim=initial_dim, model_dim=model_dim, factor=factor)
    ref_emb = FairseqAdaptiveInput(V, PAD, initial_dim, factor, model_dim, CUT)
    ref_sm = FairseqAdaptiveSoftmax(V, model_dim, CUT, 0.0, factor, ref_emb if tied else None, tie_proj=tie_proj)
    # fairseq's random weights into our modules, through the converter that checkpoints use
    emb.load_state_dict({k: v for k, v in ref_emb.state_dict().items() if k != "_float_tensor"})
    sm.load_state_dict(convert_adaptive_softmax_state(ref_sm.state_dict(), cutoff0=CUT[0]))

    x = tokens_with_every_band()
    torch.testing.assert_close(emb(x), ref_emb(x))
    feats = torch.randn(3, 9, model_dim)
    target = tokens_with_every_band(seed=2)
    sm.eval(), ref_sm.eval()
    torch.testing.assert_close(sm.get_log_prob(feats), ref_sm.get_log_prob(feats, None))
    ours = sm.get_log_prob(feats, target).gather(-1, target.unsqueeze(-1))
    theirs = ref_sm.get_log_prob(feats, target).gather(-1, target.unsqueeze(-1))
    torch.testing.assert_close(ours, theirs)
    # training loss: fairseq's adaptive_loss sums cross-entropies over its (output, target) lists
    logits, new_target = ref_sm(feats, target)
    ref_loss = sum(F.cross_entropy(o, t, reduction="sum") for o, t in zip(logits, new_target) if o is not None)
    torch.testing.assert_close(sm(feats, target), ref_loss)



# ------------------------------------------------------------------------------------------------ chunked scoring
from fairseq_adaptive.modules.chunked_cross_entropy import chunked_target_log_prob  # noqa: E402


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_target_log_prob_equals_materialised(chunk):
    torch.manual_seed(0)
    x = torch.randn(13, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 50, (13,))
    g = torch.randn(13, dtype=torch.float64)
    ref = torch.log_softmax(x @ w.t(), dim=1).gather(1, t.unsqueeze(1)).squeeze(1)
    ref_grads = torch.autograd.grad((ref * g).sum(), (x, w))
    got = chunked_target_log_prob(x, w, t, chunk)
    got_grads = torch.autograd.grad((got * g).sum(), (x, w))
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(got_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_chunked_target_log_prob_in_bf16_and_empty():
    torch.manual_seed(0)
    x, w = torch.randn(64, 16), torch.randn(300, 16)
    t = torch.randint(0, 300, (64,))
    ref = torch.log_softmax(x @ w.t(), dim=1).gather(1, t.unsqueeze(1)).squeeze(1)
    got = chunked_target_log_prob(x.bfloat16(), w.bfloat16(), t, 32)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=0.05, atol=0.1)
    w.requires_grad_(True)
    empty = chunked_target_log_prob(x[:0], w, t[:0], 32)
    empty.sum().backward()
    assert empty.shape == (0,) and w.grad is not None and torch.count_nonzero(w.grad) == 0


@pytest.mark.parametrize("tied", [False, True])
def test_chunked_adaptive_softmax_equals_materialised(tied):
    _, sm = build(tied=tied, tie_proj=tied)
    x = torch.randn(3, 9, 16, requires_grad=True)
    target = tokens_with_every_band()
    target[2, 4:] = PAD
    ref, ref_cl, ref_n = sm.loss(x, target, ignore_index=PAD)
    ref_grads = torch.autograd.grad(ref, [x] + list(sm.parameters()))
    sm.chunk_size = 7
    got, got_cl, got_n = sm.loss(x, target, ignore_index=PAD)
    got_grads = torch.autograd.grad(got, [x] + list(sm.parameters()))
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(got_cl, ref_cl)
    assert torch.equal(got_n, ref_n)
    for a, b in zip(got_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
