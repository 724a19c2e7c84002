#!/usr/bin/env python
"""A binarised corpus of Zipf-distributed words (1/rank) at a given dictionary size, for timing fairseq-train and
fairseq-eval-lm at WikiText-103's vocabulary without its text: what it measures is speed, memory and numerical
health, never perplexity. Written with fairseq's own indexed-dataset builder (mmap format), as fairseq-preprocess
writes, and a dict.txt sorted by frequency (the expected counts of the training split).

  python benchmarks/synthetic_corpus.py DEST                       # V=267,744 (WikiText-103's dictionary), 1M tokens
  python benchmarks/synthetic_corpus.py DEST --vocab 600 --train-tokens 20000 --pairs 400    # a tiny one

DEST/lm: a language-model corpus (train/valid/test, lines of 20-200 words, each ending in </s>);
DEST/mt: a translation corpus (src -> tgt, each target the source reversed, 10-50 words), one dictionary both sides.
DEST/done.json records the arguments; a DEST written with the same ones is kept as it is.
"""

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

SPECIALS = 4  # fairseq's <s>, <pad>, </s>, <unk>: the word ids start after them


def zipf_cdf(words: int) -> np.ndarray:
    p = 1.0 / np.arange(1, words + 1, dtype=np.float64)
    return np.cumsum(p / p.sum())


def sample(cdf: np.ndarray, n: int, rng) -> np.ndarray:
    """``n`` word ids (after the special symbols) with probability 1/rank."""
    return np.minimum(np.searchsorted(cdf, rng.random(n)), len(cdf) - 1) + SPECIALS


def lengths(total: int, low: int, high: int, rng) -> list:
    out, left = [], total
    while left > 0:
        out.append(min(left, int(rng.integers(low, high + 1))))
        left -= out[-1]
    return out


def write_split(prefix: Path, lines, vocab: int) -> int:
    import torch
    from fairseq.data import indexed_dataset

    builder = indexed_dataset.make_builder(str(prefix) + ".bin", impl="mmap", vocab_size=vocab)
    tokens = 0
    for line in lines:
        builder.add_item(torch.from_numpy(line))
        tokens += len(line)
    builder.finalize(str(prefix) + ".idx")
    return tokens


def with_eos(words: np.ndarray, eos: int) -> np.ndarray:
    return np.append(words, eos).astype(np.int64)


def write_dictionary(path: Path, vocab: int, train_tokens: int) -> None:
    """``vocab - 4`` words ``w0, w1, ...`` with their expected training counts (non-increasing: sorted by frequency)."""
    p = 1.0 / np.arange(1, vocab - SPECIALS + 1, dtype=np.float64)
    counts = np.maximum(1, np.rint(train_tokens * p / p.sum())).astype(np.int64)
    path.write_text("".join(f"w{i} {c}\n" for i, c in enumerate(counts)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest")
    parser.add_argument("--vocab", type=int, default=267744, help="dictionary size, the 4 special symbols included")
    parser.add_argument("--train-tokens", type=int, default=1_000_000)
    parser.add_argument("--eval-tokens", type=int, default=50_000, help="tokens of the valid and of the test split")
    parser.add_argument("--pairs", type=int, default=20_000, help="training sentence pairs of the translation corpus")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    dest = Path(args.dest)
    record = {k: v for k, v in vars(args).items() if k != "dest"}
    done = dest / "done.json"
    if done.exists() and json.loads(done.read_text()) == record:
        print(f"{dest}: already written with these arguments")
        return
    from fairseq.data import Dictionary  # (imported once there is something to write: a kept corpus costs no import)

    assert len(Dictionary()) == SPECIALS
    shutil.rmtree(dest, ignore_errors=True)
    rng = np.random.default_rng(args.seed)
    cdf = zipf_cdf(args.vocab - SPECIALS)
    eos = Dictionary().eos()
    (dest / "lm").mkdir(parents=True)
    write_dictionary(dest / "lm" / "dict.txt", args.vocab, args.train_tokens)
    assert len(Dictionary.load(str(dest / "lm" / "dict.txt"))) == args.vocab
    written = {}
    for split, total in (("train", args.train_tokens), ("valid", args.eval_tokens), ("test", args.eval_tokens)):
        sizes = lengths(total, 20, 200, rng)
        words = np.split(sample(cdf, sum(sizes), rng), np.cumsum(sizes)[:-1])
        written[f"lm/{split}"] = write_split(dest / "lm" / split, (with_eos(w, eos) for w in words), args.vocab)
    (dest / "mt").mkdir()
    for lang in ("src", "tgt"):
        shutil.copy(dest / "lm" / "dict.txt", dest / "mt" / f"dict.{lang}.txt")
    held_out = max(1, args.pairs // 40)
    for split, pairs in (("train", args.pairs), ("valid", held_out), ("test", held_out)):
        sizes = rng.integers(10, 51, pairs)
        words = np.split(sample(cdf, int(sizes.sum()), rng), np.cumsum(sizes)[:-1])
        for lang, order in (("src", 1), ("tgt", -1)):  # the target is the source reversed: a task a model can learn
            prefix = dest / "mt" / f"{split}.src-tgt.{lang}"
            written[f"mt/{split}.{lang}"] = write_split(prefix, (with_eos(w[::order], eos) for w in words), args.vocab)
    done.write_text(json.dumps(record))
    print(f"{dest}: V={args.vocab:,}, tokens (</s> included) " + ", ".join(f"{k} {v:,}" for k, v in written.items()))


if __name__ == "__main__":
    main()
