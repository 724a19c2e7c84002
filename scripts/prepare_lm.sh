#!/usr/bin/env bash
# Binarise a word-level LM corpus for fairseq: SRC holds train/valid/test as .txt or .txt.gz (one paragraph or
# document a line). The dictionary is built from train and sorted by frequency (what adaptive bands need).
# Usage: bash scripts/prepare_lm.sh SRC_DIR DEST_DIR [extra fairseq-preprocess flags]
set -euo pipefail
SRC=${1:?source dir}; DEST=${2:?destination dir}; shift 2
if [ -e "$DEST/dict.txt" ]; then echo "$DEST already holds a binarised corpus; remove it first"; exit 1; fi
MIN_TRAIN_WORDS=${MIN_TRAIN_WORDS:-1000}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
for split in train valid test; do
  if [ -f "$SRC/$split.txt.gz" ]; then zcat "$SRC/$split.txt.gz" > "$TMP/$split.txt"
  elif [ -f "$SRC/$split.txt" ]; then cp "$SRC/$split.txt" "$TMP/$split.txt"
  else echo "missing $SRC/$split.txt(.gz)"; exit 1; fi
  # refuse empty or near-empty splits before anything is written: a dictionary of a few words has no bands to split
  words=$(wc -w < "$TMP/$split.txt")
  need=1; [ "$split" = train ] && need=$MIN_TRAIN_WORDS
  if [ "$words" -lt "$need" ]; then
    echo "$SRC/$split.txt(.gz) holds $words words; $split needs at least $need: give the corpus's own $split text" >&2
    exit 1
  fi
done
fairseq-preprocess --only-source --trainpref "$TMP/train.txt" --validpref "$TMP/valid.txt" \
  --testpref "$TMP/test.txt" --destdir "$DEST" --workers "$(nproc)" "$@"
echo "binarised into $DEST ($(wc -l < "$DEST/dict.txt") dictionary entries)"
