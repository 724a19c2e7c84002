"""The hub interface of this package's language models (``from_pretrained``): fairseq's, for texts of any length.

fairseq's interface refuses a text longer than the model's positions (naming a command-line flag), and with
``skip_invalid_size_inputs=True`` returns fewer results than texts. Here:

- ``score`` of a text longer than the positions slides a window over it as ``fairseq-eval-lm --context-window``
  does: blocks of ``positions - context_window`` targets, each read after the ``context_window`` tokens before it
  (the first block without), so every target is scored once and the total equals eval-lm's on the same text;
- ``sample`` / ``generate`` from a prompt longer than the positions read its last ``positions // 2`` tokens and add
  up to ``max_len_b`` tokens after them (within the positions; for a prompt that fits, fairseq counts the prompt in
  ``max_len_b``); the hypothesis holds the whole prompt (``positional_scores`` NaN where the prompt was not read);
- every call returns one result per input, or raises naming the input.

Models whose state runs on (Transformer-XL, the LSTM) have no position limit, so none of this applies to them.
"""

import math
from typing import List, Optional

import torch
from fairseq.hub_utils import GeneratorHubInterface
from fairseq.sequence_scorer import SequenceScorer
from torch import Tensor


class LanguageModelHub(GeneratorHubInterface):
    """fairseq's ``GeneratorHubInterface`` for texts of any length; see the module docstring."""

    def positions(self) -> Optional[int]:
        """The longest input the model and the task take (None: no limit)."""
        limit = self.max_positions
        limit = min(limit) if isinstance(limit, (tuple, list)) else limit
        return None if limit is None else int(limit)

    def score(self, sentences, replace_newline_with_eos=False, context_window: Optional[int] = None, **kwargs):
        """fairseq's ``score``; a text longer than the model's positions is scored through a sliding window whose
        context is ``context_window`` tokens (default: half the positions), as ``fairseq-eval-lm --context-window``."""
        if isinstance(sentences, str):
            return self.score([sentences], replace_newline_with_eos, context_window, **kwargs)[0]
        self._context_window = context_window
        try:
            return super().score(sentences, replace_newline_with_eos=replace_newline_with_eos, **kwargs)
        finally:
            self._context_window = None

    def generate(self, tokenized_sentences, beam=5, verbose=False, skip_invalid_size_inputs=False, **kwargs):
        if torch.is_tensor(tokenized_sentences) and tokenized_sentences.dim() == 1:
            return self.generate(tokenized_sentences.unsqueeze(0), beam=beam, verbose=verbose,
                                 skip_invalid_size_inputs=skip_invalid_size_inputs, **kwargs)[0]
        sentences = list(tokenized_sentences)
        limit = self.positions()
        long = [i for i, t in enumerate(sentences) if limit is not None and t.numel() > limit]
        short = [i for i in range(len(sentences)) if i not in long]
        scoring = bool(kwargs.get("score_reference", False))
        outputs: List[Optional[list]] = [None] * len(sentences)
        args = dict(beam=beam, verbose=verbose, skip_invalid_size_inputs=skip_invalid_size_inputs)
        for i, hypos in zip(short, self._each_result(short, [sentences[i] for i in short], **args, **kwargs)):
            outputs[i] = hypos
        if scoring:
            for i in long:
                outputs[i] = [self._score_windows(sentences[i], limit)]
        elif long:
            # the prompt's last tokens, then max_len_b tokens after them (fairseq counts the prompt in max_len_b)
            kept = [sentences[i][-(limit // 2):] for i in long]
            after = kwargs.pop("max_len_b", self.cfg.generation.max_len_b)
            done = self._each_result(long, kept, max_len_b=kept[0].numel() - 1 + after, **args, **kwargs)
            for i, k, hypos in zip(long, kept, done):
                outputs[i] = [self._with_prompt(h, sentences[i], k) for h in hypos]
        return outputs

    def _each_result(self, which: List[int], inputs: List[Tensor], **kwargs) -> list:
        """fairseq's ``generate`` on ``inputs`` (the inputs ``which`` of the call), one result for each."""
        if not inputs:
            return []
        done = super().generate(inputs, **kwargs)
        if len(done) != len(inputs):
            raise ValueError(f"{len(inputs) - len(done)} of the inputs {which} gave no result (fairseq's batching "
                             f"dropped them): call generate with each input alone to find which")
        return done

    @staticmethod
    def _with_prompt(hypo: dict, prompt: Tensor, kept: Tensor) -> dict:
        """A hypothesis continued from the prompt's last tokens, with the tokens that were not read put back."""
        dropped = prompt[: prompt.numel() - kept.numel()].to(hypo["tokens"])
        hypo = dict(hypo)
        hypo["tokens"] = torch.cat([dropped, hypo["tokens"]])
        scores = hypo["positional_scores"]
        hypo["positional_scores"] = torch.cat([scores.new_full((dropped.numel(),), math.nan), scores])
        return hypo

    def _score_windows(self, tokens: Tensor, limit: int) -> dict:
        """The targets of ``tokens`` (the inputs of fairseq's language-model scoring: ``</s> w1 .. wn`` predicting
        ``w1 .. wn``) scored in blocks of ``limit - context`` targets, each after the ``context`` inputs before it."""
        d = self.task.source_dictionary
        context = self._context_window if getattr(self, "_context_window", None) is not None else limit // 2
        if not 0 <= context < limit:
            raise ValueError(f"context_window={context} must lie in [0, {limit}) (the model's {limit} positions)")
        words = tokens[:-1] if tokens[-1].item() == d.eos() else tokens
        source = torch.cat([words.new_tensor([d.eos()]), words])
        target = torch.cat([words, words.new_tensor([d.pad()])])  # the final position predicts nothing (fairseq's)
        block = limit - context
        rows, starts = [], []
        for begin in range(0, source.numel(), block):
            first = max(0, begin - context)
            end = min(begin + block, source.numel())
            row_target = target[first:end].clone()
            row_target[: begin - first] = d.pad()
            rows.append((source[first:end], row_target))
            starts.append(begin - first)
        scorer = SequenceScorer(self.task.target_dictionary)
        scores = []
        for k in range(0, len(rows), 16):  # a few windows at a time
            part = rows[k : k + 16]
            width = max(s.numel() for s, _ in part)
            src = torch.full((len(part), width), d.pad(), dtype=torch.long)
            tgt = torch.full((len(part), width), d.pad(), dtype=torch.long)
            for j, (s, t) in enumerate(part):
                src[j, : s.numel()], tgt[j, : t.numel()] = s, t
            sample = {"net_input": {"src_tokens": src.to(self.device),
                                    "src_lengths": torch.tensor([s.numel() for s, _ in part], device=self.device)},
                      "target": tgt.to(self.device), "start_indices": starts[k : k + 16]}
            with torch.no_grad():
                scores += [hypos[0]["positional_scores"] for hypos in scorer.generate(self.models, sample)]
        positional = torch.cat(scores)
        return {"tokens": words.to(positional.device), "score": positional.mean(), "positional_scores": positional,
                "attention": None, "alignment": None}
