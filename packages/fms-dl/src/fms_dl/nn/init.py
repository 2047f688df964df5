"""Weight initialisers (Glorot & Bengio 2010; He et al. 2015), in place like `torch.nn.init`.

A layer with fan-in $n_\\text{in}$ and fan-out $n_\\text{out}$ keeps the variance of activations
(forward) and of gradients (backward) roughly constant when

* **Xavier/Glorot** (for tanh/linear units): $\\operatorname{Var}(w) = \\text{gain}^2 \\cdot 2/(n_\\text{in}+n_\\text{out})$;
  uniform on $[-a, a]$ with $a = \\text{gain}\\sqrt{6/(n_\\text{in}+n_\\text{out})}$.
* **Kaiming/He** (for ReLU units, which zero half their input): $\\operatorname{Var}(w) =
  \\text{gain}^2 / n_\\text{mode}$ with gain $\\sqrt 2$; uniform bound $\\text{gain}\\sqrt{3/n_\\text{mode}}$.

Each function draws from the generator seeded by `fms_dl.manual_seed`.
"""

from __future__ import annotations

import math

import numpy as np

from fms_dl.engine import Tensor, default_generator, no_grad

__all__ = [
    "calculate_gain",
    "constant_",
    "kaiming_normal_",
    "kaiming_uniform_",
    "normal_",
    "ones_",
    "uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity (the values of `torch.nn.init.calculate_gain`)."""
    linear = {"linear", "conv1d", "conv2d", "conv3d", "sigmoid", "identity"}
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _fans(t: Tensor) -> tuple[int, int]:
    if t.ndim < 2:
        raise ValueError(
            f"fan in and fan out need a tensor with at least 2 dims, got shape {t.shape}"
        )
    receptive = int(np.prod(t.shape[2:])) if t.ndim > 2 else 1
    return t.shape[1] * receptive, t.shape[0] * receptive


def _fill(t: Tensor, values: np.ndarray) -> Tensor:
    with no_grad():
        t.copy_(values.astype(t.dtype))
    return t


def uniform_(t: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """Fill with $U(a, b)$."""
    return _fill(t, default_generator().uniform(a, b, t.shape))


def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Fill with $N(\\text{mean}, \\text{std}^2)$."""
    return _fill(t, default_generator().normal(mean, std, t.shape))


def constant_(t: Tensor, value: float) -> Tensor:
    """Fill with `value`."""
    return _fill(t, np.full(t.shape, value))


def zeros_(t: Tensor) -> Tensor:
    """Fill with zeros."""
    return constant_(t, 0.0)


def ones_(t: Tensor) -> Tensor:
    """Fill with ones."""
    return constant_(t, 1.0)


def xavier_uniform_(t: Tensor, gain: float = 1.0) -> Tensor:
    """Glorot uniform: $U(-a, a)$, $a = \\text{gain}\\sqrt{6 / (n_\\text{in} + n_\\text{out})}$."""
    fan_in, fan_out = _fans(t)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -a, a)


def xavier_normal_(t: Tensor, gain: float = 1.0) -> Tensor:
    """Glorot normal: std $= \\text{gain}\\sqrt{2 / (n_\\text{in} + n_\\text{out})}$."""
    fan_in, fan_out = _fans(t)
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def _kaiming_std(t: Tensor, a: float, mode: str, nonlinearity: str) -> float:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fans(t)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(
    t: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> Tensor:
    """He uniform: $U(-b, b)$ with $b = \\sqrt 3\\,\\text{gain} / \\sqrt{n_\\text{mode}}$."""
    bound = math.sqrt(3.0) * _kaiming_std(t, a, mode, nonlinearity)
    return uniform_(t, -bound, bound)


def kaiming_normal_(
    t: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> Tensor:
    """He normal: std $= \\text{gain} / \\sqrt{n_\\text{mode}}$."""
    return normal_(t, 0.0, _kaiming_std(t, a, mode, nonlinearity))
