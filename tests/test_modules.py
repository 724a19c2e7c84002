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
    """fp16 tops out at 65,504: a summed fp16 loss over these 2,560 tokens (about 100 nats each) would be inf."""
    _, sm = build(tied=False)
    x = torch.randn(64, 40, 16) * 30
    target = torch.randint(0, V, (64, 40))
    reference = sm(x, target)
    assert reference > 2 * 65504  # the point of the test: beyond fp16's range
    loss = sm.half()(x.half(), target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss, reference, rtol=1e-2, atol=0)


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



# ------------------------------------------------------------------------------------------- one engine, every route
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss  # noqa: E402

LAYERS = {  # (tied, tie_proj, initial_dim, model_dim): a head projection when the head band is narrower
    "untied": (False, False, 16, 16),
    "tied": (True, True, 16, 16),
    "tied, head_proj": (True, True, 8, 16),
    "tied, own projections, head_proj": (True, False, 8, 16),
}


def route_problem(layer, empty_cluster):
    _, sm = build(*LAYERS[layer])
    sm = sm.double()
    assert (sm.head_proj is not None) == ("head_proj" in layer)
    x = torch.randn(3, 9, 16, dtype=torch.double, requires_grad=True)
    target = tokens_with_every_band()
    if empty_cluster:
        target[target >= CUT[1]] = 7  # the last cluster gets no target
    target[2, 4:] = PAD
    return sm, x, target


@pytest.mark.parametrize("empty_cluster", [False, True])
@pytest.mark.parametrize("layer", sorted(LAYERS))
@pytest.mark.parametrize("route", ["nll", "label_smoothed", "score"])
def test_every_route_equals_the_materialised_fp64_reference(layer, route, empty_cluster):
    """Training NLL, label-smoothed loss (fairseq's formula on the full distribution) and scoring, through the
    blockwise engine, against log-probabilities materialised in fp64: values and every gradient."""
    sm, x, target = route_problem(layer, empty_cluster)
    params = [x] + list(sm.parameters())
    logp = sm.get_log_prob(x).view(-1, V)  # every row the full distribution
    flat = target.view(-1)
    if route == "score":
        with torch.no_grad():
            got = sm.target_log_prob(x, target)
        torch.testing.assert_close(got.view(-1), logp.gather(1, flat.unsqueeze(1)).squeeze(1).detach())
        return
    if route == "nll":
        ref = F.nll_loss(logp, flat, ignore_index=PAD, reduction="sum")
        got, per_cluster, counts = sm.loss(x, target, ignore_index=PAD)
        torch.testing.assert_close(per_cluster.sum(), ref.detach())
        assert counts.sum() == (flat != PAD).sum() and (counts[-1] == 0) == empty_cluster
    else:
        ref, ref_nll = label_smoothed_nll_loss(logp, flat, 0.1, ignore_index=PAD)
        got, nll = sm.label_smoothed_loss(x, target, PAD, 0.1)
        torch.testing.assert_close(nll, ref_nll.detach())
    torch.testing.assert_close(got, ref.detach())
    for a, b in zip(torch.autograd.grad(got, params, allow_unused=True), torch.autograd.grad(ref, params, allow_unused=True)):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    assert x.grad is None


@pytest.mark.parametrize("route", ["nll", "label_smoothed"])
def test_routes_in_bf16_are_within_rounding_of_fp32(route):
    _, sm = build(True, True, 8, 16)
    x = torch.randn(64, 16)
    target = torch.randint(2, V, (64,))
    ref = sm.loss(x, target, PAD)[0] if route == "nll" else sm.label_smoothed_loss(x, target, PAD, 0.1)[0]
    sm16 = sm.bfloat16()
    got = sm16.loss(x.bfloat16(), target, PAD)[0] if route == "nll" else sm16.label_smoothed_loss(x.bfloat16(), target, PAD, 0.1)[0]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=2e-2, atol=0)


def test_the_chunk_flag_is_gone_with_a_clear_error(lm_data):
    from .helpers import build_lm

    with pytest.raises(ValueError, match="--adaptive-softmax-chunk=64 was removed.*drop the flag"):
        build_lm("adaptive_lm_tiny", ["--adaptive-softmax-chunk", "64"], data=lm_data)


def test_adaptive_input_can_read_a_square_first_band_as_it_is():
    """``square_proj=False`` (DeFINE's Table 1a R2 count): the first band, as wide as the output, has no projection;
    its tokens come out as their table rows, the other bands' through their projections as before."""
    torch.manual_seed(0)
    emb = AdaptiveInput(100, 1, 16, 2.0, 16, [20, 60], square_proj=False)
    assert sum(p.numel() for p in emb.parameters()) == 20 * 16 + 40 * 8 + 40 * 4 + 16 * 8 + 16 * 4
    tokens = torch.tensor([[5, 30, 70]])
    out = emb(tokens)
    table0, proj0 = emb.weights_for_band(0)
    table1, proj1 = emb.weights_for_band(1)
    assert proj0 is None
    torch.testing.assert_close(out[0, 0], table0[5])
    torch.testing.assert_close(out[0, 1], proj1 @ table1[10])
    with pytest.raises(ValueError, match="no square projection to leave out"):
        AdaptiveInput(100, 1, 16, 2.0, 32, [20, 60], square_proj=False)
