"""DeFINE (modules/define.py): layout, mixer, batched grouped transform, gradients, inference cache, parameter
counts, and its wiring into adaptive_lm (tied output side)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fairseq_adaptive.models.counting import build_on_meta, count_parameters
from fairseq_adaptive.modules.adaptive_input import AdaptiveInput
from fairseq_adaptive.modules.define import DeFINE, GroupLinear, define_layout, group_major, mix, shuffle_groups


def shapes(layout):
    return [(s.in_dim, s.out_dim, s.groups) for s in layout]


def test_layout_of_the_paper_block():
    # n=128 -> (n+k)/2=2112 -> k=4096, groups 64 then 32; the second layer reads the mixed input (2112 + 128)
    assert shapes(define_layout(128, 4096, 3, 64)) == [(128, 2112, 64), (2240, 4096, 32)]


@pytest.mark.parametrize(
    "transform,mixer,expected",
    [
        # widths 64 + 960 l / 4 = 304, 544, 784, 1024 (already multiples of 8); groups halve 8, 4, 2, 1
        ("hgt", True, [(64, 304, 8), (368, 544, 4), (608, 784, 2), (848, 1024, 1)]),
        ("hgt", False, [(64, 304, 8), (304, 544, 4), (544, 784, 2), (784, 1024, 1)]),
        ("glt", True, [(64, 304, 8), (368, 544, 8), (608, 784, 8), (848, 1024, 8)]),
        ("linear", True, [(64, 304, 1), (368, 544, 1), (608, 784, 1), (848, 1024, 1)]),
    ],
)
def test_layout_groups_and_widths(transform, mixer, expected):
    assert shapes(define_layout(64, 1024, 5, 8, transform, mixer)) == expected


def test_intermediate_widths_round_up_to_split_evenly():
    # raw middle width (16 + 100) / 2 = 58 -> next multiple of lcm(4, 2, 8) = 8 is 64
    assert shapes(define_layout(16, 100, 3, 4)) == [(16, 64, 4), (80, 100, 2)]


@pytest.mark.parametrize(
    "args,message",
    [
        ((12, 64, 3, 8), "does not split into 8 groups"),
        ((16, 64, 1, 4), "at least 2 levels"),
        ((16, 8, 3, 4), "k >= n"),
        ((16, 66, 2, 4), "multiple of the last layer's 4 groups"),
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


def test_shuffle_takes_one_slice_from_every_group():
    y = torch.arange(6.0).view(2, 1, 3)  # group-major: groups [0 1 2] and [3 4 5]
    assert shuffle_groups(y).tolist() == [[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]]


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


def tiny_define(cache=False, transform="hgt", mixer=True):
    torch.manual_seed(0)
    emb = AdaptiveInput(300, 1, 16, 2, 16, [40, 120])
    return DeFINE(emb, 16, 64, 32, n_layers=3, max_groups=4, transform=transform, mixer=mixer, cache=cache)


@pytest.mark.parametrize("transform", ["hgt", "glt", "glt_shuffle", "linear"])
@pytest.mark.parametrize("mixer", [True, False])
def test_gradient_reaches_every_parameter(transform, mixer):
    d = tiny_define(transform=transform, mixer=mixer)
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


def paper_block_formula(n, k=4096, m=384, g=64):
    """Closed form for N=3: GLT n -> w (g groups), GLT (w + n) -> k (g/2 groups), reduce (k + n) -> m; each GLT
    has in*out/G weights, out biases and 2*out/G shared LayerNorm weights."""
    w = -(-(n + k) // 2 // 64) * 64  # (n + k)/2 rounded up to a multiple of lcm(64, 32, 8)
    glt = lambda i, o, groups: i * o // groups + o + 2 * o // groups  # noqa: E731
    return glt(n, w, g) + glt(w + n, k, g // 2) + (k + n) * m + m


@pytest.mark.parametrize("n", [64, 128, 256, 384])
def test_block_parameters_match_the_closed_form(n):
    with torch.device("meta"):
        d = DeFINE(nn.Embedding(10, n, padding_idx=1), n, 4096, 384, n_layers=3, max_groups=64)
    assert d.block_parameters() == paper_block_formula(n)


def test_the_paper_block_is_1_92M():
    # Mehta et al. 2020, Table 2: the DeFINE block of the WikiText-103 model (N=3, k=4096, m=384) is 1.92M
    model = build_on_meta("adaptive_lm_wiki103_define", 267744)
    assert abs(model.decoder.embed_tokens.block_parameters() - 1.92e6) < 0.1e6


def test_define_arch_output_side_is_tied_through_a_projection_to_n():
    model = build_on_meta("adaptive_lm_wiki103_define_n64", 267744)
    dec = model.decoder
    adaptive = dec.embed_tokens.map
    assert dec.project_out_dim.weight.shape == (64, 384)  # m -> n, kept although weights are tied
    assert dec.adaptive_softmax.head_words is adaptive.embeddings[0][0].weight
    assert dec.adaptive_softmax.tail[0].proj is adaptive.embeddings[1][1].weight
    std = build_on_meta("adaptive_lm_wiki103_define_std_n64", 267744).decoder
    assert std.output_projection.weight is std.embed_tokens.map.weight
    # DeFINE's parameters are counted once; the model is far below the 151M of Transformer-XL's standard model
    assert count_parameters(model) < 60e6
