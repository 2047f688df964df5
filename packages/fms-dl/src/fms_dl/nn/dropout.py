"""`Dropout` (Srivastava et al., 2014), inverted: active in training, the identity in evaluation."""

from __future__ import annotations

from fms_dl.engine import Tensor
from fms_dl.nn import functional as F
from fms_dl.nn.module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """Zero elements with probability `p` and scale survivors by $1/(1-p)$ while training."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        """Apply (only when `self.training`)."""
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        """Hyper-parameters."""
        return f"p={self.p}"
