"""Recurrent layers: `RNN` (Elman), `LSTM` (Hochreiter & Schmidhuber, 1997) and `GRU` (Cho et al., 2014).

Parameters are named and shaped as in PyTorch (`weight_ih_l0` of shape `(gates * hidden, input)`,
`weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, gates stacked in PyTorch's order), so a PyTorch state
dict loads unchanged; with `bidirectional=True` a second set (`weight_ih_l0_reverse`, ...) reads
the sequence backwards and the two outputs are concatenated per step. Each layer unrolls its cell over time with ordinary `Tensor` ops, so
backpropagation through time is just `backward` on the unrolled graph.

With $a = W_{ih}x_t + b_{ih} + W_{hh}h_{t-1} + b_{hh}$ split into gate blocks:

* RNN: $h_t = \\tanh(a)$ (or ReLU).
* LSTM (gates $i, f, g, o$): $c_t = \\sigma(f) \\odot c_{t-1} + \\sigma(i) \\odot \\tanh(g)$,
  $h_t = \\sigma(o) \\odot \\tanh(c_t)$. The additive cell path lets gradients survive long spans.
* GRU (gates $r, z, n$): $r, z = \\sigma(\\cdot)$, $n = \\tanh(W_{in}x_t + b_{in} + r \\odot
  (W_{hn}h_{t-1} + b_{hn}))$, $h_t = (1 - z) \\odot n + z \\odot h_{t-1}$.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from fms_dl.engine import ShapeError, Tensor, cat, stack
from fms_dl.nn import functional as F
from fms_dl.nn import init
from fms_dl.nn.module import Module, Parameter

__all__ = ["GRU", "LSTM", "RNN"]

_State = Tensor | tuple[Tensor, Tensor]


class _RNNBase(Module):
    _gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: npt.DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError(
                f"{type(self).__name__}: input_size, hidden_size and num_layers must be positive, "
                f"got {input_size}, {hidden_size}, {num_layers}"
            )
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{type(self).__name__}: dropout must be in [0, 1], got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        gh = self._gates * hidden_size
        for k in range(num_layers):
            n_in = input_size if k == 0 else hidden_size * self.num_directions
            for sfx in ("", "_reverse")[: self.num_directions]:
                setattr(self, f"weight_ih_l{k}{sfx}", Parameter(np.empty((gh, n_in), dtype=dtype)))
                setattr(
                    self,
                    f"weight_hh_l{k}{sfx}",
                    Parameter(np.empty((gh, hidden_size), dtype=dtype)),
                )
                if bias:
                    setattr(self, f"bias_ih_l{k}{sfx}", Parameter(np.empty(gh, dtype=dtype)))
                    setattr(self, f"bias_hh_l{k}{sfx}", Parameter(np.empty(gh, dtype=dtype)))
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _layer(self, k: int, sfx: str) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        b_ih = getattr(self, f"bias_ih_l{k}{sfx}") if self.bias else None
        b_hh = getattr(self, f"bias_hh_l{k}{sfx}") if self.bias else None
        return (
            getattr(self, f"weight_ih_l{k}{sfx}"),
            getattr(self, f"weight_hh_l{k}{sfx}"),
            b_ih,
            b_hh,
        )

    def _cell(
        self, xw: Tensor, h: Tensor, c: Tensor | None, w_hh: Tensor, b_hh: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        raise TypeError(f"{type(self).__name__} has no recurrence cell")  # pragma: no cover

    def _check_state(self, t: Tensor | None, n: int, name: str, batched: bool) -> Tensor | None:
        if t is None:
            return None
        layers = self.num_layers * self.num_directions
        expected = (layers, n, self.hidden_size) if batched else (layers, self.hidden_size)
        if t.shape != expected:
            raise ShapeError(
                f"{type(self).__name__}: {name} must have shape {expected}, got {t.shape}"
            )
        return t if batched else t.unsqueeze(1)

    def _run(
        self, x: Tensor, h0: Tensor | None, c0: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        name = type(self).__name__
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            raise ShapeError(
                f"{name}: expected input (L, N, {self.input_size}) "
                f"{'(batch_first: (N, L, ...)) ' if self.batch_first else ''}or (L, {self.input_size}), "
                f"got {x.shape}"
            )
        batched = x.ndim == 3
        if not batched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        length, n = x.shape[0], x.shape[1]
        h0 = self._check_state(h0, n, "h0", batched)
        c0 = self._check_state(c0, n, "c0", batched)
        zeros = Tensor(np.zeros((n, self.hidden_size), dtype=self.weight_ih_l0.dtype))
        inputs = [x[t] for t in range(length)]
        h_last, c_last = [], []
        for k in range(self.num_layers):
            per_direction = []
            for d, sfx in enumerate(("", "_reverse")[: self.num_directions]):
                w_ih, w_hh, b_ih, b_hh = self._layer(k, sfx)
                i = k * self.num_directions + d
                h = zeros if h0 is None else h0[i]
                c = (zeros if c0 is None else c0[i]) if self._gates == 4 else None
                outs = []
                for xt in inputs if d == 0 else reversed(inputs):  # the reverse pass reads L-1..0
                    xw = F.linear(xt, w_ih, b_ih)
                    h, c = self._cell(xw, h, c, w_hh, b_hh)
                    outs.append(h)
                per_direction.append(outs if d == 0 else outs[::-1])
                h_last.append(h)
                if c is not None:
                    c_last.append(c)
            if self.bidirectional:
                outs = [cat([f, b], -1) for f, b in zip(*per_direction, strict=True)]
            else:
                outs = per_direction[0]
            if self.dropout and self.training and k < self.num_layers - 1:
                outs = [F.dropout(o, self.dropout, True) for o in outs]
            inputs = outs
        out = stack(inputs, 0)
        h_n = stack(h_last, 0)
        c_n = stack(c_last, 0) if c_last else None
        if not batched:
            return out.squeeze(1), h_n.squeeze(1), None if c_n is None else c_n.squeeze(1)
        if self.batch_first:
            out = out.transpose(0, 1)
        return out, h_n, c_n

    def extra_repr(self) -> str:
        """Sizes."""
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"batch_first={self.batch_first}, bidirectional={self.bidirectional}"
        )


class RNN(_RNNBase):
    """Elman RNN, $h_t = \\tanh(W_{ih}x_t + b_{ih} + W_{hh}h_{t-1} + b_{hh})$.

    Call with `x` `(L, N, input_size)` (or `(N, L, ...)` if `batch_first`) and optional `h0`
    `(num_layers, N, hidden)`; returns `(output, h_n)`, output `(L, N, hidden)`.
    """

    _gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: npt.DTypeLike = np.float32,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, dtype
        )
        self.nonlinearity = nonlinearity

    def _cell(
        self, xw: Tensor, h: Tensor, c: Tensor | None, w_hh: Tensor, b_hh: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        a = xw + F.linear(h, w_hh, b_hh)
        return (a.tanh() if self.nonlinearity == "tanh" else a.relu()), None

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run over the sequence; returns `(output, h_n)`."""
        out, h_n, _ = self._run(x, h0, None)
        return out, h_n


class LSTM(_RNNBase):
    """Long short-term memory; returns `(output, (h_n, c_n))` like `torch.nn.LSTM`."""

    _gates = 4

    def _cell(
        self, xw: Tensor, h: Tensor, c: Tensor | None, w_hh: Tensor, b_hh: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        assert c is not None
        hs = self.hidden_size
        a = xw + F.linear(h, w_hh, b_hh)
        i = a[:, :hs].sigmoid()
        f = a[:, hs : 2 * hs].sigmoid()
        g = a[:, 2 * hs : 3 * hs].tanh()
        o = a[:, 3 * hs :].sigmoid()
        c = f * c + i * g
        return o * c.tanh(), c

    def forward(
        self, x: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Run over the sequence with optional `(h0, c0)`; returns `(output, (h_n, c_n))`."""
        h0, c0 = hx if hx is not None else (None, None)
        out, h_n, c_n = self._run(x, h0, c0)
        assert c_n is not None
        return out, (h_n, c_n)


class GRU(_RNNBase):
    """Gated recurrent unit; returns `(output, h_n)` like `torch.nn.GRU`."""

    _gates = 3

    def _cell(
        self, xw: Tensor, h: Tensor, c: Tensor | None, w_hh: Tensor, b_hh: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        hs = self.hidden_size
        hw = F.linear(h, w_hh, b_hh)
        r = (xw[:, :hs] + hw[:, :hs]).sigmoid()
        z = (xw[:, hs : 2 * hs] + hw[:, hs : 2 * hs]).sigmoid()
        n = (xw[:, 2 * hs :] + r * hw[:, 2 * hs :]).tanh()
        return (1.0 - z) * n + z * h, None

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run over the sequence; returns `(output, h_n)`."""
        out, h_n, _ = self._run(x, h0, None)
        return out, h_n
