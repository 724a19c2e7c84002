#!/usr/bin/env bash
# WikiText-103 as in fairseq's language-model example: download, then fairseq-preprocess --only-source.
# The dictionary has 267,735 words + 4 specials, padded to 267,744 entries (a multiple of 8).
# Usage: bash scripts/prepare_wikitext103.sh [WORK_DIR=examples/wikitext-103] [DEST=data-bin/wikitext-103]
set -euo pipefail
WORK=${1:-examples/wikitext-103}; DEST=${2:-data-bin/wikitext-103}
URL=https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip
mkdir -p "$WORK"
if [ ! -f "$WORK/wiki.train.tokens" ]; then
  ( cd "$WORK" && wget -c "$URL" && unzip -j wikitext-103-v1.zip )
fi
fairseq-preprocess --only-source --trainpref "$WORK/wiki.train.tokens" --validpref "$WORK/wiki.valid.tokens" \
  --testpref "$WORK/wiki.test.tokens" --destdir "$DEST" --workers "$(nproc)"
