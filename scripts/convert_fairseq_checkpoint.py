#!/usr/bin/env python
"""Convert a checkpoint of fairseq's own adaptive LM (``--arch transformer_lm_wiki103`` or any ``transformer_lm``
with ``--adaptive-input``/``--adaptive-softmax-cutoff``) to ``adaptive_lm``. The input file is only read; the
output is written to a temporary file and renamed, so an interrupted run leaves no partial checkpoint.

  python scripts/convert_fairseq_checkpoint.py fairseq/checkpoint_best.pt ours/checkpoint_best.pt
  fairseq-eval-lm DATA --user-dir fairseq_adaptive --path ours/checkpoint_best.pt ...
"""

import argparse
import os
import sys

import torch

from fairseq_adaptive.convert import convert_fairseq_lm_checkpoint


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input")
    parser.add_argument("output")
    args = parser.parse_args(argv)
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        sys.exit("error: the output must be a new file; the input checkpoint is never overwritten")
    if os.path.exists(args.output):
        sys.exit(f"error: {args.output} exists; remove it or choose another name")
    try:
        # a checkpoint the user trained: its argparse Namespace / numpy objects need full unpickling
        state = torch.load(args.input, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same message
        sys.exit(f"error: cannot read {args.input} as a fairseq checkpoint ({type(e).__name__}: {e})")
    if not isinstance(state, dict) or "model" not in state:
        sys.exit(f"error: {args.input} holds no 'model' entry: it is not a fairseq checkpoint")
    try:
        new = convert_fairseq_lm_checkpoint(state)
    except (KeyError, ValueError) as e:
        sys.exit(f"error: {e}")
    tmp = args.output + ".tmp"
    torch.save(new, tmp)
    os.replace(tmp, args.output)
    print(f"wrote {args.output} (model adaptive_lm, {len(new['model'])} tensors; optimizer state dropped)")


if __name__ == "__main__":
    main()
