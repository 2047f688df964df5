"""`Module` and `Parameter`: the containers that give a model named, saveable state.

A `Module` keeps three ordered registries, filled automatically by attribute assignment as in
PyTorch: parameters (`Parameter`, trained), buffers (tensors that are state but not trained, e.g.
BatchNorm's running statistics) and sub-modules. Everything else (`named_parameters`,
`state_dict`, `train`/`eval`) walks that tree. State dicts are flat maps from dotted names
(`"encoder.0.weight"`) to numpy arrays, saved as safetensors by `save_model`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from fms_dl.engine import Array, Tensor, no_grad
from fms_dl.serialization import load_file, save_file

__all__ = [
    "IncompatibleKeys",
    "Module",
    "ModuleList",
    "Parameter",
    "Sequential",
    "StateDictError",
    "load_model",
    "save_model",
]


class Parameter(Tensor):
    """A tensor that a `Module` registers as trainable (`requires_grad=True` by default)."""

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        arr = data.data if isinstance(data, Tensor) else np.asarray(data)
        super().__init__(np.array(arr, copy=True), requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class StateDictError(KeyError, ValueError):
    """A state dict does not fit the module: names the missing, unexpected and mis-shaped keys."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class IncompatibleKeys(NamedTuple):
    """What `load_state_dict(strict=False)` could not match."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of every layer and model.

    Subclasses call `super().__init__()`, assign parameters, buffers and sub-modules as
    attributes, and define `forward`. Calling the module calls `forward`.

    Attributes:
        training: True in training mode (dropout active, batch statistics used), False after
            `eval()`.
    """

    training: bool
    _parameters: dict[str, Parameter | None]
    _buffers: dict[str, Tensor | None]
    _modules: dict[str, Module]

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})

    # -- registration -----------------------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() call in {type(self).__name__}"
            )
        if isinstance(value, Parameter):
            self.__dict__.pop(name, None)
            self._buffers.pop(name, None)
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self.__dict__.pop(name, None)
            self._parameters.pop(name, None)
            self._buffers.pop(name, None)
            self._modules[name] = value
        elif name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(
                    f"buffer {name!r} must be a Tensor or None, got {type(value).__name__}"
                )
            self._buffers[name] = value
        elif name in self._parameters:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} to parameter {name!r} (expected Parameter or None)"
                )
            self._parameters[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for key in ("_parameters", "_buffers", "_modules"):
            registry = d.get(key)
            if registry is not None and name in registry:
                return registry[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def register_buffer(self, name: str, tensor: Tensor | None) -> None:
        """Register state that is saved in the state dict but not trained."""
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(
                f"register_buffer: {name!r} must be a Tensor, got {type(tensor).__name__}"
            )
        self.__dict__.pop(name, None)
        self._buffers[name] = tensor

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register a parameter (or `None`, to keep an optional slot such as a missing bias)."""
        self.__dict__.pop(name, None)
        self._parameters[name] = param

    def add_module(self, name: str, module: Module) -> None:
        """Register a sub-module under `name`."""
        self._modules[name] = module

    # -- calling --------------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        forward = getattr(self, "forward", None)
        if forward is None:
            raise TypeError(f"{type(self).__name__} defines no forward() method")
        return forward(*args, **kwargs)

    # -- traversal ------------------------------------------------------------------------------

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """Yield `(dotted_name, module)` for this module and every descendant, once each."""
        seen: set[int] = set()

        def walk(m: Module, p: str) -> Iterator[tuple[str, Module]]:
            if id(m) in seen:
                return
            seen.add(id(m))
            yield p, m
            for n, child in m._modules.items():
                yield from walk(child, f"{p}.{n}" if p else n)

        yield from walk(self, prefix)

    def modules(self) -> Iterator[Module]:
        """Yield this module and every descendant."""
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Yield the direct sub-modules with their names."""
        yield from self._modules.items()

    def children(self) -> Iterator[Module]:
        """Yield the direct sub-modules."""
        yield from self._modules.values()

    def named_parameters(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """Yield `(dotted_name, parameter)`; a parameter shared by two modules appears once."""
        seen: set[int] = set()
        mods = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for mp, m in mods:
            for n, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mp}.{n}" if mp else n), p

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """Yield every parameter (what an optimiser is given)."""
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        """Yield `(dotted_name, buffer)`."""
        for mp, m in self.named_modules(prefix):
            for n, b in m._buffers.items():
                if b is not None:
                    yield (f"{mp}.{n}" if mp else n), b

    def buffers(self) -> Iterator[Tensor]:
        """Yield every buffer."""
        for _, b in self.named_buffers():
            yield b

    # -- modes and helpers ------------------------------------------------------------------------

    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and all descendants; returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (`train(False)`); returns self."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad = Tensor(np.zeros_like(p.data))

    def apply(self, fn: Callable[[Module], None]) -> Module:
        """Call `fn` on every descendant (children first) and on self; returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def to(self, dtype: npt.DTypeLike) -> Module:
        """Cast every floating parameter and buffer to `dtype`, in place; returns self."""
        with no_grad():
            for t in (*self.parameters(), *self.buffers()):
                if t.dtype.kind == "f":
                    t.data = t.data.astype(dtype)
        return self

    def double(self) -> Module:
        """Cast to float64."""
        return self.to(np.float64)

    def float(self) -> Module:
        """Cast to float32."""
        return self.to(np.float32)

    # -- state ----------------------------------------------------------------------------------

    def _state_items(self) -> Iterator[tuple[str, Tensor]]:
        # torch's order: each module's parameters, then its buffers, then its children.
        for mp, m in self.named_modules():
            for n, t in (*m._parameters.items(), *m._buffers.items()):
                if t is not None:
                    yield (f"{mp}.{n}" if mp else n), t

    def state_dict(self) -> dict[str, Array]:
        """A flat, ordered map from dotted names to copies of every parameter and buffer."""
        return {k: np.array(t.data, copy=True) for k, t in self._state_items()}

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        """Copy values from `state_dict` into this module's parameters and buffers.

        Nothing is modified unless every shape fits (and, when `strict`, every key matches).

        Args:
            state_dict: name to numpy array or `Tensor` (dtype is cast to the module's).
            strict: require exactly the module's keys.

        Returns:
            The missing and unexpected keys (both empty when `strict`).

        Raises:
            StateDictError: listing missing keys, unexpected keys and shape mismatches
                (`name: expected (a, b), got (c, d)`).
        """
        own = dict(self._state_items())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        arrays = {}
        mismatched = []
        for k, t in own.items():
            if k not in state_dict:
                continue
            v = state_dict[k]
            arr = np.asarray(v.data if isinstance(v, Tensor) else v)
            if arr.shape != t.shape:
                mismatched.append(f"{k}: expected shape {t.shape}, got {arr.shape}")
            arrays[k] = arr
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if mismatched:
            problems.append("shape mismatches: " + "; ".join(mismatched))
        if problems:
            raise StateDictError(
                f"load_state_dict for {type(self).__name__} failed: " + " | ".join(problems)
            )
        with no_grad():
            for k, arr in arrays.items():
                own[k].data = np.array(arr, dtype=own[k].dtype, copy=True)
        return IncompatibleKeys(missing, unexpected)

    # -- printing -------------------------------------------------------------------------------

    def extra_repr(self) -> str:
        """The hyper-parameters shown by `repr` (override in layers)."""
        return ""

    def __repr__(self) -> str:
        lines = [f"  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ("\n" + "\n".join(lines) + "\n)" if lines else ")")


class Sequential(Module):
    """Apply modules in order: `Sequential(Linear(4, 8), ReLU(), Linear(8, 1))`."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(
                    f"Sequential: argument {i} must be a Module, got {type(m).__name__}"
                )
            self.add_module(str(i), m)

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def forward(self, x: Any) -> Any:
        """Feed `x` through every module in turn."""
        for m in self._modules.values():
            x = m(x)
        return x


class ModuleList(Module):
    """A list of modules whose parameters are registered (indexable, iterable)."""

    def __init__(self, modules: list[Module] | None = None) -> None:
        super().__init__()
        for m in modules or []:
            self.append(m)

    def append(self, module: Module) -> ModuleList:
        """Add a module at the end."""
        self.add_module(str(len(self._modules)), module)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


def save_model(
    module: Module, filename: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> None:
    """Save `module.state_dict()` as a safetensors file, atomically (see `fms_dl.serialization`)."""
    save_file(module.state_dict(), filename, metadata)


def load_model(
    module: Module, filename: str | os.PathLike[str], strict: bool = True
) -> IncompatibleKeys:
    """Load a safetensors file written by `save_model` (or by `safetensors`) into `module`."""
    return module.load_state_dict(load_file(filename), strict=strict)
