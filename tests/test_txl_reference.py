"""Our Transformer-XL (``txl_lm``) against the reference implementation on equal weights, without ``transformers``:
tests/golden/txl_reference/ holds a tiny HuggingFace ``TransfoXLLMHeadModel`` (config, weights) and the
log-probability it gave every target of four consecutive segments, its memory carried (written once by
tests/golden/make_txl_reference.py). Ours, built at that config and given those weights through
``convert_hf_transfo_xl_state``, must give the same, its memory carried as ``bptt_lm`` carries it."""

import json
from pathlib import Path

import pytest
import torch

from fairseq_adaptive.convert import convert_hf_transfo_xl_state
from fairseq_adaptive.models.counting import build_arch, dictionary_of_size

REFERENCE = Path(__file__).resolve().parent / "golden" / "txl_reference"


def our_flags(config: dict) -> list:
    """The flags that build ``txl_lm`` (over ``txl_wiki103_base``'s vocabulary layers) at a HuggingFace config."""
    flags = ["--decoder-layers", config["n_layer"], "--decoder-embed-dim", config["d_model"],
             "--decoder-attention-heads", config["n_head"], "--decoder-attention-head-dim", config["d_head"],
             "--decoder-ffn-embed-dim", config["d_inner"], "--mem-len", config["mem_len"], "--clamp-len",
             config["clamp_len"], "--adaptive-softmax-cutoff", ",".join(map(str, config["cutoffs"])), "--dropout",
             config["dropout"], "--attention-dropout", config["dropatt"]]
    flags += ["--same-length"] * bool(config["same_length"]) + ["--shared-rel-bias"] * (not config["untie_r"])
    flags += ["--decoder-normalize-before"] * bool(config["pre_lnorm"])
    return [str(f) for f in flags]


def load_reference():
    config = json.loads((REFERENCE / "config.json").read_text())
    weights = torch.load(REFERENCE / "weights.pt")
    expected = torch.load(REFERENCE / "expected.pt")
    return config, weights, expected


def ours_with_reference_weights():
    config, weights, expected = load_reference()
    model, _ = build_arch("txl_wiki103_base", dictionary_of_size(config["vocab_size"]), our_flags(config))
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


def test_equal_weights_give_the_reference_log_probs_with_memory_carried():
    model, expected = ours_with_reference_weights()
    got = segment_log_probs(model, expected)
    torch.testing.assert_close(got, expected["target_log_probs"], rtol=0, atol=1e-5)


def test_the_comparison_depends_on_the_memory():
    """Without the memory the later segments differ well beyond the tolerance (the first, which has none, not)."""
    model, expected = ours_with_reference_weights()
    alone = segment_log_probs(model, expected, carry=False)
    torch.testing.assert_close(alone[0], expected["target_log_probs"][0], rtol=0, atol=1e-5)
    for s in range(1, alone.size(0)):
        assert (alone[s] - expected["target_log_probs"][s]).abs().max() > 1e-2


def test_conversion_refuses_what_txl_lm_cannot_hold():
    config, weights, _ = load_reference()
    with pytest.raises(ValueError, match="div_val 2"):
        convert_hf_transfo_xl_state(weights, dict(config, div_val=2))
    untied = dict(weights, **{"crit.out_layers.0.weight": weights["crit.out_layers.0.weight"] + 1})
    with pytest.raises(ValueError, match="untied softmax"):
        convert_hf_transfo_xl_state(untied, config)
    with pytest.raises(KeyError, match="transformer.word_emb.emb_projs.0"):
        convert_hf_transfo_xl_state(dict(weights, **{"transformer.word_emb.emb_projs.0": torch.zeros(16, 16)}),
                                    config)
