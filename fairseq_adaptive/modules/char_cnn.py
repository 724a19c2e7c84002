"""Word vectors from characters (Kim et al. 2016, https://arxiv.org/abs/1508.06615), the input of the CNN row of
Table 3 of Baevski & Auli 2019 (https://arxiv.org/abs/1809.10853): each word's bytes are embedded, convolved by
filters of several widths, max-pooled over the word, passed through highway layers and projected to the model width.
No word-boundary markers are added. The layout and initialisation are fairseq's ``CharacterTokenEmbedder``
(``fairseq/modules/character_token_embedder.py``), whose weights load into this module one to one; the words'
characters are a non-persistent buffer here (they move with the module, and are rebuilt from the dictionary rather
than saved).
"""

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class CharCNNOptions:
    filters: Tuple[Tuple[int, int], ...]  # (width, features) per filter
    char_dim: int
    highway_layers: int
    max_chars: int = 50


class Highway(nn.Module):
    """``x -> g x + (1 - g) relu(W_h x)`` with ``g = sigmoid(W_g x)``, per layer (gate biases start at 1)."""

    def __init__(self, dim: int, layers: int):
        super().__init__()
        self.dim = dim
        self.layers = nn.ModuleList(nn.Linear(dim, 2 * dim) for _ in range(layers))
        for layer in self.layers:
            nn.init.xavier_normal_(layer.weight)
            nn.init.constant_(layer.bias[dim:], 1.0)
            nn.init.constant_(layer.bias[:dim], 0.0)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            h, gate = layer(x).chunk(2, dim=-1)
            gate = torch.sigmoid(gate)
            x = gate * x + (1 - gate) * F.relu(h)
        return x


class CharCNN(nn.Module):
    """``tokens`` (any shape S) -> ``S x output_dim``. ``words``: the dictionary's entries in index order; the first
    ``nspecial`` have no characters: padding gives a zero vector, ``eos`` and ``unk`` a learned vector each."""

    def __init__(self, words: Sequence[str], nspecial: int, pad: int, eos: int, unk: int, options: CharCNNOptions,
                 output_dim: int):
        super().__init__()
        self.pad, self.eos, self.unk = pad, eos, unk
        chars = torch.zeros(len(words), options.max_chars, dtype=torch.int16)
        for i, word in enumerate(words):
            if i >= nspecial:
                codes = [b + 1 for b in word.encode("utf-8")][: options.max_chars]  # 0 is the padding character
                chars[i, : len(codes)] = torch.tensor(codes, dtype=torch.int16)
        self.register_buffer("word_chars", chars, persistent=False)
        self.char_embeddings = nn.Embedding(257, options.char_dim, padding_idx=0)
        self.symbol_embeddings = nn.Parameter(torch.empty(2, output_dim))  # eos, unk
        self.convolutions = nn.ModuleList(nn.Conv1d(options.char_dim, features, kernel_size=width)
                                          for width, features in options.filters)
        pooled = sum(features for _, features in options.filters)
        self.highway = Highway(pooled, options.highway_layers) if options.highway_layers > 0 else None
        self.projection = nn.Linear(pooled, output_dim)
        nn.init.xavier_normal_(self.char_embeddings.weight)
        nn.init.xavier_normal_(self.symbol_embeddings)
        nn.init.xavier_uniform_(self.projection.weight)
        with torch.no_grad():
            self.char_embeddings.weight[0].zero_()
        nn.init.zeros_(self.projection.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        flat = tokens.reshape(-1)
        chars = self.word_chars[flat].long()  # N x max_chars
        x = self.char_embeddings(chars).transpose(1, 2)  # N x char_dim x max_chars
        pooled = torch.cat([F.relu(conv(x).amax(dim=-1)) for conv in self.convolutions], dim=-1)
        if self.highway is not None:
            pooled = self.highway(pooled)
        words = self.projection(pooled)
        words = torch.where(flat.eq(self.eos).unsqueeze(1), self.symbol_embeddings[0], words)
        words = torch.where(flat.eq(self.unk).unsqueeze(1), self.symbol_embeddings[1], words)
        words = words.masked_fill(flat.eq(self.pad).unsqueeze(1), 0.0)
        return words.view(*tokens.shape, -1)
