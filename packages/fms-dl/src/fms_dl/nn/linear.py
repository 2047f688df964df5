"""`Linear`, `Identity` and `Flatten`."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from fms_dl.engine import Tensor
from fms_dl.nn import functional as F
from fms_dl.nn import init
from fms_dl.nn.module import Module, Parameter

__all__ = ["Flatten", "Identity", "Linear"]


class Linear(Module):
    """$y = x W^\\top + b$, with `weight` `(out_features, in_features)` as in PyTorch.

    Initialised like PyTorch: $W, b \\sim U(-1/\\sqrt{n_\\text{in}}, 1/\\sqrt{n_\\text{in}})$ (which is
    `kaiming_uniform_(a=sqrt(5))`).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: npt.DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(
                f"Linear: in_features and out_features must be positive, got {in_features}, {out_features}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(np.empty((out_features, in_features), dtype=dtype))
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if bias:
            self.bias = Parameter(np.empty(out_features, dtype=dtype))
            init.uniform_(self.bias, -1 / math.sqrt(in_features), 1 / math.sqrt(in_features))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        """`x` `(..., in_features)` -> `(..., out_features)`."""
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        """Sizes."""
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Identity(Module):
    """Return the input unchanged."""

    def forward(self, x: Tensor) -> Tensor:
        """Identity."""
        return x


class Flatten(Module):
    """Flatten dims `start_dim..end_dim` (default: all but the batch dim)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, x: Tensor) -> Tensor:
        """Flatten."""
        return x.flatten(self.start_dim, self.end_dim)
