"""DeFINE (modules/define.py): layout, mixer, batched grouped transform, gradients, inference cache, parameter
counts, and its wiring into adaptive_lm (tied output side)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fairseq_adaptive.models.counting import count_parameters
from fairseq_adaptive.modules.adaptive_input import AdaptiveInput
from fairseq_adaptive.modules.define import (
    DeFINE,
    DefineOptions,
    GroupLinear,
    define_layout,
    group_major,
    mix,
    time_shared_dropout,
)

from .helpers import build_lm, build_translation


def shapes(layout):
    return [(s.in_dim, s.out_dim, s.groups) for s in layout]


@pytest.mark.parametrize(
    "d,k,m,N,max_groups,expected",
    [
        # Table 2 (n=128..384, k=4096, m=384, d=m/2): groups 4, 2, 1; widths 192 .. 4096 at N=3 -> 2144, 4096
        (192, 4096, 384, 3, 8, [(192, 2144, 4), (2336, 4096, 2), (4288, 384, 1)]),
        # WMT'14 (k=1024, m=512, d=256): 256 .. 1024 -> 640, 1024
        (256, 1024, 512, 3, 8, [(256, 640, 4), (896, 1024, 2), (1280, 512, 1)]),
        # restart: 1 2 4 8 16 | 1 2, reversed; widths 330 469 608 746 885 1024 rounded up to multiples of
        # max(g_l, g_l+1, 8): 336 480 608 752 888 1024
        (192, 1024, 384, 7, 16, [(192, 336, 2), (528, 480, 1), (672, 608, 16), (800, 752, 8), (944, 888, 4),
                                 (1080, 1024, 2), (1216, 384, 1)]),
        # restart twice with max 2: 1 2 | 1 2 reversed = 2 1 2 1; widths 213 362 512 -> 216 368 512
        (64, 512, 128, 4, 2, [(64, 216, 2), (280, 368, 1), (432, 512, 2), (576, 128, 1)]),
        # the tiny test model: 16 .. 64 at N=3 -> 40, 64
        (16, 64, 32, 3, 4, [(16, 40, 4), (56, 64, 2), (80, 32, 1)]),
    ],
)
def test_layout_groups_and_widths(d, k, m, N, max_groups, expected):
    assert shapes(define_layout(d, k, m, N, max_groups)) == expected


@pytest.mark.parametrize(
    "transform,connection,expected",
    [
        ("glt", "mixer", [(16, 40, 4), (56, 64, 4), (80, 32, 4)]),
        ("linear", "mixer", [(16, 40, 1), (56, 64, 1), (80, 32, 1)]),
        ("hgt", "concat", [(16, 40, 4), (56, 64, 2), (80, 32, 1)]),  # same widths as the mixer: only the order moves
        ("hgt", "none", [(16, 40, 4), (40, 64, 2), (64, 32, 1)]),
    ],
)
def test_ablation_layouts(transform, connection, expected):
    assert shapes(define_layout(16, 64, 32, 3, 4, transform, connection)) == expected


def test_residual_layout_holds_every_layer_at_half_k():
    # Table 6a: every grouped layer k/2 wide (64 / 2 = 32, a multiple of max(4, 2, 1, 8)), no link to x
    assert shapes(define_layout(16, 64, 32, 3, 4, "hgt", "residual")) == [(16, 32, 4), (32, 32, 2), (32, 32, 1)]
    # k/2 = 500 rounds up to 504 (a multiple of 8); the first layer reads d
    assert shapes(define_layout(192, 1000, 384, 3, 8, "hgt", "residual")) == [(192, 504, 4), (504, 504, 2),
                                                                               (504, 504, 1)]


def test_residual_unit_adds_each_layers_input_to_its_output():
    torch.manual_seed(0)
    emb = nn.Embedding(50, 16, padding_idx=1)
    # d = 32 = k/2: the first layer has a residual too
    unit = DeFINE(emb, 16, 64, DefineOptions(expand_dim=64, n_layers=3, max_groups=4, connection="residual",
                                             dropout=0.0, embed_dropout=0.0)).eval()
    for p in unit.parameters():
        nn.init.normal_(p, std=0.3)
    tokens = torch.randint(2, 50, (2, 5))
    x = unit.input_layer(emb(tokens).view(1, -1, 16))[0]
    y = x
    for layer, spec in zip(unit.layers, unit.layout):
        y = y + layer(group_major(y, spec.groups)).transpose(0, 1).reshape(y.shape)  # group j = features j
    expected = unit.output_layer(y.unsqueeze(0))[0].view(2, 5, 64)
    torch.testing.assert_close(unit(tokens), expected)
    assert unit.output_layer.weight.shape == (1, 32, 64)  # reads y_N (k/2) alone and reduces it to m


def test_unit_without_reduction_ends_at_k():
    emb = nn.Embedding(50, 16, padding_idx=1)
    reduced = DeFINE(emb, 16, 32, DefineOptions(expand_dim=64, n_layers=3, max_groups=4))
    kept = DeFINE(emb, 16, 32, DefineOptions(expand_dim=64, n_layers=3, max_groups=4, reduce=False))
    # same d = m / 2 = 16 and the same first layers; the last grouped layer and the output layer end at k = 64
    assert shapes(kept.layout) == shapes(reduced.layout)[:-1] + [(80, 64, 1)]
    assert kept(torch.randint(2, 50, (3, 4))).shape == (3, 4, 64) and kept.embedding_dim == 64
    extra = (80 * 64 + 64 + 2 * 64) - (80 * 32 + 32 + 2 * 32) + (80 * 64 + 64 + 2 * 64) - (48 * 32 + 32 + 2 * 32)
    assert kept.block_parameters() - reduced.block_parameters() == extra


@pytest.mark.parametrize(
    "args,message",
    [
        ((10, 64, 32, 3, 8), "do not split its projected width d 10"),
        ((16, 64, 32, 1, 4), "at least 2 grouped layers"),
        ((16, 8, 32, 3, 4), "at least the projected width d=16"),
        ((16, 64, 30, 3, 4, "glt"), "do not split its output 30"),
        ((16, 64, 32, 3, 0), "at least 1"),
    ],
)
def test_layout_rejects_bad_settings(args, message):
    with pytest.raises(ValueError, match=message):
        define_layout(*args)


@pytest.mark.parametrize("previous_groups", [4, 8, 16, 2])
def test_mixer_chunk_layout_on_a_hand_built_input(previous_groups):
    e = torch.arange(8.0).view(1, 8)  # n = 8
    y = 100 + torch.arange(16.0).view(1, 16)  # w = 16, as the previous layer's group-major output
    out = mix(e, group_major(y, previous_groups).contiguous(), 4)
    assert out.shape == (4, 1, 6)
    for j in range(4):
        assert out[j, 0].tolist() == e[0, 2 * j : 2 * j + 2].tolist() + y[0, 4 * j : 4 * j + 4].tolist()


def test_shuffle_normalises_one_slice_of_every_group():
    layer = GroupLinear(4, 6, 2, activation="relu", shuffle=True)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(2, 3).expand(2, 2, 3))  # group j outputs its inputs, then a zero
        layer.norm.weight.fill_(1.0)
    x = torch.tensor([[1.0, 2.0, 10.0, 20.0]])
    y = layer(group_major(x, 2)).flatten()
    # product outputs [1 2 0 | 10 20 0] reordered feature-major: new groups [1 10 2] and [20 0 0], each normalised
    expected = [F.relu(F.layer_norm(torch.tensor(v), (3,))) for v in ([1.0, 10.0, 2.0], [20.0, 0.0, 0.0])]
    torch.testing.assert_close(y, torch.cat(expected))


def test_batched_group_linear_equals_a_loop_over_groups():
    torch.manual_seed(0)
    layer = GroupLinear(24, 40, 4, activation="gelu")
    nn.init.normal_(layer.bias)
    nn.init.normal_(layer.norm.weight)
    nn.init.normal_(layer.norm.bias)
    x = torch.randn(7, 24)
    reference = []
    for j in range(4):
        h = x[:, 6 * j : 6 * (j + 1)] @ layer.weight[j] + layer.bias[j, 0]
        h = F.layer_norm(h, (10,), layer.norm.weight, layer.norm.bias)
        reference.append(F.gelu(h))
    torch.testing.assert_close(layer(group_major(x, 4)), torch.stack(reference, dim=0))


def tiny_define(cache=False, transform="hgt", connection="mixer"):
    torch.manual_seed(0)
    emb = AdaptiveInput(300, 1, 16, 2, 16, [40, 120])
    options = DefineOptions(expand_dim=64, n_layers=3, max_groups=4, transform=transform, connection=connection,
                            cache=cache)
    return DeFINE(emb, 16, 32, options)


@pytest.mark.parametrize("transform", ["hgt", "glt", "glt_shuffle", "linear"])
@pytest.mark.parametrize("connection", ["mixer", "concat", "none", "residual"])
def test_gradient_reaches_every_parameter(transform, connection):
    d = tiny_define(transform=transform, connection=connection)
    tokens = torch.arange(2, 300).view(2, -1)  # every band, no padding
    out = d(tokens)
    assert out.shape == (2, 149, 32)
    out.pow(2).sum().backward()
    for name, p in d.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_each_output_depends_on_its_token_alone():
    d = tiny_define().eval()
    tokens = torch.randint(2, 300, (3, 11))
    full = d(tokens)
    torch.testing.assert_close(full[1, 4], d(tokens[1, 4].view(1, 1))[0, 0])


def test_cache_gives_identical_outputs_and_follows_weight_changes():
    d = tiny_define(cache=True)
    tokens = torch.randint(0, 300, (4, 25))
    d.eval()
    before = d.compute(tokens)
    cached = d(tokens)
    assert torch.equal(cached, before)
    assert d._table is not None and d._table.shape == (300, 32)

    opt = torch.optim.SGD(d.parameters(), lr=0.1)
    d.compute(tokens).pow(2).sum().backward()
    opt.step()
    after = d(tokens)
    assert not torch.equal(after, before)  # the step changed the weights: the old table is gone
    assert torch.equal(after, d.compute(tokens))

    d.load_state_dict(tiny_define().state_dict())  # loading weights also rebuilds
    assert torch.equal(d(tokens), before)

    d.train()
    assert d._table is None
    assert d(tokens).requires_grad  # training never reads the table


def closed_form(n, k, m, N, max_groups=8):
    """Input layer n -> d, the grouped layers, output layer (d + m) -> m: each with in*out/G weights, out biases
    and 2*out/G LayerNorm weights shared by its groups."""
    layer = lambda i, o, groups: i * o // groups + o + 2 * o // groups  # noqa: E731
    d = m // 2
    grouped = sum(layer(s.in_dim, s.out_dim, s.groups) for s in define_layout(d, k, m, N, max_groups))
    return layer(n, d, 1) + grouped + layer(d + m, m, 1)


@pytest.mark.parametrize("n,k,m,N", [(64, 4096, 384, 3), (128, 1024, 512, 3), (128, 1024, 384, 7), (16, 64, 32, 3)])
def test_block_parameters_match_the_closed_form(n, k, m, N):
    with torch.device("meta"):
        d = DeFINE(nn.Embedding(10, n, padding_idx=1), n, m, DefineOptions(expand_dim=k, n_layers=N))
    assert d.block_parameters() == closed_form(n, k, m, N)


# the authors' released unit (DExTraUnit, is_iclr_version=True) at N=3, k=4096, m=384, counted by its own
# compute_macs_params: an external reference, not a figure of the paper (Table 2 reports 1.92M at every n)
RELEASED_COUNTS = {64: 6_781_392, 128: 6_793_680, 256: 6_818_256, 384: 6_842_832}


@pytest.mark.parametrize("n", sorted(RELEASED_COUNTS))
def test_table2_archs_have_the_released_units_count(n):
    model = build_lm(f"adaptive_lm_wiki103_define_n{n}", vocab=267744).model
    assert model.decoder.embed_tokens.define_parameters() == RELEASED_COUNTS[n] == closed_form(n, 4096, 384, 3)


def test_wmt_arch_has_the_released_units_count():
    model = build_translation("adaptive_transformer_wmt_en_de_define", vocab=32768).model
    assert model.encoder.embed_tokens.define_parameters() == 1_587_904 == closed_form(128, 1024, 512, 3)


def test_embedding_dropout_shares_one_mask_over_time():
    torch.manual_seed(0)
    e = torch.ones(4, 50, 8)
    out = time_shared_dropout(e, 0.5, training=True)
    assert torch.equal(out, out[:, :1].expand_as(out))  # every time step of a sequence: the same mask
    assert 0 < (out == 0).float().mean() < 1 and set(out.unique().tolist()) == {0.0, 2.0}
    assert time_shared_dropout(e, 0.5, training=False) is e


def test_plain_map_is_scaled_by_sqrt_n_unless_told_not_to():
    std = build_lm("adaptive_lm_define_std_tiny", vocab=300).model
    assert std.decoder.embed_tokens.embedding.embed_scale == 4.0  # sqrt(16)
    unscaled = build_lm("adaptive_lm_define_std_tiny", ["--no-scale-embedding"], vocab=300).model.decoder.embed_tokens
    assert unscaled.embedding.embed_scale == 1
    adaptive = build_lm("adaptive_lm_define_tiny", ["--adaptive-input-cutoff", "40,120", "--adaptive-softmax-cutoff",
                                                    "40,120"], vocab=300).model.decoder
    # nor DeFINE's output, by the embedder or by the body
    assert adaptive.embed_tokens.embedding.embed_scale == 1.0 and adaptive.embed_tokens.scale == 1.0
    assert adaptive.embed_scale == 1.0


def test_define_arch_output_side_is_tied_through_a_projection_to_n():
    model = build_lm("adaptive_lm_wiki103_define_n64", vocab=267744).model
    dec = model.decoder
    adaptive = dec.embed_tokens.embedding.map
    assert dec.scorer.project.weight.shape == (64, 384)  # m -> n, kept although weights are tied
    assert dec.scorer.softmax.head_words is adaptive.embeddings[0][0].weight
    assert dec.scorer.softmax.tail[0].proj is adaptive.embeddings[1][1].weight
    std = build_lm("adaptive_lm_wiki103_define_std_n64", vocab=267744).model.decoder
    assert std.scorer.softmax.weight is std.embed_tokens.embedding.map.weight
    # DeFINE's parameters are counted once; the model is far below the 151M of Transformer-XL's standard model
    assert count_parameters(model) < 60e6
