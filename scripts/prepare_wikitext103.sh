#!/usr/bin/env bash
# WikiText-103 as in fairseq's language-model example: download, then fairseq-preprocess --only-source.
# The dictionary has 267,735 words + 4 specials, padded to 267,744 entries (a multiple of 8).
# With --bpe: byte-pair units instead, for the BPE rows of Baevski & Auli's Table 3 (scripts/prepare_bpe.py:
# sentencepiece BPE of 32,000 pieces written in fairseq's "@@ " convention; score at word level with
# fairseq-eval-lm --remove-bpe "@@ ").
# Usage: bash scripts/prepare_wikitext103.sh [--bpe] [WORK_DIR=examples/wikitext-103] [DEST=data-bin/wikitext-103]
set -euo pipefail
BPE=0
if [ "${1:-}" = "--bpe" ]; then BPE=1; shift; fi
WORK=${1:-examples/wikitext-103}; DEST=${2:-data-bin/wikitext-103$([ "$BPE" = 1 ] && echo -bpe)}
URL=https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip
mkdir -p "$WORK"
if [ ! -f "$WORK/wiki.train.tokens" ]; then
  ( cd "$WORK" && wget -c "$URL" && unzip -j wikitext-103-v1.zip )
fi
if [ "$BPE" = 1 ]; then
  exec python "$(dirname "$0")/prepare_bpe.py" "$WORK" "$DEST" --workers "$(nproc)"
fi
fairseq-preprocess --only-source --trainpref "$WORK/wiki.train.tokens" --validpref "$WORK/wiki.valid.tokens" \
  --testpref "$WORK/wiki.test.tokens" --destdir "$DEST" --workers "$(nproc)"
