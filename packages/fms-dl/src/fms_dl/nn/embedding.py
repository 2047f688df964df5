"""`Embedding`: a lookup table whose rows are trained (the gradient scatters back with add)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fms_dl.engine import Tensor, no_grad
from fms_dl.nn import functional as F
from fms_dl.nn import init
from fms_dl.nn.module import Module, Parameter

__all__ = ["Embedding"]


class Embedding(Module):
    """Map integer ids `(...)` to rows of `weight` `(num_embeddings, embedding_dim)` -> `(..., dim)`.

    Initialised $N(0, 1)$ like PyTorch; the row `padding_idx` (if given) starts at zero and
    receives no gradient.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        dtype: npt.DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        if padding_idx is not None and not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(
                f"Embedding: padding_idx {padding_idx} out of range for {num_embeddings} rows"
            )
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = None if padding_idx is None else padding_idx % num_embeddings
        self.weight = Parameter(np.empty((num_embeddings, embedding_dim), dtype=dtype))
        init.normal_(self.weight)
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0.0

    def forward(self, indices: Tensor) -> Tensor:
        """Look up rows."""
        return F.embedding(indices, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        """Sizes."""
        return f"{self.num_embeddings}, {self.embedding_dim}"
