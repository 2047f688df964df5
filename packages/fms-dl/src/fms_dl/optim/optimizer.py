"""The `Optimizer` base class: parameter groups and per-parameter state, as in `torch.optim`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import numpy as np

from fms_dl.engine import Array, Tensor, no_grad

__all__ = ["Optimizer"]


class Optimizer:
    """Hold parameter groups (each a dict with `"params"` and hyper-parameters) and state.

    Subclasses implement `_update(p, grad, state, group)`, which changes `p.data` in place;
    `step()` calls it for every parameter that has a gradient, under `no_grad`.

    Args:
        params: an iterable of parameters, or of dicts `{"params": [...], "lr": ...}` (groups).
        defaults: hyper-parameters used where a group does not set them.
    """

    def __init__(
        self, params: Iterable[Tensor] | Iterable[dict[str, Any]], defaults: dict[str, Any]
    ) -> None:
        self.defaults = defaults
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Tensor, dict[str, Any]] = {}
        items = list(params)
        if not items:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = cast(
            list[dict[str, Any]], items if isinstance(items[0], dict) else [{"params": items}]
        )
        for g in groups:
            self.add_param_group(dict(g))

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group; missing hyper-parameters are taken from `defaults`."""
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"{type(self).__name__}: params must be Tensors, got {type(p).__name__}"
                )
            if p.dtype.kind != "f":
                raise TypeError(
                    f"{type(self).__name__}: cannot optimise a tensor of dtype {p.dtype}"
                )
            if id(p) in seen:
                raise ValueError(
                    f"{type(self).__name__}: a parameter of shape {p.shape} appears in two groups"
                )
        group["params"] = params
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's gradient."""
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad = Tensor(np.zeros_like(p.data))

    def step(self) -> None:
        """Update every parameter that has a gradient."""
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state.setdefault(p, {})
                    self._update(p, p.grad.data, state, group)

    def _update(self, p: Tensor, grad: Array, state: dict[str, Any], group: dict[str, Any]) -> None:
        raise TypeError(f"{type(self).__name__} does not define an update rule")  # pragma: no cover

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v}" for k, v in self.defaults.items())
        return f"{type(self).__name__}({hp})"
