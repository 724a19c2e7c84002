"""Write tests/golden/txl_reference/: a tiny HuggingFace ``TransfoXLLMHeadModel`` (the reference Transformer-XL that
fairseq's ``examples/truncated_bptt`` wraps), its weights and the log-probability it gives every target of four
consecutive segments of a fixed token stream, its memory carried from segment to segment. tests/test_txl_reference.py
loads these weights into our ``txl_lm`` (``fairseq_adaptive.convert.convert_hf_transfo_xl_state``) and must give the
same log-probabilities, so the comparison runs without ``transformers``.

This script imports only torch and transformers (never fairseq, nor this package). It was run once, in a throwaway
virtualenv holding the benchmark extra::

    python3.11 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install -c requirements/constraints.txt torch==2.13.0
    /tmp/refvenv/bin/pip install -c requirements/constraints.txt -r requirements/benchmarks.txt numpy
    /tmp/refvenv/bin/python tests/golden/make_txl_reference.py

with Python 3.11.7, torch 2.13.0 (CPU), transformers 4.35.2 (the versions are also stored in expected.pt).

Two models (``CASES``), each in a folder of its own. The first: vocabulary 56 (ids 0-3 stand for our dictionary's
special symbols and never occur in the stream), clusters at 12, 24, 40 with ``div_val`` 1 (every cluster at full
width, the words tied to the input table, a bias per word), d=16, 2 heads of 6 (heads x head width differs from d),
inner 24, 2 layers with a u, v pair each, post-norm,
memory 5 (shorter than a segment), distances clamped at 7, dropout 0. Its weights are redrawn from a seeded normal
distribution after construction (the library's initialisation is so small that every distribution would be nearly
uniform). The memory starts empty, as the original code and ours start (the library's own start is ``mem_len`` zero
vectors, keys the first segment would attend to), and each segment's ``mems`` output is fed to the next. The
log-probabilities are those of the model's forward without labels (``prediction_scores``), whose head gives tail
cluster ``i``'s logit at column ``cutoffs[0] + i - 1``. The second (txl_reference_div4/) is the large model's layout
at d=64: ``div_val`` 4 with ``d_embed = d_model`` (bands 64, 16, 4, 1 wide, each projected to d; the softmax's word
rows and tail projections tied to them, the head's own projection ``out_projs[0]``); its expected.pt also holds one
SGD step (``sgd``: lr, the loss before, the first segment's log-probabilities after), the weights written being those
before the step.

Files: config.json (``config.to_dict()``), weights.pt (the model's ``state_dict()``, fp32, tied entries included as
the library writes them) and expected.pt (``tokens``: the ``B x (S x T + 1)`` stream; ``segment_len`` T; segment s
reads ``tokens[:, s*T : (s+1)*T]`` and predicts ``tokens[:, s*T+1 : (s+1)*T+1]``; ``target_log_probs``: ``S x B x T``;
``versions``).
"""

import json
import platform
from pathlib import Path

import torch
import transformers
from transformers import TransfoXLConfig, TransfoXLLMHeadModel

HERE = Path(__file__).resolve().parent
VOCAB, SPECIALS = 56, 4
BATCH, SEGMENTS, SEGMENT_LEN = 2, 4, 6
# case -> (folder, the config's sizes): div_val 1 (the base model's layers) and div_val 4 with d_embed = d_model (the
# large model's: an adaptive input and softmax, the head's own projection), the latter also through one SGD step
CASES = {
    "div_val 1": ("txl_reference", dict(div_val=1, d_model=16, d_embed=16, n_head=2, d_head=6, d_inner=24)),
    "div_val 4": ("txl_reference_div4", dict(div_val=4, d_model=64, d_embed=64, n_head=2, d_head=12, d_inner=48)),
}
SGD_LR = 0.05


def build(sizes: dict) -> TransfoXLLMHeadModel:
    config = TransfoXLConfig(
        vocab_size=VOCAB, cutoffs=[12, 24, 40], n_layer=2, mem_len=5, clamp_len=7, same_length=False, pre_lnorm=False,
        untie_r=True, adaptive=True, dropout=0.0, dropatt=0.0, tie_word_embeddings=True, **sizes,
    )
    torch.manual_seed(0)
    return redraw(TransfoXLLMHeadModel(config).float().eval(), seed=1)


def redraw(model: TransfoXLLMHeadModel, seed: int) -> TransfoXLLMHeadModel:
    """The model's weights drawn again from a seeded normal distribution (the library's initialisation is so small
    that every distribution would be nearly uniform): LayerNorm gains near 1, biases near 0, the rest 0.4 wide at
    d=16 and narrower for wider models, so the logits stay of the same size."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied parameters come once
            noise = torch.randn(p.shape, generator=g)
            if "layer_norm.weight" in name:
                p.copy_(1 + 0.1 * noise)
            elif "layer_norm.bias" in name:
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.4 * (16 / model.config.d_model) ** 0.5 * noise)
    return model


def segment_scores(model, tokens):
    """``S x B x T`` log-probabilities of every target, segment after segment, the memory carried (starting empty)."""
    d_model, layers = model.config.d_model, model.config.n_layer
    mems = [torch.zeros(0, BATCH, d_model) for _ in range(layers)]  # an empty memory
    scores = []
    with torch.no_grad():
        for s in range(SEGMENTS):
            chunk = tokens[:, s * SEGMENT_LEN : (s + 1) * SEGMENT_LEN + 1]
            out = model(input_ids=chunk[:, :-1], mems=mems)
            mems = out.mems
            assert mems[0].size(0) == min(model.config.mem_len, (s + 1) * SEGMENT_LEN)
            scores.append(out.prediction_scores.gather(-1, chunk[:, 1:].unsqueeze(-1)).squeeze(-1))
    return torch.stack(scores).float()


def sgd_step(model, tokens) -> dict:
    """One SGD step (lr ``SGD_LR``) on the mean NLL of the first segment (no memory), read from the model's
    log-probabilities; the first segment's log-probabilities after it (no memory), and the updated weights."""
    chunk = tokens[:, : SEGMENT_LEN + 1]
    model.zero_grad()
    out = model(input_ids=chunk[:, :-1], mems=[torch.zeros(0, BATCH, model.config.d_model)] * model.config.n_layer)
    loss = -out.prediction_scores.gather(-1, chunk[:, 1:].unsqueeze(-1)).mean()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():  # tied parameters come once, with their summed gradient (unused: none)
            if p.grad is None:
                continue
            p -= SGD_LR * p.grad
        after = model(input_ids=chunk[:, :-1], mems=[torch.zeros(0, BATCH, model.config.d_model)] *
                      model.config.n_layer).prediction_scores
    return {"lr": SGD_LR, "loss_before": loss.detach().float(),
            "after": after.gather(-1, chunk[:, 1:].unsqueeze(-1)).squeeze(-1).float()}


def main() -> None:
    versions = {"python": platform.python_version(), "torch": str(torch.__version__),
                "transformers": str(transformers.__version__)}
    for case, (folder, sizes) in CASES.items():
        out_dir = HERE / folder
        model = build(sizes)
        g = torch.Generator().manual_seed(2)
        tokens = torch.randint(SPECIALS, VOCAB, (BATCH, SEGMENTS * SEGMENT_LEN + 1), generator=g)
        expected = {"tokens": tokens, "segment_len": SEGMENT_LEN, "target_log_probs": segment_scores(model, tokens),
                    "versions": versions}
        out_dir.mkdir(exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(model.config.to_dict(), indent=1, sort_keys=True) + "\n")
        torch.save(model.state_dict(), out_dir / "weights.pt")
        if sizes["div_val"] > 1:
            expected["sgd"] = sgd_step(model, tokens)
        torch.save(expected, out_dir / "expected.pt")
        for f in sorted(out_dir.iterdir()):
            print(case, f.name, f.stat().st_size, "bytes")
    print(versions)


if __name__ == "__main__":
    main()
