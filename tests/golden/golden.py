"""The golden cases (what make_golden.py trains) and how a checkpoint is scored on their fixed input."""

from pathlib import Path

import torch
from fairseq import checkpoint_utils

HERE = Path(__file__).resolve().parent

TINY_LM = ["--decoder-layers", "1"]
MT_DEFINE = ["--encoder-define-dim", "16", "--decoder-define-dim", "16", "--define-expand-dim", "64",
             "--define-max-groups", "4"]
MT = ["--task", "translation", "--arch", "adaptive_transformer_tiny", "--criterion",
      "adaptive_label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--encoder-layers", "1"]
# the stream models under bptt_lm: 4 streams of 8-token segments, the memory carried from update to update
STREAM = ["--task", "bptt_lm", "--criterion", "adaptive_cross_entropy", "--batch-size", "4", "--tokens-per-sample",
          "8"]
# adaptive input over the lm corpus' 200 words (bptt_lm derives no cutoffs), the adaptive softmax tied to it
TIED_ADAPTIVE = ["--adaptive-input", "--adaptive-input-cutoff", "50,100", "--adaptive-softmax-cutoff", "50,100",
                 "--tie-adaptive-weights", "--tie-adaptive-proj"]

CASES = {
    # ADP-T at tiny size: adaptive input, adaptive softmax tied to it with its projections, cutoffs derived
    "lm_adaptive": {"data": "lm", "flags": ["--task", "adaptive_language_modeling", "--arch", "adaptive_lm_tiny",
                                            "--criterion", "adaptive_cross_entropy", "--tokens-per-sample", "32",
                                            *TINY_LM]},
    # DeFINE over an adaptive input, the adaptive softmax tied to the adaptive input through an m -> n projection
    "lm_define": {"data": "lm", "flags": ["--task", "adaptive_language_modeling", "--arch", "adaptive_lm_define_tiny",
                                          "--criterion", "adaptive_cross_entropy", "--tokens-per-sample", "32",
                                          *TINY_LM]},
    # DeFINE over a plain table, a full softmax tied to that table
    "lm_define_std": {"data": "lm", "flags": ["--task", "language_modeling", "--arch", "adaptive_lm_define_std_tiny",
                                              "--criterion", "adaptive_cross_entropy", "--tokens-per-sample", "32",
                                              *TINY_LM]},
    # plain 16-d embedding projected to 32, untied full softmax over a 32 -> 16 projection (the SM row's shape)
    "lm_full_proj": {"data": "lm", "flags": ["--task", "language_modeling", "--arch", "adaptive_lm",
                                             "--criterion", "adaptive_cross_entropy", "--tokens-per-sample", "32",
                                             "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
                                             "--decoder-attention-heads", "2", "--decoder-input-dim", "16",
                                             "--decoder-output-dim", "16", *TINY_LM]},
    # translation: DeFINE over one shared adaptive input, the adaptive softmax tied to it
    "mt_define_adaptive": {"data": "mt", "flags": [*MT, "--share-all-embeddings", "--adaptive-input",
                                                   "--encoder-adaptive-input", "--adaptive-input-cutoff", "{cutoff}",
                                                   "--adaptive-softmax-cutoff", "{cutoff}", "--tie-adaptive-weights",
                                                   "--tie-adaptive-proj", *MT_DEFINE, "--decoder-layers", "1"]},
    # translation: separate plain embeddings, an untied adaptive softmax
    "mt_untied": {"data": "mt", "flags": [*MT, "--adaptive-softmax-cutoff", "{cutoff}", "--decoder-layers", "1"]},
    # Transformer-XL (one layer, a memory of 4 positions) over an adaptive input, the adaptive softmax tied to it
    "txl_adaptive": {"data": "lm", "stream": True, "flags": [*STREAM, "--arch", "txl_tiny", *TIED_ADAPTIVE,
                                                             "--decoder-layers", "1", "--mem-len", "4"]},
    # Transformer-XL with DeFINE (n=16, k=64, N=3) over its table, a full softmax tied to it with a bias per word
    "txl_define": {"data": "lm", "stream": True, "flags": [*STREAM, "--arch", "txl_define_tiny", "--decoder-layers",
                                                           "1", "--mem-len", "4"]},
    # a 2-layer LSTM over an adaptive input, the adaptive softmax tied to it (regularisers off)
    "lstm_adaptive": {"data": "lm", "stream": True, "flags": [*STREAM, "--arch", "lstm_tiny", *TIED_ADAPTIVE]},
    # word vectors from a character CNN (8-d characters, filters of widths 1-3, one highway layer) projected to 32,
    # an untied adaptive softmax
    "lm_char_cnn": {"data": "lm", "flags": ["--task", "adaptive_language_modeling", "--arch", "adaptive_lm_wiki103_cnn",
                                            "--criterion", "adaptive_cross_entropy", "--tokens-per-sample", "32",
                                            "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
                                            "--decoder-attention-heads", "2", "--character-embedding-dim", "8",
                                            "--character-filters", "[(1, 8), (2, 16), (3, 8)]",
                                            "--adaptive-softmax-cutoff", "50,100", "--dropout", "0",
                                            "--attention-dropout", "0", "--activation-dropout", "0",
                                            "--adaptive-softmax-dropout", "0", *TINY_LM]},
}


def load(directory: Path):
    """The golden checkpoint of ``directory`` through fairseq's loader (strict, after its state-dict upgrades)."""
    overrides = {"data": str(directory)}
    if (directory / "dict.en.txt").exists():  # no data files there to infer the pair from
        overrides.update(source_lang="en", target_lang="de")
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(directory / "checkpoint.pt")], arg_overrides=overrides
    )
    return models[0].eval(), task


def fixed_input(vocab: int, nspecial: int, batch: int = 2, length: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(nspecial, vocab, (batch, length), generator=g)


def score(directory: Path, case: dict) -> dict:
    """Log-probabilities of a fixed input: of each target (the scoring path: eval-lm, --score-reference) and the whole
    distribution at every position of the first sequence (the generation path). A stream model (``case["stream"]``)
    also scores the targets in three segments of 4 tokens, its state carried from one to the next as ``bptt_lm``
    carries it (``stream_target_log_probs``)."""
    model, task = load(directory)
    d = task.target_dictionary
    target = fixed_input(len(d), d.nspecial)
    prev = torch.cat([target.new_full((target.size(0), 1), d.eos()), target[:, :-1]], dim=1)
    with torch.no_grad():
        if case["data"] == "lm":
            out = model(prev)
        else:
            src = fixed_input(len(task.source_dictionary), task.source_dictionary.nspecial, length=9).flip(1)
            out = model(src, torch.full((src.size(0),), src.size(1)), prev)
        targets = model.get_normalized_probs(out, log_probs=True, sample={"target": target})
        targets = targets.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        full = model.get_normalized_probs((out[0][:1], *out[1:]), log_probs=True)
        result = {"target": target, "target_log_probs": targets.float(), "log_probs": full.float()}
        if case.get("stream"):
            result["stream_target_log_probs"] = torch.cat([
                target_log_probs(model, prev[:, cut], target[:, cut], stream=("golden", 0, step))
                for step, cut in enumerate((slice(0, 4), slice(4, 8), slice(8, 12)))
            ], dim=1).float()
    return result


def target_log_probs(model, tokens, target, **kw):
    out = model(tokens, **kw)
    lprobs = model.get_normalized_probs(out, log_probs=True, sample={"target": target})
    return lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
