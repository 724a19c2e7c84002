"""Write tests/golden/transfo_xl_folders/: two tiny HuggingFace Transformer-XL folders laid out as the released
``transfo-xl-wt103`` and ``save_pretrained`` write them, and what the reference implementation gives on a text, so
that tests/test_convert_transfo_xl.py converts them with scripts/convert_transfo_xl.py and holds fairseq-eval-lm's
per-token log-probabilities against the reference's, without ``transformers``.

- ``div1/``: ``div_val`` 1 (the base model's layers), weights in ``pytorch_model.bin``, the vocabulary in ``vocab.bin``
  (``torch.save`` of the tokenizer's state, as the released folder holds it);
- ``div4/``: ``div_val`` 4 with ``d_embed = d_model`` (the large model's layers), weights in ``model.safetensors``
  (tied entries written once, as ``save_pretrained`` does), the vocabulary in ``vocab.pkl`` (the tokenizer's own
  ``save_pretrained``).

Both have 56 symbols: ``<eos>`` first and ``<unk>`` in the head band, as in the released vocabulary, then words
``w0 w1 ...``. ``reference.pt`` holds a text of those words in lines (``text``), its HuggingFace ids with ``<eos>`` at
each line end (``ids``), the segment length, and for each folder the log-probability of every token after the first,
the text read as one stream in segments with the memory carried (``log_probs``): what ``fairseq-eval-lm --task bptt_lm
--batch-size 1 --tokens-per-sample T`` computes. It was run once, with the virtualenv and versions of
make_txl_reference.py: ``/tmp/refvenv/bin/python tests/golden/make_transfo_xl_folders.py``.
"""

import collections
import platform
from pathlib import Path

import torch
import transformers
from make_txl_reference import redraw  # (same folder)
from transformers import TransfoXLConfig, TransfoXLLMHeadModel, TransfoXLTokenizer

OUT = Path(__file__).resolve().parent / "transfo_xl_folders"
SYMBOLS = ["<eos>", "w0", "w1", "<unk>"] + [f"w{i}" for i in range(2, 54)]  # 56
SEGMENT = 7


def model(div_val: int, d_model: int) -> TransfoXLLMHeadModel:
    config = TransfoXLConfig(vocab_size=len(SYMBOLS), cutoffs=[12, 24, 40], div_val=div_val, d_model=d_model,
                             d_embed=d_model, n_head=2, d_head=8, d_inner=32, n_layer=2, mem_len=5, clamp_len=9,
                             same_length=True, untie_r=True, adaptive=True, dropout=0.0, dropatt=0.0,
                             tie_word_embeddings=True)
    torch.manual_seed(0)
    return redraw(TransfoXLLMHeadModel(config).float().eval(), seed=3)


def stream_log_probs(m: TransfoXLLMHeadModel, ids: torch.Tensor) -> torch.Tensor:
    """Every token after the first, read in segments of ``SEGMENT`` with the memory carried (starting empty)."""
    mems = [torch.zeros(0, 1, m.config.d_model) for _ in range(m.config.n_layer)]
    out = []
    with torch.no_grad():
        for start in range(0, ids.numel() - 1, SEGMENT):
            chunk = ids[start : start + SEGMENT + 1].unsqueeze(0)
            result = m(input_ids=chunk[:, :-1], mems=mems)
            mems = result.mems
            out.append(result.prediction_scores[0].gather(-1, chunk[0, 1:].unsqueeze(-1)).squeeze(-1))
    return torch.cat(out).float()


def main() -> None:
    OUT.mkdir(exist_ok=True)
    vocab_txt = OUT / "symbols.txt"
    vocab_txt.write_text("".join(s + "\n" for s in SYMBOLS))
    tokenizer = TransfoXLTokenizer(vocab_file=str(vocab_txt), special=["<eos>", "<unk>"])
    assert tokenizer.idx2sym == SYMBOLS, tokenizer.idx2sym
    g = torch.Generator().manual_seed(4)
    words = [SYMBOLS[int(i)] for i in torch.randint(1, len(SYMBOLS), (60,), generator=g)]
    lines = [" ".join(words[i : i + 12]) for i in range(0, 60, 12)]
    ids = torch.tensor([tokenizer.sym2idx[w] for line in lines for w in line.split() + ["<eos>"]])
    reference = {"text": "\n".join(lines) + "\n", "ids": ids, "segment": SEGMENT, "log_probs": {},
                 "versions": {"python": platform.python_version(), "torch": str(torch.__version__),
                              "transformers": str(transformers.__version__)}}
    for folder, div_val, d_model, safe in (("div1", 1, 16, False), ("div4", 4, 64, True)):
        m = model(div_val, d_model)
        m.save_pretrained(OUT / folder, safe_serialization=safe)
        if folder == "div1":  # the released layout: the tokenizer's state saved by torch
            torch.save({"idx2sym": list(tokenizer.idx2sym), "sym2idx": collections.OrderedDict(tokenizer.sym2idx),
                        "counter": collections.Counter(), "special": ["<eos>", "<unk>"], "lower_case": False,
                        "delimiter": None}, OUT / folder / "vocab.bin")
        else:
            tokenizer.save_pretrained(OUT / folder)
        reference["log_probs"][folder] = stream_log_probs(m, ids)
    vocab_txt.unlink()
    torch.save(reference, OUT / "reference.pt")
    for f in sorted(OUT.rglob("*")):
        if f.is_file():
            print(f.relative_to(OUT), f.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
