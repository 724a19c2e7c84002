#!/usr/bin/env python
"""Prepare a parallel corpus for fairseq translation with adaptive input / softmax: a joint sentencepiece model over
both languages, both sides encoded into pieces, ``fairseq-preprocess --joined-dictionary`` (one frequency-sorted
dictionary, so ``--share-all-embeddings`` and adaptive bands work), and band cutoffs derived from that dictionary
(token coverage 90% / 98%, as ``--cutoff-coverage``'s default), printed and written to DEST/cutoffs.txt.

Input, either of:
  - SRC_DIR/{train,valid,test}.tsv[.gz] with the two last columns source<TAB>target (the bundled data/mt-sample);
  - SRC_DIR/{train,valid,test}.{src,tgt} plain text, one sentence a line, aligned (--src/--tgt name the languages).

  python scripts/prepare_mt.py data/mt-sample data-bin/mt-sample --vocab-size 8000

WMT'14 English-German, the DeFINE paper's setting: put the raw (untokenised) parallel text of Europarl v7, Common
Crawl and News Commentary v9 into train.en / train.de (fairseq's examples/translation/prepare-wmt14en2de.sh fetches
them; take its raw files, before its Moses tokenisation and BPE), newstest2013 into valid.{en,de} and newstest2014
into test.{en,de}, then

  python scripts/prepare_mt.py wmt14_raw data-bin/wmt14_en_de --vocab-size 32000 --input-sentence-size 4000000

and train with --arch adaptive_transformer_wmt_en_de_define --share-all-embeddings (README, Translation). Generate
with --remove-bpe sentencepiece --scoring sacrebleu so that BLEU is computed on detokenised text.
The destination must not exist (nothing is ever overwritten).
"""

import argparse
import gzip
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SPLITS = ("train", "valid", "test")


MIN_TRAIN_PAIRS = 100


def read_pairs(src_dir: Path, split: str, src: str, tgt: str):
    for name in (f"{split}.tsv.gz", f"{split}.tsv"):
        path = src_dir / name
        if path.exists():
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as f:
                rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
            bad = [i + 1 for i, r in enumerate(rows) if len(r) < 2]
            if bad:
                sys.exit(f"{path}: line {bad[0]} has no tab-separated source and target columns")
            return [r[-2] for r in rows], [r[-1] for r in rows]
    paths = [src_dir / f"{split}.{src}", src_dir / f"{split}.{tgt}"]
    if not all(p.exists() for p in paths):
        sys.exit(f"no {split}.tsv(.gz) nor {split}.{src} + {split}.{tgt} in {src_dir}")
    sides = [p.read_text(encoding="utf-8").splitlines() for p in paths]
    if len(sides[0]) != len(sides[1]):
        sys.exit(f"{paths[0]} has {len(sides[0])} lines but {paths[1]} has {len(sides[1])}: not aligned")
    return sides


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src_dir", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--src", default="en")
    parser.add_argument("--tgt", default="de")
    parser.add_argument("--vocab-size", type=int, default=8000, help="joint sentencepiece vocabulary")
    parser.add_argument("--model-type", default="unigram", choices=["unigram", "bpe"])
    parser.add_argument("--input-sentence-size", type=int, default=1000000,
                        help="sentences sampled to train sentencepiece")
    parser.add_argument("--coverage", default="0.9,0.98", help="token coverage of the head and of head+tail1")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if args.dest.exists():
        sys.exit(f"{args.dest} exists: choose a new destination (nothing is overwritten)")
    import sentencepiece as spm
    from fairseq.data import Dictionary

    from fairseq_adaptive.models.lm_base import band_fractions
    from fairseq_adaptive.tasks.adaptive_language_modeling import derive_cutoffs, parse_coverage

    coverage = parse_coverage(args.coverage)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pairs = {split: read_pairs(args.src_dir, split, args.src, args.tgt) for split in SPLITS}
        for split, (source, _) in pairs.items():  # before anything is written
            need = MIN_TRAIN_PAIRS if split == "train" else 1
            if len(source) < need:
                sys.exit(f"{args.src_dir}: the {split} split holds {len(source)} sentence pairs; it needs at least "
                         f"{need} (sentencepiece and the dictionary are learnt from train): give the corpus's own "
                         f"{split} pairs")
        for split, (source, target) in pairs.items():
            (tmp / f"{split}.{args.src}").write_text("\n".join(source) + "\n", encoding="utf-8")
            (tmp / f"{split}.{args.tgt}").write_text("\n".join(target) + "\n", encoding="utf-8")
        spm_dir = tmp / "spm"
        spm_dir.mkdir()
        spm.SentencePieceTrainer.train(
            input=[str(tmp / f"train.{args.src}"), str(tmp / f"train.{args.tgt}")], model_prefix=str(spm_dir / "spm"),
            vocab_size=args.vocab_size, model_type=args.model_type, character_coverage=1.0,
            input_sentence_size=args.input_sentence_size, shuffle_input_sentence=True,
            # fairseq's dictionary adds its own specials; keep sentencepiece's out of the pieces
            bos_id=-1, eos_id=-1, unk_id=0, minloglevel=2,
        )
        sp = spm.SentencePieceProcessor(model_file=str(spm_dir / "spm.model"))
        for split in SPLITS:
            for lang in (args.src, args.tgt):
                lines = (tmp / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()
                pieces = sp.encode(lines, out_type=str)
                (tmp / f"{split}.spm.{lang}").write_text("\n".join(" ".join(p) for p in pieces) + "\n",
                                                         encoding="utf-8")
        staging = args.dest.with_name(args.dest.name + ".partial")
        if staging.exists():
            sys.exit(f"{staging} exists (an interrupted run?): remove it and retry")
        cmd = [sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", args.src, "--target-lang", args.tgt,
               "--trainpref", tmp / "train.spm", "--validpref", tmp / "valid.spm", "--testpref", tmp / "test.spm",
               "--destdir", staging, "--joined-dictionary", "--workers", args.workers]
        done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"fairseq-preprocess failed:\n{done.stderr[-3000:]}")
        for suffix in ("model", "vocab"):
            (staging / f"spm.{suffix}").write_bytes((spm_dir / f"spm.{suffix}").read_bytes())
        d = Dictionary.load(str(staging / f"dict.{args.src}.txt"))
        cutoff = derive_cutoffs(d, coverage)
        fractions = band_fractions(d, cutoff)
        (staging / "cutoffs.txt").write_text(",".join(map(str, cutoff)) + "\n")
        staging.rename(args.dest)  # the destination appears complete or not at all
    print(f"binarised into {args.dest}: joined dictionary of {len(d)} entries, sentencepiece model spm.model")
    print(f"cutoffs {','.join(map(str, cutoff))} (token fractions per band "
          f"{' / '.join(f'{f:.3f}' for f in fractions)}): pass --adaptive-input-cutoff and --adaptive-softmax-cutoff")


if __name__ == "__main__":
    main()
