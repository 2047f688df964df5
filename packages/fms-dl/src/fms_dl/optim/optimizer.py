"""The `Optimizer` base class: parameter groups and per-parameter state, as in `torch.optim`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any, cast

import numpy as np

from fms_dl.engine import Array, Tensor, no_grad
from fms_dl.serialization import load_file_with_metadata, save_file

__all__ = ["Optimizer", "load_optimizer", "save_optimizer"]


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

    # -- state ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The optimiser's state in `torch.optim`'s layout, with numpy arrays.

        `{"state": {i: {"step": 3, "exp_avg": array, ...}}, "param_groups": [{"lr": ...,
        "params": [i, ...]}]}`, where `i` numbers the parameters in group order. Arrays are copies.
        """
        index = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        state = {
            index[id(p)]: {
                k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v
                for k, v in st.items()
                if k != "scratch"
            }
            for p, st in self.state.items()
        }
        groups = [
            {
                **{k: v for k, v in g.items() if k != "params"},
                "params": [index[id(p)] for p in g["params"]],
            }
            for g in self.param_groups
        ]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state produced by `state_dict` (for the same parameters, in the same order).

        Raises:
            ValueError: if the number of groups, the parameters per group, or a state array's
                shape does not match; nothing is modified then.
        """
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: got {len(groups)} parameter groups, expected {len(self.param_groups)}"
            )
        params = [p for g in self.param_groups for p in g["params"]]
        for i, (g, own) in enumerate(zip(groups, self.param_groups, strict=True)):
            if len(g["params"]) != len(own["params"]):
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: group {i} has {len(g['params'])} parameters, expected {len(own['params'])}"
                )
        new_state: dict[Tensor, dict[str, Any]] = {}
        for key, st in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: state for parameter {i}, but there are {len(params)}"
                )
            p = params[i]
            for k, v in st.items():
                if isinstance(v, np.ndarray) and v.shape != p.shape:
                    raise ValueError(
                        f"{type(self).__name__}.load_state_dict: state {k!r} of parameter {i} has shape {v.shape}, expected {p.shape}"
                    )
            new_state[p] = {
                k: np.array(v, dtype=p.dtype, copy=True) if isinstance(v, np.ndarray) else v
                for k, v in st.items()
            }
        for g, own in zip(groups, self.param_groups, strict=True):
            own.update(
                {k: (tuple(v) if isinstance(v, list) else v) for k, v in g.items() if k != "params"}
            )
        self.state = new_state

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v}" for k, v in self.defaults.items())
        return f"{type(self).__name__}({hp})"


_META_KEY = "fms_dl.optimizer"


def save_optimizer(optimizer: Optimizer, filename: str | os.PathLike[str]) -> None:
    """Save `optimizer.state_dict()` as safetensors, atomically.

    Arrays go in the tensor section as `state.{i}.{name}`; hyper-parameters and scalar state
    (such as `step`) go as JSON in the `__metadata__` map, so the file holds no pickled objects.
    """
    sd = optimizer.state_dict()
    tensors: dict[str, Array] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for i, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, np.ndarray):
                tensors[f"state.{i}.{k}"] = v
            else:
                scalars.setdefault(str(i), {})[k] = v
    meta = {
        "type": type(optimizer).__name__,
        "param_groups": sd["param_groups"],
        "scalars": scalars,
    }
    save_file(tensors, filename, metadata={_META_KEY: json.dumps(meta)})


def load_optimizer(optimizer: Optimizer, filename: str | os.PathLike[str]) -> None:
    """Restore an optimiser saved by `save_optimizer` into `optimizer` (same type and parameters).

    Raises:
        fms_dl.SafetensorsError: if the file is truncated or corrupt.
        ValueError: if it holds no optimiser state, another optimiser type, or state that does
            not fit these parameters.
    """
    tensors, metadata = load_file_with_metadata(filename)
    if _META_KEY not in metadata:
        raise ValueError(f"load_optimizer: {os.fspath(filename)!r} holds no optimiser state")
    meta = json.loads(metadata[_META_KEY])
    if meta["type"] != type(optimizer).__name__:
        raise ValueError(
            f"load_optimizer: the file holds {meta['type']} state, not {type(optimizer).__name__}"
        )
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in meta["scalars"].items()}
    for name, arr in tensors.items():
        _, i, k = name.split(".", 2)
        state.setdefault(int(i), {})[k] = arr
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
