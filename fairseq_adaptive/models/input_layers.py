"""Input layers shared by the language model and the translation model: plain embedding, adaptive input, DeFINE over
either (their flags live in ``config.py``)."""

import math
from typing import Any, Dict, List, Optional

from fairseq.models.transformer import Embedding
from torch import nn

from ..modules.adaptive_input import AdaptiveInput
from ..modules.define import DeFINE


def adaptive_input_of(embed_tokens: nn.Module) -> Optional[AdaptiveInput]:
    """The adaptive input inside an input layer (itself, or the map layer of a DeFINE), if any."""
    inner = embed_tokens.map if isinstance(embed_tokens, DeFINE) else embed_tokens
    return inner if isinstance(inner, AdaptiveInput) else None


def build_input_layer(
    dictionary,
    width: int,
    model_dim: int,
    adaptive_cutoff: Optional[List[int]] = None,
    adaptive_factor: float = 4.0,
    define: Optional[Dict[str, Any]] = None,
) -> nn.Module:
    """tokens -> ``model_dim``: a plain ``V x width`` embedding or an adaptive input (``adaptive_cutoff``) of first-band
    width ``width``; with ``define`` (``define_options``), a DeFINE from ``width`` to ``model_dim`` over it, otherwise
    the adaptive input projects to ``model_dim`` itself (a plain embedding of another width is projected by fairseq's
    decoder)."""
    if adaptive_cutoff is not None:
        out = width if define is not None else model_dim
        embedding = AdaptiveInput(len(dictionary), dictionary.pad(), width, adaptive_factor, out, adaptive_cutoff)
    else:
        embedding = Embedding(len(dictionary), width, dictionary.pad())
    if define is None:
        return embedding
    define = dict(define)
    # the released wiring: a plain table (N(0, 1/n) entries) is scaled by sqrt(n) unless --no-scale-embedding; an
    # adaptive input is not (its bands are projected to n)
    scale = define.pop("scale_embedding") and adaptive_cutoff is None
    return DeFINE(embedding, input_dim=width, output_dim=model_dim, embed_scale=math.sqrt(width) if scale else 1.0,
                  **define)
