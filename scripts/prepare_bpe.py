#!/usr/bin/env python
"""Byte-pair units for the BPE rows of Baevski & Auli 2019, Table 3: learn a sentencepiece BPE model on the training
text, write every split in fairseq's ``@@ `` convention (a unit that does not end its word carries ``@@``), and
binarise them with fairseq-preprocess. ``fairseq-eval-lm --remove-bpe "@@ "`` then scores at word level: a word's
log-probability is the sum of its units' ("the probability of a word is the product of the sub-word units"), and
perplexity is over words.

The paper used 32K merges (a 33,337-entry vocabulary on WikiText-103); ``--vocab-size`` is sentencepiece's number
of pieces, 32,000 by default (its BPE learns a merge per piece beyond the characters). In fairseq's convention a piece
that ends some words and continues others is two units (``ent`` and ``ent@@``), so the dictionary comes out larger
than the number of pieces (5,552 entries for 4,000 pieces on the bundled corpus); the architectures' counts in
docs/architectures.md are at the paper's 33,337. Text is kept as it is (no normalisation): joining a line's units
back (``@@ `` removed) gives its words.

  python scripts/prepare_bpe.py TEXT_DIR DEST [--vocab-size 32000]     # TEXT_DIR holds train/valid/test.txt[.gz]
"""

import argparse
import gzip
import subprocess
import sys
from pathlib import Path
from typing import List


def read(path: Path) -> List[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def split_file(text_dir: Path, split: str) -> Path:
    for name in (f"{split}.txt", f"{split}.txt.gz", f"wiki.{split}.tokens"):
        if (text_dir / name).exists():
            return text_dir / name
    sys.exit(f"error: {text_dir} has no {split}.txt (or {split}.txt.gz, wiki.{split}.tokens): pass the folder that "
             f"holds the corpus")


def to_fairseq_bpe(pieces: List[str]) -> str:
    """sentencepiece pieces (``▁`` opening a word) -> units in fairseq's convention (``@@`` closing a unit whose
    word goes on)."""
    units, starts = [], []
    pending_start = False
    for piece in pieces:
        start = piece.startswith("\u2581")
        text = piece[1:] if start else piece
        if not text:  # a lone word boundary: the next piece opens the word
            pending_start = True
            continue
        units.append(text)
        starts.append(start or pending_start or not units[:-1])
        pending_start = False
    return " ".join(u + ("@@" if i + 1 < len(units) and not starts[i + 1] else "") for i, u in enumerate(units))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("text_dir", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    import sentencepiece as spm

    files = {split: split_file(args.text_dir, split) for split in ("train", "valid", "test")}
    if (args.dest / "dict.txt").exists():  # as prepare_lm.sh: never write over a binarised corpus
        sys.exit(f"error: {args.dest} already holds a binarised corpus: remove it first, or give another DEST")
    work = args.dest / "bpe"
    work.mkdir(parents=True, exist_ok=True)
    train_lines = [line for line in read(files["train"]) if line.strip()]
    if not train_lines:
        sys.exit(f"error: {files['train']} is empty")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(train_lines), model_prefix=str(work / "spm"), vocab_size=args.vocab_size,
        model_type="bpe", character_coverage=1.0, normalization_rule_name="identity", split_digits=False,
        max_sentence_length=max(4192, max(len(line.encode("utf-8")) for line in train_lines) + 1),
        add_dummy_prefix=True, bos_id=-1, eos_id=-1, unk_id=0, hard_vocab_limit=False, num_threads=args.workers,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(work / "spm.model"))
    for split, path in files.items():
        lines = read(path)
        encoded = sp.encode(lines, out_type=str)
        (work / f"{split}.bpe").write_text("".join(to_fairseq_bpe(p) + "\n" for p in encoded), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "fairseq_cli.preprocess", "--only-source", "--trainpref",
                    work / "train.bpe", "--validpref", work / "valid.bpe", "--testpref", work / "test.bpe",
                    "--destdir", args.dest, "--workers", str(args.workers)], check=True)
    entries = sum(1 for _ in open(args.dest / "dict.txt", encoding="utf-8")) + 4
    print(f"binarised into {args.dest} ({entries:,} dictionary entries; sentencepiece model {work / 'spm.model'})")


if __name__ == "__main__":
    main()
