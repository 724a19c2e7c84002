#!/usr/bin/env python
"""Convert a HuggingFace Transformer-XL folder (the released ``transfo-xl-wt103``, or what ``save_pretrained`` of the
model and its tokenizer wrote) into a ``txl_lm`` checkpoint and its fairseq dictionary:

  python scripts/convert_transfo_xl.py HF_DIR OUT_DIR
  fairseq-preprocess --only-source --srcdict OUT_DIR/dict.txt --testpref test.txt --destdir DATA
  fairseq-eval-lm DATA --task bptt_lm --user-dir fairseq_adaptive --path OUT_DIR/model.pt --batch-size 10 \\
      --tokens-per-sample 128 --model-overrides '{"mem_len": 1600, "clamp_len": 1000, "same_length": true}'

HF_DIR holds ``config.json`` (``model_type`` transfo-xl), the weights (``pytorch_model.bin`` or
``model.safetensors``) and the vocabulary (``vocab.bin`` in the released folder, ``vocab.pkl`` where the tokenizer's
``save_pretrained`` wrote it). Nothing is imported from ``transformers`` and no pickled code runs: the weights are read
by torch's weights-only loader or as safetensors, the vocabulary by an unpickler that builds plain containers only.

OUT_DIR receives ``dict.txt`` (the released vocabulary in its own order after fairseq's four special symbols, its
``<eos>`` and ``<unk>`` becoming fairseq's ``</s>`` and ``<unk>``; counts decreasing with the rank, as the vocabulary
is sorted by frequency, where the file has none) and ``model.pt`` (``--arch txl_wiki103_base`` for ``div_val`` 1,
``txl_wiki103_large`` otherwise, at the config's sizes). The rows of the input and output layers are permuted to that
order; fairseq's ``<s>`` and ``<pad>``, which the released model lacks, get zero embeddings and an output bias of
-10,000, so every word's probability is the released model's. The band boundaries move by those two rows.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from fairseq_adaptive.released_files import (ReleasedFileError, build_over_dictionary, read_plain_pickle,
                                             read_safetensors, read_torch_weights, refuse_existing, write_converted)

REQUIRED = ("n_layer", "d_model", "n_head", "d_head", "d_inner", "cutoffs", "vocab_size")
# fairseq's special symbols that the released vocabulary lacks: their output bias (no probability left to them)
ABSENT_BIAS = -1e4
ConversionError = ReleasedFileError


def read_vocabulary(path: Path):
    """(the symbols in id order, their counts or None) of a Transformer-XL tokenizer's saved state."""
    state = read_plain_pickle(path, lambda obj: isinstance(obj, dict) and "idx2sym" in obj,
                              "a Transformer-XL vocabulary (a tokenizer state with idx2sym)")
    symbols = state.get("idx2sym")
    if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) for s in symbols):
        raise ConversionError(f"{path} holds no vocabulary (a list idx2sym of symbols): it is not a Transformer-XL "
                              f"tokenizer's file; download the folder again")
    counter = state.get("counter")
    counts = [int(counter.get(s, 0)) for s in symbols] if isinstance(counter, dict) else []
    return symbols, (counts if counts and all(c > 0 for c in counts) else None)


def read_weights(folder: Path) -> dict:
    if (folder / "model.safetensors").is_file():
        return read_safetensors(folder / "model.safetensors")
    path = folder / "pytorch_model.bin"
    if not path.is_file():
        raise ConversionError(f"{folder} has no pytorch_model.bin or model.safetensors: give the folder that holds "
                              f"the model's weights")
    return read_torch_weights(path)


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ConversionError(f"{folder} has no config.json: give a HuggingFace Transformer-XL folder (config.json, "
                              f"pytorch_model.bin or model.safetensors, vocab.bin or vocab.pkl)")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path} is not valid JSON ({e}): download it again") from None
    kind = config.get("model_type")
    if kind != "transfo-xl":
        raise ConversionError(f"{path} describes a {kind!r} model, not a Transformer-XL (model_type transfo-xl): "
                              f"this script converts Transformer-XL folders only")
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise ConversionError(f"{path} lacks {', '.join(missing)}: it is cut short or from another library version")
    return config


def fairseq_order(symbols: list, cutoffs: list):
    """(our symbols after fairseq's four specials, the HuggingFace id of each of our indices (None: a row the released
    model lacks), our cutoffs)."""
    index = {s: i for i, s in enumerate(symbols)}
    for special in ("<eos>", "<unk>"):
        if special not in index:
            raise ConversionError(f"the vocabulary has no {special}: it is not Transformer-XL's WikiText-103 layout")
        if index[special] >= cutoffs[0]:
            raise ConversionError(f"{special} lies past the head band (id {index[special]} >= {cutoffs[0]}): its rows "
                                  f"cannot move to fairseq's special symbols")
    clash = [s for s in ("<s>", "<pad>", "</s>") if s in index]
    bad = [s for s in symbols if not s or any(c.isspace() for c in s)]
    if clash or bad or len(index) != len(symbols):
        raise ConversionError(f"the vocabulary has symbols fairseq's dictionary cannot hold (fairseq's own specials "
                              f"{clash}, empty or spaced {bad[:3]}, or duplicates)")
    words = [s for s in symbols if s not in ("<eos>", "<unk>")]
    hf_id = [None, None, index["<eos>"], index["<unk>"]] + [index[w] for w in words]
    ours = [c + 2 for c in cutoffs]
    for j, h in enumerate(hf_id):
        if h is not None and sum(h >= c for c in cutoffs) != sum(j >= c for c in ours):
            raise ConversionError(f"{symbols[h]} would change band: the vocabulary's order does not convert")
    return words, hf_id, ours


def permute_rows(state: dict, hf_id: list, div_val: int, absent_bias: float) -> dict:
    """The converted state dict (HuggingFace's ids) with every vocabulary-sized dimension in our order."""
    def rows(t: torch.Tensor, count: int, fill: float = 0.0) -> torch.Tensor:
        """Our first ``count`` rows of ``t`` (one gather); ``fill`` where the released model has no row."""
        ids = hf_id[:count]
        out = t[torch.tensor([0 if h is None else h for h in ids])]
        out[torch.tensor([h is None for h in ids])] = fill
        return out

    out = dict(state)
    bias = state["decoder.scorer.softmax.word_bias"]
    out["decoder.scorer.softmax.word_bias"] = rows(bias, len(hf_id), absent_bias)
    if div_val == 1:
        table = rows(state["decoder.embed_tokens.embedding.weight"], len(hf_id))
        out["decoder.embed_tokens.embedding.weight"] = out["decoder.scorer.softmax.table"] = table
    else:
        head_rows = state["decoder.embed_tokens.embedding.embeddings.0.0.weight"].size(0) + 2
        table = rows(state["decoder.embed_tokens.embedding.embeddings.0.0.weight"], head_rows)
        out["decoder.embed_tokens.embedding.embeddings.0.0.weight"] = out["decoder.scorer.softmax.head_words"] = table
    return out


def build_model(config: dict, weights: dict, words: list, counts, hf_id: list, cutoffs: list):
    """(dict.txt text, the parsed flags, the model built by fairseq's option parsing and our task over that dictionary,
    loaded strictly with the converted weights)."""
    from fairseq_adaptive.convert import convert_hf_transfo_xl_state, transfo_xl_flags

    div_val = int(config.get("div_val", 1))
    state = permute_rows(convert_hf_transfo_xl_state(weights, config), hf_id, div_val, ABSENT_BIAS)
    ranks = counts or list(range(len(words) + 1, 1, -1))
    text = "".join(f"{w} {c}\n" for w, c in zip(words, ranks))
    arch = "txl_wiki103_large" if div_val > 1 else "txl_wiki103_base"
    args, model = build_over_dictionary(text, ["--task", "bptt_lm", "--arch", arch,
                                               *transfo_xl_flags(dict(config, cutoffs=cutoffs)), "--batch-size", "1",
                                               "--tokens-per-sample", "128"])
    model.load_state_dict(state)  # strict: every converted entry has its place, and every place an entry
    return text, args, model


def convert(hf_dir: Path, out_dir: Path) -> None:
    if not hf_dir.is_dir():
        raise ConversionError(f"{hf_dir} is not a folder: give the HuggingFace model's folder")
    refuse_existing(out_dir)
    config = read_config(hf_dir)
    weights = read_weights(hf_dir)
    vocab = next((hf_dir / n for n in ("vocab.bin", "vocab.pkl") if (hf_dir / n).is_file()), None)
    if vocab is None:
        raise ConversionError(f"{hf_dir} has no vocab.bin or vocab.pkl: the released folder's vocab.bin, or the "
                              f"tokenizer's save_pretrained output, must be beside the model")
    symbols, counts = read_vocabulary(vocab)
    if len(symbols) != int(config["vocab_size"]):
        raise ConversionError(f"{vocab} has {len(symbols):,} symbols but config.json's vocab_size is "
                              f"{int(config['vocab_size']):,}: the files are from different models")
    words, hf_id, cutoffs = fairseq_order(symbols, [int(c) for c in config["cutoffs"]])
    word_counts = None if counts is None else [counts[h] for h in hf_id[4:]]
    if word_counts is not None and any(b > a for a, b in zip(word_counts, word_counts[1:])):
        word_counts = None  # not sorted by count (ties broken another way): the ranks say the order
    try:
        text, args, model = build_model(config, weights, words, word_counts, hf_id, cutoffs)
    except (KeyError, RuntimeError, ValueError) as e:
        raise ConversionError(f"the weights in {hf_dir} do not fit its config.json ({type(e).__name__}: "
                              f"{str(e)[:300]})") from None
    write_converted(out_dir, text, args, model, "HuggingFace Transformer-XL")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hf_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        convert(args.hf_dir, args.out_dir)
    except ConversionError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {args.out_dir / 'model.pt'} and {args.out_dir / 'dict.txt'}")


if __name__ == "__main__":
    main()
