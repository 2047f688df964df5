"""Loss modules: `MSELoss`, `CrossEntropyLoss`, `NLLLoss`, `BCEWithLogitsLoss` (see `functional`)."""

from __future__ import annotations

from fms_dl.engine import Tensor
from fms_dl.nn import functional as F
from fms_dl.nn.module import Module

__all__ = ["BCEWithLogitsLoss", "CrossEntropyLoss", "MSELoss", "NLLLoss"]


class MSELoss(Module):
    """Mean squared error."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Loss."""
        return F.mse_loss(input, target, self.reduction)


class CrossEntropyLoss(Module):
    """Cross-entropy from logits, with `ignore_index` and `label_smoothing`."""

    def __init__(
        self, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        self.ignore_index, self.reduction, self.label_smoothing = (
            ignore_index,
            reduction,
            label_smoothing,
        )

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Loss."""
        return F.cross_entropy(
            input, target, self.ignore_index, self.reduction, self.label_smoothing
        )


class NLLLoss(Module):
    """Negative log-likelihood of log-probabilities."""

    def __init__(self, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Loss."""
        return F.nll_loss(input, target, self.ignore_index, self.reduction)


class BCEWithLogitsLoss(Module):
    """Binary cross-entropy from logits (numerically stable), optional `pos_weight`."""

    def __init__(self, reduction: str = "mean", pos_weight: Tensor | None = None) -> None:
        super().__init__()
        self.reduction, self.pos_weight = reduction, pos_weight

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Loss."""
        return F.binary_cross_entropy_with_logits(input, target, self.reduction, self.pos_weight)
