"""Our Transformer-XL (``txl_lm``) against the reference implementation on equal weights, without ``transformers``:
tests/golden/txl_reference/ holds a tiny HuggingFace ``TransfoXLLMHeadModel`` (config, weights) and the
log-probability it gave every target of four consecutive segments, its memory carried (written once by
tests/golden/make_txl_reference.py). Ours, built at that config and given those weights through
``convert_hf_transfo_xl_state``, must give the same, its memory carried as ``bptt_lm`` carries it."""

import json
from pathlib import Path

import pytest
import torch

from fairseq_adaptive.convert import convert_hf_transfo_xl_state, transfo_xl_flags
from fairseq_adaptive.models.counting import build_arch, build_on_meta, count_parameters, dictionary_of_size

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = {"div_val 1": "txl_reference", "div_val 4": "txl_reference_div4"}


def load_reference(case: str = "div_val 1"):
    folder = GOLDEN / CASES[case]
    config = json.loads((folder / "config.json").read_text())
    return config, torch.load(folder / "weights.pt"), torch.load(folder / "expected.pt")


def ours_with_reference_weights(case: str = "div_val 1"):
    """Our txl_lm at the reference's config (``transfo_xl_flags`` over the base or the large architecture), with its
    weights; strict loading, so every entry has its place."""
    config, weights, expected = load_reference(case)
    arch = "txl_wiki103_large" if config["div_val"] > 1 else "txl_wiki103_base"
    model, _ = build_arch(arch, dictionary_of_size(config["vocab_size"]), transfo_xl_flags(config))
    model.load_state_dict(convert_hf_transfo_xl_state(weights, config))  # strict
    return model.float().eval(), expected


def segment_log_probs(model, expected, carry: bool = True) -> torch.Tensor:
    """``S x B x T``: each target's log-probability, segment after segment; with ``carry`` the memory runs on from
    one to the next (a stream of ``bptt_lm``, restarted at step 0), else each segment starts without one."""
    tokens, t = expected["tokens"], expected["segment_len"]
    out = []
    with torch.no_grad():
        for s in range(expected["target_log_probs"].size(0)):
            chunk = tokens[:, s * t : (s + 1) * t + 1]
            target = chunk[:, 1:]
            net = model(chunk[:, :-1], stream=("reference", 0, s) if carry else None)
            lprobs = model.get_normalized_probs(net, log_probs=True, sample={"target": target})
            out.append(lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1))
    return torch.stack(out)


def test_reference_is_a_memory_model():
    config, weights, expected = load_reference()
    assert config["mem_len"] > 0 and 0 < config["mem_len"] < expected["segment_len"]  # memory kept, and cut
    assert config["div_val"] == 1 and len(config["cutoffs"]) >= 2 and config["d_head"] * config["n_head"] != \
        config["d_model"]
    assert expected["target_log_probs"].dtype == torch.float32 and expected["target_log_probs"].size(0) >= 3


@pytest.mark.parametrize("case", sorted(CASES))
def test_equal_weights_give_the_reference_log_probs_with_memory_carried(case):
    model, expected = ours_with_reference_weights(case)
    got = segment_log_probs(model, expected)
    torch.testing.assert_close(got, expected["target_log_probs"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_comparison_depends_on_the_memory(case):
    """Without the memory the later segments differ well beyond the tolerance (the first, which has none, not)."""
    model, expected = ours_with_reference_weights(case)
    alone = segment_log_probs(model, expected, carry=False)
    torch.testing.assert_close(alone[0], expected["target_log_probs"][0], rtol=0, atol=1e-5)
    for s in range(1, alone.size(0)):
        assert (alone[s] - expected["target_log_probs"][s]).abs().max() > 1e-2


def test_one_sgd_step_keeps_the_large_layout_equal_to_the_reference():
    """The large model's layout (div_val 4, the head's own projection read by its words and its cluster logits): the
    same loss, and after one SGD step on it the same log-probabilities, as the reference's own step."""
    model, expected = ours_with_reference_weights("div_val 4")
    sgd, tokens, t = expected["sgd"], expected["tokens"], expected["segment_len"]
    chunk = tokens[:, : t + 1]
    model.train()  # (dropout 0: the same function, with gradients)
    lprobs = model.get_normalized_probs(model(chunk[:, :-1]), log_probs=True)
    loss = -lprobs.gather(-1, chunk[:, 1:].unsqueeze(-1)).mean()
    torch.testing.assert_close(loss.detach(), sgd["loss_before"], rtol=0, atol=1e-5)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= sgd["lr"] * p.grad
        after = model.get_normalized_probs(model(chunk[:, :-1]), log_probs=True)
    after = after.gather(-1, chunk[:, 1:].unsqueeze(-1)).squeeze(-1)
    assert (after - expected["target_log_probs"][0]).abs().max() > 1e-3  # the step moved the scores
    torch.testing.assert_close(after, sgd["after"], rtol=0, atol=2e-5)


def test_the_large_architecture_has_the_original_codes_count():
    """txl_wiki103_large at the released 267,735 words against the original code's count, written out: bands of
    d_embed / 4^i words and their projections to d, 18 layers (qkv, r_net, o_net, two LayerNorms, the feed-forward,
    a u, v pair each), the softmax's word biases, cluster rows and biases, and its own d x d head projection."""
    vocab, d, layers, heads, head_dim, inner = 267735, 1024, 18, 16, 64, 4096
    bounds = [0, 20000, 40000, 200000, vocab]
    embedding = sum((bounds[i + 1] - bounds[i]) * (d // 4**i) + d * (d // 4**i) for i in range(4))
    layer = 5 * heads * head_dim * d + d * inner + inner + inner * d + d + 4 * d + 2 * heads * head_dim
    softmax = vocab + 3 * d + 3 + d * d
    model = build_on_meta("txl_wiki103_large", vocab)
    assert count_parameters(model) == embedding + layers * layer + softmax == 285_205_322


def test_conversion_refuses_what_txl_lm_cannot_hold():
    config, weights, _ = load_reference()
    with pytest.raises(ValueError, match="tie_projs"):
        convert_hf_transfo_xl_state(weights, dict(config, div_val=2, tie_projs=[True, True, True, True]))
    untied = dict(weights, **{"crit.out_layers.0.weight": weights["crit.out_layers.0.weight"] + 1})
    with pytest.raises(ValueError, match="untied softmax"):
        convert_hf_transfo_xl_state(untied, config)
    with pytest.raises(KeyError, match="transformer.word_emb.emb_projs.0"):
        convert_hf_transfo_xl_state(dict(weights, **{"transformer.word_emb.emb_projs.0": torch.zeros(16, 16)}),
                                    config)
