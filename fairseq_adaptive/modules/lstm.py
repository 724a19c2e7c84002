"""A stacked LSTM body on PyTorch's fused LSTM (one call per layer over the whole segment, no Python loop over time),
with AWD-LSTM's regularisers (Merity et al. 2018, https://arxiv.org/abs/1708.02182, Sec. 4):

- weight drop (DropConnect on the hidden-to-hidden weights, one mask per forward pass, Sec. 4.1): the dropped matrix
  is handed to the fused kernel with the layer's other weights (``torch.lstm``), so no module attribute is rewritten
  and nothing asks for ``flatten_parameters``;
- locked (variational) dropout (Sec. 4.2): one mask per sequence, shared by its time steps, on the LSTM's input
  (``input_dropout``), between layers (``hidden_dropout``) and on its output (``output_dropout``);
- embedding dropout of whole words (Sec. 4.3) is :func:`word_dropout`, applied by the model to embedded tokens;
- AR and TAR (Sec. 4.6) are computed from what :meth:`LSTMStack.forward` returns (the last layer's output before and
  after its dropout), in the criterion.

Layer widths as AWD-LSTM's: the first layer reads ``input_dim``, every layer but the last has ``hidden_dim`` units, the
last has ``output_dim`` (the model width m, which the tied output layer reads).
"""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = List[Tuple[Tensor, Tensor]]  # per layer (h, c), each B x units


def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``B x T x C``: dropout with one mask per sequence and channel, the same at every time step."""
    if not training or p == 0:
        return x
    mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - p) / (1 - p)
    return x * mask


def word_dropout(tokens: Tensor, embedded: Tensor, vocab_size: int, p: float, training: bool) -> Tensor:
    """Embedding dropout of whole words: each word of the vocabulary is dropped (its vector zeroed wherever it occurs in
    the batch) with probability ``p``, the kept ones scaled by ``1 / (1 - p)``; for a plain table this is AWD-LSTM's
    dropout of table rows, and it applies unchanged to an adaptive input or DeFINE."""
    if not training or p == 0:
        return embedded
    keep = embedded.new_empty(vocab_size).bernoulli_(1 - p) / (1 - p)
    return embedded * keep[tokens].unsqueeze(-1)


class LSTMStack(nn.Module):
    """``B x T x input_dim`` (and a state) -> ``B x T x output_dim``, the new state, and the last layer's output before
    its dropout (for TAR). See the module docstring for the regularisers."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, layers: int, weight_drop: float = 0.0,
                 input_dropout: float = 0.0, hidden_dropout: float = 0.0, output_dropout: float = 0.0):
        super().__init__()
        if layers < 1:
            raise ValueError(f"--decoder-layers {layers}: an LSTM needs one layer at least")
        for name, p in (("--weight-drop", weight_drop), ("--input-dropout", input_dropout),
                        ("--hidden-dropout", hidden_dropout), ("--dropout", output_dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name}={p} must lie in [0, 1): it is a dropout probability")
        sizes = [input_dim] + [hidden_dim] * (layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.LSTM(sizes[i], sizes[i + 1], batch_first=True) for i in range(layers))
        self.weight_drop = weight_drop
        self.input_dropout, self.hidden_dropout, self.output_dropout = input_dropout, hidden_dropout, output_dropout

    def run_layer(self, layer: nn.LSTM, x: Tensor, state: Optional[Tuple[Tensor, Tensor]]):
        if state is None:
            zeros = x.new_zeros(1, x.size(0), layer.hidden_size)
            state = (zeros, zeros)
        else:
            state = (state[0].unsqueeze(0), state[1].unsqueeze(0))
        if self.weight_drop > 0 and self.training:
            # DropConnect: the fused kernel with a dropped copy of the hidden-to-hidden weights (one mask per call).
            # The four tensors are views of one buffer in the layer's own order, which cuDNN takes as its flat weight
            # buffer as it is: separate tensors would make it warn and copy every weight on every call
            parts = [layer.weight_ih_l0, F.dropout(layer.weight_hh_l0, self.weight_drop, True), layer.bias_ih_l0,
                     layer.bias_hh_l0]
            flat = torch.cat([p.reshape(-1) for p in parts])
            weights = [w.view_as(p) for w, p in zip(flat.split([p.numel() for p in parts]), parts)]
            out, h, c = torch.lstm(x, state, weights, True, 1, 0.0, True, False, True)
        else:
            out, (h, c) = layer(x, state)
        return out, (h.squeeze(0), c.squeeze(0))

    def forward(self, x: Tensor, state: Optional[State] = None) -> Tuple[Tensor, State, Tensor]:
        x = locked_dropout(x, self.input_dropout, self.training)
        new_state: State = []
        for i, layer in enumerate(self.layers):
            raw, layer_state = self.run_layer(layer, x, None if state is None else state[i])
            new_state.append(layer_state)
            last = i == len(self.layers) - 1
            x = locked_dropout(raw, self.output_dropout if last else self.hidden_dropout, self.training)
        return x, new_state, raw


def detach_state(state: State) -> State:
    return [(h.detach(), c.detach()) for h, c in state]


def count_lstm_parameters(input_dim: int, hidden_dim: int, output_dim: int, layers: int) -> int:
    """Closed form of :class:`LSTMStack`'s parameters: per layer ``4 (in x out + out x out + 2 out)``."""
    sizes = [input_dim] + [hidden_dim] * (layers - 1) + [output_dim]
    return sum(4 * (a * b + b * b + 2 * b) for a, b in zip(sizes, sizes[1:]))
