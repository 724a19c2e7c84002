#!/usr/bin/env python
"""Convert fastai's pretrained AWD-LSTM language model (WikiText-103: ``lstm_fwd.pth`` and ``itos_wt103.pkl``, or a
model saved by fastai's ``learn.save`` with its vocabulary) into an ``adaptive_lstm_lm`` checkpoint (``--arch
lstm_awd_ptb`` at its sizes: embedding 400, 3 layers of 1,152, the softmax tied to the table with a bias per word, the
table unscaled) and its fairseq dictionary:

  python scripts/convert_fastai_awd_lstm.py lstm_fwd.pth itos_wt103.pkl OUT_DIR

The weights are read by torch's weights-only loader, the vocabulary by an unpickler that builds plain lists and
strings only: no pickled code runs. OUT_DIR receives ``dict.txt`` (fastai's vocabulary from its fifth entry on, in its
own order, counts decreasing with the rank; fastai's ``xxunk``, ``xxpad``, ``xxbos`` and ``xxeos`` become fairseq's
``<unk>``, ``<pad>``, ``</s>`` and ``<s>``) and ``model.pt``. Text must be tokenised as fastai tokenises it
(``xxmaj``, ``xxup`` markers, lower case) before ``fairseq-preprocess --srcdict OUT_DIR/dict.txt``; evaluate with
``fairseq-eval-lm DATA --task bptt_lm --user-dir fairseq_adaptive --path OUT_DIR/model.pt --batch-size 1``.
"""

import argparse
import sys
from pathlib import Path

from fairseq_adaptive.released_files import (ReleasedFileError, build_over_dictionary, read_plain_pickle,
                                             read_torch_weights, refuse_existing, write_converted)

SPECIALS = ("xxunk", "xxpad", "xxbos", "xxeos")


def read_itos(path: Path) -> list:
    itos = read_plain_pickle(path, lambda obj: isinstance(obj, list) and obj and all(isinstance(s, str) for s in obj),
                             "a fastai vocabulary (a list of strings)")
    if tuple(itos[:4]) != SPECIALS:
        raise ReleasedFileError(f"{path} starts {itos[:4]}, not fastai's {list(SPECIALS)}: give the vocabulary the "
                                f"model was trained with")
    bad = [s for s in itos[4:] if not s or any(c.isspace() for c in s)]
    if bad or len(set(itos)) != len(itos):
        raise ReleasedFileError(f"{path} has symbols fairseq's dictionary cannot hold (empty or spaced {bad[:3]}, or "
                                f"duplicates)")
    return itos


def convert(weights_path: Path, itos_path: Path, out_dir: Path) -> None:
    refuse_existing(out_dir)
    for path in (weights_path, itos_path):
        if not path.is_file():
            raise ReleasedFileError(f"{path} does not exist: give fastai's model weights (.pth) and its vocabulary "
                                    f"(.pkl)")
    state = read_torch_weights(weights_path, key="model")
    itos = read_itos(itos_path)
    from fairseq_adaptive.convert import convert_fastai_awd_lstm_state, fastai_awd_lstm_flags

    try:
        converted = convert_fastai_awd_lstm_state(state)
        if converted["decoder.embed_tokens.embedding.weight"].size(0) != len(itos):
            raise ValueError(f"the model has {converted['decoder.embed_tokens.embedding.weight'].size(0):,} rows and "
                             f"the vocabulary {len(itos):,} entries: they are from different models")
        text = "".join(f"{w} {len(itos) - i}\n" for i, w in enumerate(itos[4:]))
        args, model = build_over_dictionary(text, ["--task", "bptt_lm", "--arch", "lstm_awd_ptb",
                                                   *fastai_awd_lstm_flags(state), "--batch-size", "1",
                                                   "--tokens-per-sample", "70"])
        model.load_state_dict(converted)  # strict
    except (KeyError, RuntimeError, ValueError) as e:
        raise ReleasedFileError(f"{weights_path} does not convert ({type(e).__name__}: {str(e)[:300]})") from None
    write_converted(out_dir, text, args, model, "fastai AWD-LSTM")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path)
    parser.add_argument("itos", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        convert(args.weights, args.itos, args.out_dir)
    except ReleasedFileError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {args.out_dir / 'model.pt'} and {args.out_dir / 'dict.txt'}")


if __name__ == "__main__":
    main()
