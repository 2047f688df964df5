"""Stateless functions behind the layers and losses (`fms_dl.nn.functional`, imported as `F`).

Every function here composes `Tensor` ops; none writes a gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fms_dl import engine as _t
from fms_dl.engine import ShapeError, Tensor, no_grad, where

__all__ = [
    "avg_pool2d",
    "batch_norm",
    "binary_cross_entropy_with_logits",
    "conv2d",
    "cross_entropy",
    "dropout",
    "embedding",
    "gelu",
    "layer_norm",
    "linear",
    "log_softmax",
    "max_pool2d",
    "mse_loss",
    "nll_loss",
    "relu",
    "sigmoid",
    "silu",
    "softmax",
    "tanh",
]

conv2d = _t.conv2d
linear = _t.linear
max_pool2d = _t.max_pool2d
avg_pool2d = _t.avg_pool2d


def relu(x: Tensor) -> Tensor:
    """$\\max(x, 0)$."""
    return x.relu()


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """$x\\,\\Phi(x)$ (see `Tensor.gelu`)."""
    return x.gelu(approximate)


def silu(x: Tensor) -> Tensor:
    """$x\\,\\sigma(x)$."""
    return x.silu()


def sigmoid(x: Tensor) -> Tensor:
    """$1/(1+e^{-x})$."""
    return x.sigmoid()


def tanh(x: Tensor) -> Tensor:
    """$\\tanh x$."""
    return x.tanh()


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Stable softmax along `dim`."""
    return x.softmax(dim)


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Stable log-softmax along `dim`."""
    return x.log_softmax(dim)


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability `p` and scale the rest by $1/(1-p)$ (inverted dropout)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = _t.default_generator().random(x.shape) >= p
    return x * Tensor(keep.astype(x.dtype) / np.asarray(1.0 - p, dtype=x.dtype))


def embedding(indices: Tensor, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Rows of `weight` (`(num, dim)`) at integer `indices`; the row `padding_idx` gets no gradient."""
    idx = indices.data
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got dtype {idx.dtype}")
    n = weight.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ShapeError(
            f"embedding: indices must be in [0, {n}) for a weight of shape {weight.shape}, got "
            f"range [{idx.min()}, {idx.max()}]"
        )
    out = weight[idx]
    if padding_idx is None:
        return out
    is_pad = (idx == padding_idx)[..., None]
    return where(is_pad, weight.detach()[idx], out)


def _reduce(loss: Tensor, reduction: str, op: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error $\\frac1n \\sum (x - y)^2$."""
    if input.shape != target.shape:
        raise ShapeError(f"mse_loss: input shape {input.shape} != target shape {target.shape}")
    d = input - target
    return _reduce(d * d, reduction, "mse_loss")


def _class_last(
    input: Tensor, target: Tensor, op: str
) -> tuple[Tensor, np.ndarray, tuple[int, ...]]:
    """Move the class dim (1) last and flatten: `(N, C, d...)` -> `(M, C)`, targets -> `(M,)`."""
    t = np.asarray(target.data)
    if (
        input.ndim < 1
        or (input.ndim == 1 and t.ndim != 0)
        or (input.ndim >= 2 and (t.shape != (input.shape[0], *input.shape[2:])))
    ):
        raise ShapeError(
            f"{op}: input of shape {input.shape} (N, C, ...) needs target of shape "
            f"{(input.shape[0], *input.shape[2:]) if input.ndim >= 2 else ()}, got {t.shape}"
        )
    if t.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class indices, got dtype {t.dtype}")
    if input.ndim == 1:
        return input.reshape(1, -1), t.reshape(1), ()
    c = input.shape[1]
    if input.ndim > 2:
        perm = (0, *range(2, input.ndim), 1)
        input = input.permute(*perm).reshape(-1, c)
    return input, t.reshape(-1), t.shape


def _nll(
    logp: Tensor, t: np.ndarray, ignore_index: int, label_smoothing: float, op: str
) -> tuple[Tensor, np.ndarray]:
    c = logp.shape[1]
    valid = t != ignore_index
    bad = valid & ((t < 0) | (t >= c))
    if bad.any():
        raise ValueError(
            f"{op}: target values must be in [0, {c}) or ignore_index, got {t[bad][:5].tolist()}"
        )
    safe = np.where(valid, t, 0).astype(np.int64)
    mask = Tensor(valid.astype(logp.dtype))
    loss = -logp.gather(1, safe[:, None]).squeeze(1) * mask
    if label_smoothing > 0.0:
        smooth = -logp.sum(1) * mask * (1.0 / c)
        loss = loss * (1.0 - label_smoothing) + smooth * label_smoothing
    return loss, valid


def _reduce_valid(
    loss: Tensor, valid: np.ndarray, shape: tuple[int, ...], reduction: str, op: str
) -> Tensor:
    if reduction == "mean":
        return loss.sum() * (1.0 / float(valid.sum())) if valid.any() else loss.sum() * math.nan
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss.reshape(*shape)
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def nll_loss(
    input: Tensor, target: Tensor, ignore_index: int = -100, reduction: str = "mean"
) -> Tensor:
    """Negative log-likelihood of log-probabilities `input` `(N, C, ...)` at class `target`."""
    logp, t, shape = _class_last(input, target, "nll_loss")
    loss, valid = _nll(logp, t, ignore_index, 0.0, "nll_loss")
    return _reduce_valid(loss, valid, shape, reduction, "nll_loss")


def cross_entropy(
    input: Tensor,
    target: Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy from logits, like `torch.nn.functional.cross_entropy`.

    With $p = \\operatorname{softmax}(x)$, smoothing $\\varepsilon$ and $C$ classes, each kept
    example contributes $(1-\\varepsilon)(-\\log p_y) + \\frac{\\varepsilon}{C}\\sum_c (-\\log p_c)$;
    targets equal to `ignore_index` contribute nothing and are excluded from the mean.

    Args:
        input: logits `(N, C)` or `(N, C, d1, ...)`.
        target: integer classes `(N,)` or `(N, d1, ...)`.
        ignore_index: a target value to skip.
        reduction: `"mean"` (over kept targets), `"sum"` or `"none"`.
        label_smoothing: $\\varepsilon \\in [0, 1]$.
    """
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    logits, t, shape = _class_last(input, target, "cross_entropy")
    loss, valid = _nll(logits.log_softmax(1), t, ignore_index, label_smoothing, "cross_entropy")
    return _reduce_valid(loss, valid, shape, reduction, "cross_entropy")


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    """$-[w_p\\, y \\log\\sigma(x) + (1-y)\\log(1-\\sigma(x))]$, computed stably from logits.

    Uses $-\\log\\sigma(x) = \\max(-x, 0) + \\log(1 + e^{-|x|})$, which never overflows.
    """
    if input.shape != target.shape:
        raise ShapeError(
            f"binary_cross_entropy_with_logits: input shape {input.shape} != target shape {target.shape}"
        )
    softplus_neg = (-input).relu() + ((-input.abs()).exp() + 1.0).log()  # -log sigmoid(x)
    if pos_weight is None:
        loss = (1.0 - target) * input + softplus_neg
    else:
        loss = (1.0 - target) * input + ((pos_weight - 1.0) * target + 1.0) * softplus_neg
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


def layer_norm(
    x: Tensor,
    normalized_shape: Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise over the trailing `normalized_shape` dims (Ba et al., 2016).

    $y = \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}}\\gamma + \\beta$ with the biased variance.
    """
    shape = tuple(normalized_shape)
    if x.shape[x.ndim - len(shape) :] != shape:
        raise ShapeError(
            f"layer_norm: input of shape {x.shape} does not end with normalized_shape {shape}"
        )
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    mu = x.mean(axes, keepdim=True)
    var = x.var(axes, correction=0, keepdim=True)
    y = (x - mu) / (var + eps).sqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalisation (Ioffe & Szegedy, 2015) over every dim but the channel dim 1.

    In training the batch mean and biased variance normalise, and the running estimates move
    by `momentum` toward the batch mean and the *unbiased* variance (PyTorch's convention).
    """
    if x.ndim < 2:
        raise ShapeError(f"batch_norm: expected input (N, C, ...), got {x.shape}")
    c = x.shape[1]
    axes = (0, *range(2, x.ndim))
    shape = (1, c) + (1,) * (x.ndim - 2)
    if training or running_mean is None or running_var is None:
        n = x.numel() // c
        if n <= 1:
            raise ValueError(
                f"batch_norm: expected more than 1 value per channel in training, got input {x.shape}"
            )
        mu = x.mean(axes, keepdim=True)
        var = x.var(axes, correction=0, keepdim=True)
        if training and running_mean is not None and running_var is not None:
            with no_grad():
                running_mean.data = (1 - momentum) * running_mean.data + momentum * mu.data.reshape(
                    c
                )
                running_var.data = (1 - momentum) * running_var.data + momentum * var.data.reshape(
                    c
                ) * (n / (n - 1))
    else:
        mu = running_mean.reshape(*shape)
        var = running_var.reshape(*shape)
    y = (x - mu) / (var + eps).sqrt()
    if weight is not None:
        y = y * weight.reshape(*shape)
    if bias is not None:
        y = y + bias.reshape(*shape)
    return y
