"""Activation layers: thin `Module` wrappers of the `Tensor` ops."""

from __future__ import annotations

from fms_dl.engine import Tensor
from fms_dl.nn.module import Module

__all__ = ["GELU", "LogSoftmax", "ReLU", "SiLU", "Sigmoid", "Softmax", "Tanh"]


class ReLU(Module):
    """$\\max(x, 0)$."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply."""
        return x.relu()


class GELU(Module):
    """$x\\,\\Phi(x)$ (`approximate="tanh"` for the tanh form)."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        """Apply."""
        return x.gelu(self.approximate)


class SiLU(Module):
    """$x\\,\\sigma(x)$."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply."""
        return x.silu()


class Tanh(Module):
    """$\\tanh x$."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply."""
        return x.tanh()


class Sigmoid(Module):
    """$1/(1+e^{-x})$."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply."""
        return x.sigmoid()


class Softmax(Module):
    """Softmax along `dim`."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        """Apply."""
        return x.softmax(self.dim)


class LogSoftmax(Module):
    """Log-softmax along `dim`."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        """Apply."""
        return x.log_softmax(self.dim)
