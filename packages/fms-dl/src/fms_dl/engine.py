"""The `Tensor` and every op rule: reverse-mode automatic differentiation in numpy.

This one file is the whole engine, in the spirit of micrograd and tinygrad. A `Tensor` wraps a
numpy array. Each op computes its output with numpy and, when any input requires a gradient,
records on the output its parents and a *backward rule*: a closure that maps the gradient of the
loss with respect to the output, $\\bar y = \\partial L / \\partial y$, to the gradients with respect
to each input (the vector-Jacobian product $\\bar x = J^\\top \\bar y$). `Tensor.backward` sorts the
recorded graph topologically and applies the rules from the output back to the leaves, summing the
contributions of every path (the multivariate chain rule).

Everything above this file (layers, losses, optimisers) composes these ops and never writes a
gradient by hand.

Three details make it a real engine rather than a toy:

* **Broadcasting.** If $x$ of shape `(3, 1)` is broadcast to `(2, 3, 4)` in the forward pass, its
  gradient is the upstream gradient summed over the broadcast axes (`_unbroadcast`).
* **Version counter.** Every tensor carries a counter bumped by each in-place change (`data`
  assignment, `add_`, `mul_`, ...). An op that saves a tensor for its backward rule remembers the
  version it saw; `backward` raises `InplaceModificationError` if it changed, instead of silently
  returning a wrong gradient.
* **`no_grad`.** Inside `with no_grad():` ops record nothing, which is how optimisers update weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeAlias, cast

import numpy as np
import numpy.typing as npt

__all__ = [
    "AutogradError",
    "InplaceModificationError",
    "ShapeError",
    "Tensor",
    "arange",
    "avg_pool2d",
    "cat",
    "conv2d",
    "default_generator",
    "enable_grad",
    "float32",
    "float64",
    "int64",
    "is_grad_enabled",
    "linear",
    "manual_seed",
    "matmul",
    "max_pool2d",
    "no_grad",
    "ones",
    "rand",
    "randn",
    "result_type",
    "stack",
    "tensor",
    "where",
    "zeros",
]

Array: TypeAlias = npt.NDArray[Any]
Scalar: TypeAlias = int | float | bool
TensorLike: TypeAlias = "Tensor | Scalar | Array | Sequence[Any]"
_Backward: TypeAlias = Callable[[Array], tuple["Array | None", ...]]

_Float = float
float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int64 = np.dtype(np.int64)


class ShapeError(ValueError):
    """Raised when the shapes given to an op do not fit; the message names the op and both shapes."""


class AutogradError(RuntimeError, ValueError):
    """Raised when `backward` is misused (non-scalar output without a gradient, no graph, ...)."""


class InplaceModificationError(AutogradError):
    """Raised by `backward` when a tensor saved for a backward rule was modified in place."""


# ------------------------------------------------------------------------------------------------
# Global state: gradient recording and the random generator
# ------------------------------------------------------------------------------------------------

_grad_enabled = True
_generator = np.random.default_rng(0)


def is_grad_enabled() -> bool:
    """Return whether ops currently record the graph."""
    return _grad_enabled


class _GradMode:
    """A context manager (and decorator) that sets whether ops record the graph."""

    _mode = True

    def __init__(self) -> None:
        self._prev: list[bool] = []

    def __enter__(self) -> None:
        global _grad_enabled
        self._prev.append(_grad_enabled)
        _grad_enabled = self._mode

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _grad_enabled
        _grad_enabled = self._prev.pop()

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with type(self)():
                return fn(*args, **kwargs)

        wrapper.__name__ = getattr(fn, "__name__", "wrapper")
        wrapper.__doc__ = fn.__doc__
        return wrapper


class no_grad(_GradMode):
    """Disable graph recording: `with no_grad(): ...` or `@no_grad()` on a function."""

    _mode = False


class enable_grad(_GradMode):
    """Re-enable graph recording inside a `no_grad` block."""

    _mode = True


def manual_seed(seed: int) -> np.random.Generator:
    """Seed the generator behind `randn`, `rand`, dropout and the `nn.init` functions.

    Args:
        seed: a non-negative integer.

    Returns:
        The new `numpy.random.Generator`.
    """
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator() -> np.random.Generator:
    """Return the generator seeded by `manual_seed`."""
    return _generator


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def _as_array(data: Any, dtype: npt.DTypeLike | None = None) -> Array:
    """Convert `data` to an array with torch's defaults: Python floats become float32."""
    if isinstance(data, Tensor):
        arr = data._data
    elif isinstance(data, np.ndarray | np.generic):
        arr = np.asarray(data)
    else:
        arr = np.asarray(data)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    elif arr.dtype.kind == "f" and arr.dtype not in (float32, float64):
        arr = arr.astype(np.float32)
    elif arr.dtype.kind in "iu":
        arr = arr.astype(np.int64, copy=False)
    return arr


def _unbroadcast(grad: Array, shape: tuple[int, ...]) -> Array:
    """Sum `grad` over the axes along which an input of `shape` was broadcast.

    If $y = f(x)$ broadcasts $x$, every copy of $x_i$ receives gradient, and the chain rule adds
    them: $\\bar x_i = \\sum_{\\text{copies}} \\bar y$.
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def _broadcast_shape(op: str, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError:
        raise ShapeError(f"{op}: cannot broadcast shapes {a} and {b}") from None


def _norm_axis(axis: int | Sequence[int] | None, ndim: int, op: str) -> tuple[int, ...]:
    """`axis` as a tuple of non-negative axes; a 0-d tensor accepts dim 0 or -1 and has none."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -max(ndim, 1) <= a < max(ndim, 1):
            raise ShapeError(f"{op}: dim {a} is out of range for a tensor with {ndim} dims")
        out.append(a % max(ndim, 1))
    return tuple(out) if ndim else ()


def _pair(v: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return (int(v[0]), int(v[1]))


def _is_float(arr: Array) -> bool:
    return arr.dtype.kind == "f"


# torch's type promotion: a category (bool < integer < float) and a priority tier for each operand
# (0: a tensor with dims, 1: a 0-d tensor or numpy scalar, 2: a Python number).
_CATEGORY = {"b": 0, "i": 1, "u": 1, "f": 2}
_SCALAR_DTYPE = {0: np.dtype(np.bool_), 1: int64, 2: float32}  # a Python bool, int, float


def _dtype_and_tier(value: Any) -> tuple[np.dtype[Any], int]:
    if isinstance(value, Tensor):
        return value.dtype, (0 if value.ndim else 1)
    if isinstance(value, bool):
        return _SCALAR_DTYPE[0], 2
    if isinstance(value, int):
        return _SCALAR_DTYPE[1], 2
    if isinstance(value, float):
        return _SCALAR_DTYPE[2], 2
    arr = _as_array(value)
    return arr.dtype, (0 if arr.ndim else 1)


def result_type(*operands: Any) -> np.dtype[Any]:
    """The dtype of an elementwise op on `operands`, by PyTorch's type-promotion rules.

    The result takes the highest *category* among the operands (bool < integer < float), so
    `bool + 1` is int64 and `int64 * 2.5` is float. Within that category the dtype comes from
    the operands of the highest *priority* that have it: tensors with dimensions, then 0-d
    tensors, then Python numbers (whose float is the default dtype, float32). So a float32
    tensor times a 0-d float64 tensor stays float32, while an int64 tensor plus a 0-d float64
    tensor is float64.
    """
    kinds = [_dtype_and_tier(v) for v in operands]
    top = max(_CATEGORY[d.kind] for d, _ in kinds)
    tier = min(t for d, t in kinds if _CATEGORY[d.kind] == top)
    if tier == 2:
        return _SCALAR_DTYPE[top]
    return np.result_type(*(d for d, t in kinds if t == tier and _CATEGORY[d.kind] == top))


def _operand(value: Any, dtype: np.dtype[Any]) -> Tensor:
    """`value` as a Tensor: a Tensor unchanged, a Python number as a 0-d tensor of `dtype`."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, int | float | bool):
        return Tensor._wrap(np.asarray(value, dtype=dtype))
    return Tensor(value)


def _floating(x: Tensor) -> Array:
    """The data of `x` for an op whose result is float: integers and bools become float32."""
    return x._data if _is_float(x._data) else x._data.astype(float32)


def _require_float(x: Tensor, op: str) -> None:
    """Ops that PyTorch defines only for floats (mean, var, softmax, GELU, SiLU) refuse others."""
    if not _is_float(x._data):
        raise TypeError(f"{op}: expected a float tensor, got dtype {x.dtype} (cast with .float())")


def _refuse_bool(x: Tensor, op: str) -> None:
    """Arithmetic that PyTorch refuses on bool tensors (negation, subtraction, abs, relu)."""
    if x.dtype == np.bool_:
        raise TypeError(
            f"{op}: not defined for a bool tensor (use ~ or logical ops, or cast with .long())"
        )


class _Version:
    """A version counter shared by a tensor and its detached aliases."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


# ------------------------------------------------------------------------------------------------
# The Tensor
# ------------------------------------------------------------------------------------------------


class Tensor:
    """An n-dimensional array that records the ops applied to it for reverse-mode autodiff.

    Args:
        data: array-like. Python floats become `float32` (PyTorch's default); numpy arrays keep
            their dtype (float32 or float64 for differentiable tensors; integers become int64)
            and share memory with the tensor, like `torch.from_numpy` (`fms_dl.tensor` copies).
        dtype: optional numpy dtype to cast to.
        requires_grad: whether `backward` should fill `.grad` for this (leaf) tensor.

    Attributes:
        grad: the accumulated gradient (a `Tensor`), or `None` before the first backward.
        requires_grad: whether gradients flow to this tensor.
    """

    __array_ufunc__ = None  # make `ndarray * Tensor` defer to Tensor.__rmul__
    __hash__ = object.__hash__

    def __init__(
        self, data: Any, dtype: npt.DTypeLike | None = None, requires_grad: bool = False
    ) -> None:
        self._data: Array = _as_array(data, dtype)
        self.grad: Tensor | None = None
        self._parents: tuple[Tensor, ...] = ()
        self._backward: _Backward | None = None
        # (version counter, value seen, shape) of each tensor the backward rule needs; holding
        # the counter rather than the tensor avoids a reference cycle when an op saves its output
        self._saved: tuple[tuple[_Version, int, tuple[int, ...]], ...] = ()
        self._op = ""
        self._retain = False
        self._version = _Version()
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # -- construction of op results -----------------------------------------------------------

    @classmethod
    def _wrap(cls, data: Array) -> Tensor:
        out = Tensor.__new__(Tensor)
        out._data = data
        out.grad = None
        out._parents = ()
        out._backward = None
        out._saved = ()
        out._op = ""
        out._retain = False
        out._version = _Version()
        out.requires_grad = False
        return out

    @staticmethod
    def _result(
        data: Array,
        parents: tuple[Tensor, ...],
        backward: _Backward,
        op: str,
        saved: tuple[Tensor, ...] = (),
        save_output: bool = False,
    ) -> Tensor:
        """Wrap an op's output and, if any parent needs a gradient, record the backward rule."""
        out = Tensor._wrap(data)
        if _grad_enabled and any(p.requires_grad for p in parents):
            out.requires_grad = True
            out._parents = parents
            out._backward = backward
            out._op = op
            saved_all = (*saved, out) if save_output else saved
            out._saved = tuple((t._version, t._version.value, t.shape) for t in saved_all)
        return out

    # -- basic properties ------------------------------------------------------------------------

    @property
    def data(self) -> Array:
        """The underlying numpy array. Assigning to it bumps the version counter."""
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data = np.asarray(value._data if isinstance(value, Tensor) else value)
        self._version.value += 1

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape, as a tuple."""
        return tuple(self._data.shape)

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return int(self._data.ndim)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The numpy dtype."""
        return self._data.dtype

    @property
    def is_leaf(self) -> bool:
        """True for tensors created by the user rather than by an op that records a gradient."""
        return self._backward is None

    @property
    def grad_fn(self) -> str | None:
        """The name of the op that produced this tensor, or `None` for a leaf."""
        return self._op or None

    @property
    def T(self) -> Tensor:
        """The tensor with all axes reversed."""
        return self.permute(*reversed(range(self.ndim)))

    def size(self, dim: int | None = None) -> tuple[int, ...] | int:
        """The shape, or the size of one dimension."""
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        """The number of dimensions."""
        return self.ndim

    def numel(self) -> int:
        """The number of elements."""
        return int(self._data.size)

    def numpy(self) -> Array:
        """The underlying numpy array (shared, not copied)."""
        return self._data

    def item(self) -> Any:
        """The value of a one-element tensor as a Python number."""
        if self._data.size != 1:
            raise ValueError(f"item: expected a tensor with one element, got shape {self.shape}")
        return self._data.item()

    def tolist(self) -> Any:
        """The values as nested Python lists."""
        return self._data.tolist()

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return int(self._data.shape[0])

    def __iter__(self) -> Iterator[Tensor]:
        """Iterate over the first dimension (each item is a differentiable view)."""
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        extra = f", grad_fn={self._op}" if self._op else ""
        extra += ", requires_grad=True" if self.requires_grad and not self._op else ""
        return f"Tensor({np.array2string(self._data, separator=', ')}, dtype={self.dtype}{extra})"

    def __bool__(self) -> bool:
        return bool(self._data)

    # -- autograd --------------------------------------------------------------------------------

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set `requires_grad` in place (only float tensors can require gradients)."""
        if requires_grad and not _is_float(self._data):
            raise TypeError(
                f"requires_grad: only float tensors can require gradients, got dtype {self.dtype}"
            )
        self.requires_grad = requires_grad
        return self

    def retain_grad(self) -> None:
        """Keep `.grad` on this non-leaf tensor after `backward` (leaves always keep theirs)."""
        self._retain = True

    def detach(self) -> Tensor:
        """A tensor sharing the data (and version counter) but cut from the graph."""
        out = Tensor._wrap(self._data)
        out._version = self._version
        return out

    def backward(self, gradient: Tensor | Array | None = None, retain_graph: bool = False) -> None:
        """Backpropagate: accumulate $\\partial(\\text{self}) / \\partial x$ into `x.grad` of each leaf.

        The graph is sorted topologically (children before parents when read in reverse), so each
        node's upstream gradient is complete (summed over every path) before its rule runs.

        Args:
            gradient: $\\bar y$, the gradient of some scalar with respect to this tensor. May be
                omitted only when this tensor has one element (then $\\bar y = 1$).
            retain_graph: keep the backward rules (and the arrays they saved) so that the graph
                can be backpropagated again. By default they are released as soon as they have
                run, as in PyTorch, which frees the activations even while the output lives on.

        Raises:
            AutogradError: if this tensor does not require a gradient, or it is not a scalar and
                no `gradient` was given, or `gradient` has the wrong shape, or the graph was
                already backpropagated without `retain_graph=True`.
            InplaceModificationError: if a tensor saved for the backward pass was modified in place.
        """
        if not self.requires_grad:
            raise AutogradError(
                "backward: this tensor does not require grad and has no graph "
                "(did you forget requires_grad=True, or compute it under no_grad?)"
            )
        if gradient is None:
            if self._data.size != 1:
                raise AutogradError(
                    f"backward: grad can be implicitly created only for a scalar output, got "
                    f"shape {self.shape}; pass gradient= with that shape, or reduce first (.sum())"
                )
            seed = np.ones_like(self._data)
        else:
            seed = _as_array(gradient, self.dtype)
            if seed.shape != self._data.shape:
                raise AutogradError(
                    f"backward: gradient has shape {seed.shape} but the tensor has shape "
                    f"{self.shape}"
                )

        # Iterative depth-first topological sort (deep RNN graphs would overflow recursion).
        order: list[Tensor] = []
        visited: set[int] = set()
        stack: list[tuple[Tensor, bool]] = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            for p in node._parents:
                if p.requires_grad and id(p) not in visited:
                    stack.append((p, False))

        grads: dict[int, Array] = {id(self): np.array(seed, copy=True)}
        handed: set[int] = set()
        for node in reversed(order):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._backward is None or node._retain:
                if node.grad is not None:
                    node.grad._data = node.grad._data + g.astype(node.dtype, copy=False)
                else:
                    # keep the array if this pass made it and nothing else holds it; else copy
                    own = g.base is None and g.flags.writeable and g.flags.c_contiguous
                    if not own or id(g) in handed or g.dtype != node.dtype:
                        g = np.array(g, dtype=node.dtype, copy=True)
                    handed.add(id(g))
                    node.grad = Tensor._wrap(g)
            if node._backward is None:
                continue
            for counter, version, shape in node._saved:
                if counter.value != version:
                    raise InplaceModificationError(
                        f"backward: a tensor of shape {shape} saved by '{node._op}' was "
                        f"modified in place (version {version} -> {counter.value}); its "
                        f"gradient would be wrong. Modify a copy, or do it after backward()."
                    )
            parent_grads = node._backward(g)
            if not retain_graph:
                node._backward = _released
            for p, pg in zip(node._parents, parent_grads, strict=True):
                if pg is None or not p.requires_grad:
                    continue
                key = id(p)
                if key in grads:
                    grads[key] = grads[key] + pg
                else:
                    grads[key] = pg

    # -- in-place ops (bump the version counter) -----------------------------------------------

    def _check_inplace(self, op: str) -> None:
        """In-place ops are not recorded, so refuse them where they would corrupt gradients."""
        if not (_grad_enabled and self.requires_grad):
            return
        if self.is_leaf:
            raise InplaceModificationError(
                f"{op}: a leaf tensor that requires grad (shape {self.shape}) cannot be modified "
                f"in place while recording the graph; wrap the update in `with no_grad():`"
            )
        raise InplaceModificationError(
            f"{op}: tensor of shape {self.shape} produced by '{self._op}' is part of the graph; "
            f"in-place ops are not recorded, so its gradient would be wrong. Build a new tensor "
            f"instead (fms_dl.where, fms_dl.cat, or arithmetic)."
        )

    def _inplace(self, op: str, value: Array) -> Tensor:
        self._check_inplace(op)
        np.copyto(self._data, value, casting="same_kind")
        self._version.value += 1
        return self

    def add_(self, other: TensorLike, alpha: float = 1.0) -> Tensor:
        """In place: `self += alpha * other`."""
        o = other._data if isinstance(other, Tensor) else np.asarray(other)
        return self._inplace("add_", self._data + alpha * o)

    def sub_(self, other: TensorLike) -> Tensor:
        """In place: `self -= other`."""
        o = other._data if isinstance(other, Tensor) else np.asarray(other)
        return self._inplace("sub_", self._data - o)

    def mul_(self, other: TensorLike) -> Tensor:
        """In place: `self *= other`."""
        o = other._data if isinstance(other, Tensor) else np.asarray(other)
        return self._inplace("mul_", self._data * o)

    def zero_(self) -> Tensor:
        """In place: set every element to zero."""
        return self._inplace("zero_", np.zeros_like(self._data))

    def fill_(self, value: float) -> Tensor:
        """In place: set every element to `value`."""
        return self._inplace("fill_", np.full_like(self._data, value))

    def copy_(self, src: TensorLike) -> Tensor:
        """In place: copy `src` (broadcastable to this shape) into this tensor."""
        s = src._data if isinstance(src, Tensor) else np.asarray(src)
        _broadcast_shape("copy_", self.shape, s.shape)
        return self._inplace("copy_", np.broadcast_to(s, self.shape))

    def __setitem__(self, index: Any, value: TensorLike) -> None:
        self._check_inplace("__setitem__")
        self._data[_index(index)] = value._data if isinstance(value, Tensor) else value
        self._version.value += 1

    # -- dtype conversion -----------------------------------------------------------------------

    def to(self, dtype: npt.DTypeLike) -> Tensor:
        """Cast to `dtype`; the gradient is cast back."""
        target = np.dtype(dtype)
        if target == self.dtype:
            return self
        src = self.dtype
        return Tensor._result(self._data.astype(target), (self,), lambda g: (g.astype(src),), "to")

    def float(self) -> Tensor:
        """Cast to float32."""
        return self.to(np.float32)

    def double(self) -> Tensor:
        """Cast to float64."""
        return self.to(np.float64)

    def long(self) -> Tensor:
        """Cast to int64 (not differentiable)."""
        return Tensor._wrap(self._data.astype(np.int64))

    # -- elementwise arithmetic -------------------------------------------------------------------

    def _other(self, other: TensorLike) -> Tensor:
        """`other` as a Tensor of the promoted dtype of `self op other` (torch's rules)."""
        return _operand(other, result_type(self, other))

    def _promoted(self, other: TensorLike, op: str) -> tuple[Tensor, Tensor]:
        """Both operands cast to their promoted dtype (`result_type`); casts carry gradients."""
        dtype = result_type(self, other)
        o = _operand(other, dtype)
        _broadcast_shape(op, self.shape, o.shape)
        return self._cast(dtype), o._cast(dtype)

    def _cast(self, dtype: np.dtype[Any]) -> Tensor:
        """This tensor as `dtype`: itself when it already is, a differentiable cast when float."""
        if self.dtype == dtype:
            return self
        if _is_float(self._data) or np.dtype(dtype).kind == "f":
            return self.to(dtype)
        return Tensor._wrap(self._data.astype(dtype))

    def __add__(self, other: TensorLike) -> Tensor:
        x, o = self._promoted(other, "add")
        a_shape, b_shape = x.shape, o.shape
        return Tensor._result(
            x._data + o._data,
            (x, o),
            lambda g: (_unbroadcast(g, a_shape), _unbroadcast(g, b_shape)),
            "add",
        )

    def __radd__(self, other: TensorLike) -> Tensor:
        return self._other(other) + self

    def __sub__(self, other: TensorLike) -> Tensor:
        if isinstance(other, bool) or (isinstance(other, Tensor) and other.dtype == np.bool_):
            _refuse_bool(Tensor._wrap(np.asarray(True)), "sub")
        _refuse_bool(self, "sub")
        x, o = self._promoted(other, "sub")
        a_shape, b_shape = x.shape, o.shape
        return Tensor._result(
            x._data - o._data,
            (x, o),
            lambda g: (_unbroadcast(g, a_shape), _unbroadcast(-g, b_shape)),
            "sub",
        )

    def __rsub__(self, other: TensorLike) -> Tensor:
        return self._other(other) - self

    def __mul__(self, other: TensorLike) -> Tensor:
        x, o = self._promoted(other, "mul")
        a, b = x._data, o._data
        return Tensor._result(
            a * b,
            (x, o),
            lambda g: (
                _unbroadcast(g * b, a.shape) if x.requires_grad else None,
                _unbroadcast(g * a, b.shape) if o.requires_grad else None,
            ),
            "mul",
            saved=(x, o),
        )

    def __rmul__(self, other: TensorLike) -> Tensor:
        return self._other(other) * self

    def __truediv__(self, other: TensorLike) -> Tensor:
        """True division: integer and bool operands give the default float dtype, as in torch."""
        x, o = self._promoted(other, "div")
        if not _is_float(x._data):
            x, o = x._cast(float32), o._cast(float32)
        a, b = x._data, o._data
        return Tensor._result(
            a / b,
            (x, o),
            lambda g: (
                _unbroadcast(g / b, a.shape) if x.requires_grad else None,
                _unbroadcast(-g * a / (b * b), b.shape) if o.requires_grad else None,
            ),
            "div",
            saved=(x, o),
        )

    def __rtruediv__(self, other: TensorLike) -> Tensor:
        return self._other(other) / self

    def __neg__(self) -> Tensor:
        _refuse_bool(self, "neg")
        return Tensor._result(-self._data, (self,), lambda g: (-g,), "neg")

    def __pow__(self, other: TensorLike) -> Tensor:
        """Power. $\\partial a^b/\\partial a = b a^{b-1}$, $\\partial a^b / \\partial b = a^b \\ln a$.

        Where $b = 0$ the first derivative is 0, also at $a = 0$ (where $b a^{b-1}$ would read
        $0 \\cdot \\infty$), as in PyTorch.
        """
        x, o = self._promoted(other, "pow")
        a, b = x._data, o._data
        out = a**b

        def backward(g: Array) -> tuple[Array | None, Array | None]:
            ga = None
            if x.requires_grad:
                with np.errstate(divide="ignore", invalid="ignore"):
                    da = np.where(b == 0, 0.0, b * a ** (b - 1)).astype(a.dtype, copy=False)
                ga = _unbroadcast(g * da, a.shape)
            gb = None
            if o.requires_grad:
                with np.errstate(divide="ignore", invalid="ignore"):
                    gb = _unbroadcast(g * out * np.where(a > 0, np.log(np.abs(a)), 0.0), b.shape)
            return ga, gb

        return Tensor._result(out, (x, o), backward, "pow", saved=(x, o))

    def __rpow__(self, other: TensorLike) -> Tensor:
        return self._other(other) ** self

    def __matmul__(self, other: Tensor) -> Tensor:
        return matmul(self, other)

    # -- comparisons (not differentiable) -------------------------------------------------------

    def _compare(self, other: TensorLike, fn: Callable[[Array, Array], Array], op: str) -> Tensor:
        x, o = self._promoted(other, op)
        return Tensor._wrap(fn(x._data, o._data))

    def __eq__(self, other: object) -> Tensor:  # type: ignore[override]
        return self._compare(other, np.equal, "eq")  # type: ignore[arg-type]

    def __ne__(self, other: object) -> Tensor:  # type: ignore[override]
        return self._compare(other, np.not_equal, "ne")  # type: ignore[arg-type]

    def __lt__(self, other: TensorLike) -> Tensor:
        return self._compare(other, np.less, "lt")

    def __le__(self, other: TensorLike) -> Tensor:
        return self._compare(other, np.less_equal, "le")

    def __gt__(self, other: TensorLike) -> Tensor:
        return self._compare(other, np.greater, "gt")

    def __ge__(self, other: TensorLike) -> Tensor:
        return self._compare(other, np.greater_equal, "ge")

    # -- unary elementwise functions --------------------------------------------------------------

    def exp(self) -> Tensor:
        """$e^x$; its derivative is itself."""
        out = np.exp(_floating(self))
        return Tensor._result(out, (self,), lambda g: (g * out,), "exp", save_output=True)

    def log(self) -> Tensor:
        """Natural logarithm; $\\partial \\ln x / \\partial x = 1/x$."""
        x = _floating(self)
        return Tensor._result(np.log(x), (self,), lambda g: (g / x,), "log", saved=(self,))

    def sqrt(self) -> Tensor:
        """$\\sqrt x$; derivative $1 / (2 \\sqrt x)$."""
        out = np.sqrt(_floating(self))
        return Tensor._result(out, (self,), lambda g: (g / (2 * out),), "sqrt", save_output=True)

    def abs(self) -> Tensor:
        """$|x|$; derivative $\\operatorname{sign}(x)$ (0 at 0, as in PyTorch)."""
        _refuse_bool(self, "abs")
        x = self._data
        return Tensor._result(np.abs(x), (self,), lambda g: (g * np.sign(x),), "abs", saved=(self,))

    def tanh(self) -> Tensor:
        """$\\tanh x$; derivative $1 - \\tanh^2 x$."""
        out = np.tanh(_floating(self))
        return Tensor._result(
            out, (self,), lambda g: (g * (1 - out * out),), "tanh", save_output=True
        )

    def sigmoid(self) -> Tensor:
        """$\\sigma(x) = 1/(1+e^{-x})$, computed without overflow; derivative $\\sigma(1-\\sigma)$."""
        out = _sigmoid(_floating(self))
        return Tensor._result(
            out, (self,), lambda g: (g * out * (1 - out),), "sigmoid", save_output=True
        )

    def relu(self) -> Tensor:
        """$\\max(x, 0)$; derivative 1 where $x > 0$, else 0."""
        _refuse_bool(self, "relu")
        x = self._data
        return Tensor._result(
            np.maximum(x, 0), (self,), lambda g: (g * (x > 0),), "relu", saved=(self,)
        )

    def gelu(self, approximate: str = "none") -> Tensor:
        """GELU (Hendrycks & Gimpel, 2016): $x\\,\\Phi(x)$ with $\\Phi$ the normal CDF.

        Derivative: $\\Phi(x) + x\\,\\varphi(x)$. With `approximate="tanh"`, $\\Phi(x)$ is replaced by
        $\\tfrac12(1+\\tanh(\\sqrt{2/\\pi}(x + 0.044715x^3)))$, as in PyTorch.
        """
        _require_float(self, "gelu")
        x = self._data
        if approximate == "none":
            cdf = 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))
            pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
            out = x * cdf
            dydx = cdf + x * pdf
        elif approximate == "tanh":
            k = math.sqrt(2.0 / math.pi)
            inner = k * (x + 0.044715 * x**3)
            t = np.tanh(inner)
            out = 0.5 * x * (1 + t)
            dydx = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)
        else:
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        return Tensor._result(
            out.astype(x.dtype), (self,), lambda g: (g * dydx,), "gelu", saved=(self,)
        )

    def silu(self) -> Tensor:
        """SiLU / swish: $x\\,\\sigma(x)$; derivative $\\sigma(x)(1 + x(1-\\sigma(x)))$."""
        _require_float(self, "silu")
        x = self._data
        s = _sigmoid(x)
        return Tensor._result(
            x * s, (self,), lambda g: (g * s * (1 + x * (1 - s)),), "silu", saved=(self,)
        )

    def clamp(self, min: _Float | None = None, max: _Float | None = None) -> Tensor:
        """Clip to `[min, max]`; the gradient passes strictly inside the bounds.

        At a bound, at nan and everywhere when `min > max` the gradient is 0, as in PyTorch 2.x.
        """
        x = self._data
        lo = -np.inf if min is None else min
        hi = np.inf if max is None else max
        mask = (x > lo) & (x < hi)
        return Tensor._result(
            np.clip(x, lo, hi).astype(x.dtype), (self,), lambda g: (g * mask,), "clamp"
        )

    # -- reductions -------------------------------------------------------------------------------

    def sum(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        """Sum over `dim` (all by default). The gradient is broadcast back to the input shape."""
        axes = _norm_axis(dim, self.ndim, "sum")
        shape = self.shape

        def backward(g: Array) -> tuple[Array]:
            if not keepdim:
                g = np.expand_dims(g, axes)
            return (np.broadcast_to(g, shape),)

        return Tensor._result(
            np.sum(self._data, axis=axes, keepdims=keepdim), (self,), backward, "sum"
        )

    def mean(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        """Mean over `dim`: the sum divided by the number of reduced elements."""
        _require_float(self, "mean")
        axes = _norm_axis(dim, self.ndim, "mean")
        n = int(np.prod([self.shape[a] for a in axes]))
        # over zero elements the mean is 0/0 = nan, as in PyTorch
        return self.sum(axes, keepdim) * (1.0 / n if n else math.nan)

    def var(
        self, dim: int | Sequence[int] | None = None, correction: int = 1, keepdim: bool = False
    ) -> Tensor:
        """Variance $\\frac{1}{n - c}\\sum (x - \\bar x)^2$ with Bessel's `correction` $c$ (torch's).

        With $n \\le c$ (one element and the default correction) the divisor is
        $\\max(n - c, 0) = 0$, so the variance is nan (or inf), as in PyTorch.
        """
        _require_float(self, "var")
        axes = _norm_axis(dim, self.ndim, "var")
        n = int(np.prod([self.shape[a] for a in axes]))
        centred = self - self.mean(axes, keepdim=True)
        dof = max(n - correction, 0)
        return (centred * centred).sum(axes, keepdim) * (1.0 / dof if dof else math.inf)

    def max(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        """Maximum over `dim` (like `torch.amax`); ties share the gradient equally."""
        return self._extreme(np.max, dim, keepdim, "max")

    def min(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        """Minimum over `dim` (like `torch.amin`); ties share the gradient equally."""
        return self._extreme(np.min, dim, keepdim, "min")

    def _extreme(
        self, fn: Callable[..., Array], dim: int | Sequence[int] | None, keepdim: bool, op: str
    ) -> Tensor:
        axes = _norm_axis(dim, self.ndim, op)
        x = self._data
        if any(self.shape[a] == 0 for a in axes):  # an empty *kept* dim is fine, as in torch
            raise ShapeError(
                f"{op}: cannot reduce over an empty dim {axes} of a tensor of shape {self.shape}"
            )
        out_k = fn(x, axis=axes, keepdims=True)

        def backward(g: Array) -> tuple[Array]:
            mask = x == out_k
            if not keepdim:
                g = np.expand_dims(g, axes)
            return (g * mask / mask.sum(axis=axes, keepdims=True),)

        out = out_k if keepdim else np.squeeze(out_k, axis=axes)
        return Tensor._result(out, (self,), backward, op, saved=(self,))

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        """Index of the maximum (not differentiable)."""
        return Tensor._wrap(np.argmax(self._data, axis=dim, keepdims=keepdim).astype(np.int64))

    def softmax(self, dim: int = -1) -> Tensor:
        """Numerically stable softmax $e^{x_i - m}/\\sum_j e^{x_j - m}$ with $m = \\max_j x_j$.

        Backward: $\\bar x = y \\odot (\\bar y - \\sum_j \\bar y_j y_j)$.
        """
        _require_float(self, "softmax")
        ax = _norm_axis(dim, self.ndim, "softmax")  # () for a 0-d tensor, whose softmax is 1
        x = self._data
        # initial=-inf: an empty dim has no maximum to subtract (and nothing to normalise)
        e = np.exp(x - x.max(axis=ax, keepdims=True, initial=-np.inf))
        out = e / e.sum(axis=ax, keepdims=True)
        return Tensor._result(
            out,
            (self,),
            lambda g: (out * (g - (g * out).sum(axis=ax, keepdims=True)),),
            "softmax",
            save_output=True,
        )

    def log_softmax(self, dim: int = -1) -> Tensor:
        """Stable $x_i - m - \\log\\sum_j e^{x_j - m}$; backward $\\bar x = \\bar y - p\\sum_j \\bar y_j$."""
        _require_float(self, "log_softmax")
        ax = _norm_axis(dim, self.ndim, "log_softmax")
        x = self._data
        shifted = x - x.max(axis=ax, keepdims=True, initial=-np.inf)
        e = np.exp(shifted)
        s = e.sum(axis=ax, keepdims=True)
        out = shifted - np.log(s)
        p = e / s
        return Tensor._result(
            out, (self,), lambda g: (g - p * g.sum(axis=ax, keepdims=True),), "log_softmax"
        )

    # -- shape ops --------------------------------------------------------------------------------

    def reshape(self, *shape: int | Sequence[int]) -> Tensor:
        """Same data, new shape (one dimension may be -1)."""
        new = cast(
            tuple[int, ...],
            tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape,
        )
        src = self.shape
        try:
            out = self._data.reshape(new)
        except ValueError:
            raise ShapeError(
                f"reshape: cannot reshape a tensor of shape {src} ({self.numel()} elements) "
                f"into shape {tuple(new)}"
            ) from None
        return Tensor._result(out, (self,), lambda g: (g.reshape(src),), "reshape")

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        """Merge dimensions `start_dim..end_dim` into one."""
        if self.ndim == 0:
            return self.reshape(1)
        s = start_dim % self.ndim
        e = end_dim % self.ndim
        shape = self.shape
        return self.reshape(*shape[:s], int(np.prod(shape[s : e + 1])), *shape[e + 1 :])

    def unsqueeze(self, dim: int) -> Tensor:
        """Insert a dimension of size one at `dim`."""
        d = dim % (self.ndim + 1)
        return self.reshape(*self.shape[:d], 1, *self.shape[d:])

    def squeeze(self, dim: int | None = None) -> Tensor:
        """Remove dimensions of size one (all, or only `dim`)."""
        if dim is None:
            return self.reshape(*(n for n in self.shape if n != 1))
        d = dim % max(self.ndim, 1)
        if self.ndim == 0 or self.shape[d] != 1:
            return self
        return self.reshape(*self.shape[:d], *self.shape[d + 1 :])

    def permute(self, *dims: int | Sequence[int]) -> Tensor:
        """Reorder the axes; the gradient is permuted back by the inverse permutation."""
        order = cast(
            tuple[int, ...],
            tuple(dims[0]) if len(dims) == 1 and not isinstance(dims[0], int) else dims,
        )
        if sorted(int(d) % max(self.ndim, 1) for d in order) != list(range(self.ndim)):
            raise ShapeError(f"permute: {tuple(order)} is not a permutation of {self.ndim} dims")
        perm = tuple(int(d) % self.ndim for d in order)
        inv = tuple(np.argsort(perm))
        return Tensor._result(
            self._data.transpose(perm), (self,), lambda g: (g.transpose(inv),), "permute"
        )

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        """Swap two axes (a 0-d tensor accepts dims 0 and -1 and stays as it is, as in torch)."""
        (d0,), (d1,) = (_norm_axis(d, self.ndim, "transpose") or (0,) for d in (dim0, dim1))
        perm = list(range(self.ndim))
        if self.ndim:
            perm[d0], perm[d1] = perm[d1], perm[d0]
        return self.permute(tuple(perm))

    def expand(self, *shape: int) -> Tensor:
        """Broadcast to `shape` without copying; the gradient is summed back."""
        src = self.shape
        sizes = tuple(shape)
        lead = len(sizes) - len(src)
        if lead < 0:
            raise ShapeError(
                f"expand: the number of sizes ({len(sizes)}) must be at least the tensor's dims "
                f"({len(src)}); got sizes {sizes} for shape {src}"
            )
        for i, n in enumerate(sizes):
            if n == -1 and i < lead:
                raise ShapeError(
                    f"expand: -1 (keep this size) is not allowed in a new leading dim {i}; "
                    f"got sizes {sizes} for shape {src}"
                )
            if n < -1:
                raise ShapeError(f"expand: sizes must be >= -1, got {sizes}")
        # -1 keeps the size of the matching (right-aligned) dim, as in torch.Tensor.expand
        wanted = tuple(src[i - lead] if n == -1 else n for i, n in enumerate(sizes))
        target = _broadcast_shape("expand", src, wanted)
        if target != wanted:
            raise ShapeError(f"expand: cannot expand shape {src} to {sizes}")
        return Tensor._result(
            np.broadcast_to(self._data, target),
            (self,),
            lambda g: (_unbroadcast(g, src),),
            "expand",
        )

    def __getitem__(self, index: Any) -> Tensor:
        """Basic and advanced (integer array, boolean mask) indexing.

        Backward scatters the gradient into zeros with `np.add.at`, so repeated indices add up
        (which is exactly what an embedding lookup needs).
        """
        idx = _index(index)
        x = self._data
        try:
            out = x[idx]
        except IndexError as e:
            raise ShapeError(
                f"getitem: index {index!r} is invalid for shape {self.shape}: {e}"
            ) from None
        advanced = _is_advanced(idx)

        def backward(g: Array) -> tuple[Array]:
            gx = np.zeros_like(x)
            if advanced:
                np.add.at(gx, idx, g)
            else:
                gx[idx] += g
            return (gx,)

        return Tensor._result(out, (self,), backward, "getitem")

    def gather(self, dim: int, index: Tensor | Array) -> Tensor:
        """`out[i][j] = self[i][index[i][j]]` along `dim` (like `torch.gather`)."""
        (ax,) = _norm_axis(dim, self.ndim, "gather")
        idx = np.asarray(index._data if isinstance(index, Tensor) else index)
        if idx.ndim != self.ndim:
            raise ShapeError(
                f"gather: index of shape {idx.shape} must have as many dims as input {self.shape}"
            )
        if idx.dtype.kind not in "iu":
            raise TypeError(f"gather: index must be an integer tensor, got dtype {idx.dtype}")
        x = self._data
        # torch accepts no negative index here, and an index no larger than the input elsewhere
        if idx.size and (idx.min() < 0 or idx.max() >= x.shape[ax]):
            raise ShapeError(
                f"gather: index values must be in [0, {x.shape[ax]}) along dim {dim} of input "
                f"{self.shape}, got range [{idx.min()}, {idx.max()}]"
            )
        if any(i > n for d, (i, n) in enumerate(zip(idx.shape, x.shape, strict=True)) if d != ax):
            raise ShapeError(
                f"gather: index of shape {idx.shape} must be no larger than input {self.shape} "
                f"in every dim but {dim}"
            )
        window = tuple(slice(None) if d == ax else slice(0, n) for d, n in enumerate(idx.shape))
        out = np.take_along_axis(x[window], idx, axis=ax)

        def backward(g: Array) -> tuple[Array]:
            gx = np.zeros_like(x)
            full: list[Any] = list(np.indices(idx.shape, sparse=True))
            full[ax] = idx
            np.add.at(gx, tuple(full), g)
            return (gx,)

        return Tensor._result(out, (self,), backward, "gather")

    # -- reductions in torch's method style ---------------------------------------------------

    def pow(self, exponent: TensorLike) -> Tensor:
        """Alias of `self ** exponent`."""
        return self**exponent

    def matmul(self, other: Tensor) -> Tensor:
        """Alias of `self @ other`."""
        return matmul(self, other)


# ------------------------------------------------------------------------------------------------
# Functions (ops with several inputs)
# ------------------------------------------------------------------------------------------------


def _released(g: Array) -> tuple[Array | None, ...]:
    """Stands in for a backward rule that has run and let go of its saved arrays."""
    raise AutogradError(
        "backward: trying to backpropagate through the graph a second time; its saved arrays "
        "were released after the first backward. Pass retain_graph=True to the first call."
    )


def _index(index: Any) -> Any:
    if isinstance(index, Tensor):
        return index._data
    if isinstance(index, tuple):
        return tuple(i._data if isinstance(i, Tensor) else i for i in index)
    return index


def _is_advanced(idx: Any) -> bool:
    items = idx if isinstance(idx, tuple) else (idx,)
    return any(isinstance(i, np.ndarray | list) for i in items)


def _sigmoid(x: Array) -> Array:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


# The error function by two Chebyshev series, fitted once at import to `math.erf`/`math.erfc` at
# Chebyshev nodes (near-minimax; absolute error below 1e-14 on the whole line). Near 0 the
# series is in $z^2$ for $\operatorname{erf}(z)/z$ (even, smooth); from `_ERF_SPLIT` on it is
# the scaled complement $e^{z^2}\operatorname{erfc}(z)$, which varies slowly, so $1 - \text{erf}$
# keeps its digits; beyond `_ERF_END`, $\operatorname{erfc}(z) < 10^{-17}$ and erf is $\pm 1$.
_ERF_SPLIT, _ERF_END, _ERF_DEGREE = 2.5, 6.0, 18


def _erf_series() -> tuple[Array, Array]:
    u = np.cos(np.pi * (np.arange(80) + 0.5) / 80)  # Chebyshev nodes on [-1, 1]
    z = np.sqrt((u + 1) / 2) * _ERF_SPLIT
    ratio = [math.erf(v) / v if v > 0 else 2 / math.sqrt(math.pi) for v in z]
    near = np.polynomial.chebyshev.chebfit(u, ratio, _ERF_DEGREE)
    zt = (u + 1) / 2 * (_ERF_END - _ERF_SPLIT) + _ERF_SPLIT
    scaled = [math.erfc(v) * math.exp(v * v) for v in zt]
    tail = np.polynomial.chebyshev.chebfit(u, scaled, _ERF_DEGREE)
    return near, tail


_ERF_NEAR, _ERF_TAIL = _erf_series()


def _erf(x: Array) -> Array:
    """The error function, elementwise and vectorised (absolute error < 1e-14 in float64)."""
    z = np.abs(x.astype(np.float64, copy=False))
    with np.errstate(over="ignore", invalid="ignore"):  # |x| = inf is set by the tail below
        out = z * np.polynomial.chebyshev.chebval(z * z * (2 / _ERF_SPLIT**2) - 1, _ERF_NEAR)
    far = z >= _ERF_SPLIT
    if far.any():
        zf = np.minimum(z[far], _ERF_END)
        u = (zf - _ERF_SPLIT) * (2 / (_ERF_END - _ERF_SPLIT)) - 1
        out[far] = 1 - np.exp(-zf * zf) * np.polynomial.chebyshev.chebval(u, _ERF_TAIL)
    return np.copysign(out, x).astype(x.dtype, copy=False)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product with numpy's rules: batched over leading dims, 1-D operands promoted.

    For $C = AB$: $\\bar A = \\bar C B^\\top$ and $\\bar B = A^\\top \\bar C$, each summed over any
    batch dimensions that were broadcast.
    """
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul: both operands need at least 1 dim, got {a.shape} and {b.shape}")
    a2 = a._data if a.ndim > 1 else a._data[None, :]
    b2 = b._data if b.ndim > 1 else b._data[:, None]
    if a2.shape[-1] != b2.shape[-2]:
        raise ShapeError(
            f"matmul: shapes {a.shape} and {b.shape} are incompatible "
            f"(inner dims {a2.shape[-1]} != {b2.shape[-2]})"
        )
    _broadcast_shape("matmul (batch dims)", a2.shape[:-2], b2.shape[:-2])
    out2 = a2 @ b2
    out = out2
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]

    def backward(g: Array) -> tuple[Array | None, Array | None]:
        g2 = g.reshape(out2.shape)
        ga = gb = None
        if a.requires_grad:
            ga = _unbroadcast(g2 @ np.swapaxes(b2, -1, -2), a2.shape)
            ga = ga if ga.shape == a.shape else ga.reshape(a.shape)
        if b.requires_grad:
            gb = _unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape)
            gb = gb if gb.shape == b.shape else gb.reshape(b.shape)
        return ga, gb

    return Tensor._result(out, (a, b), backward, "matmul", saved=(a, b))


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Affine map $y = x W^\\top + b$ as one op (PyTorch's `addmm`), for `x` `(..., in)`.

    Backward: $\\bar x = \\bar y W$, $\\bar W = \\bar y^\\top x$, $\\bar b = \\sum \\bar y$ over the
    leading dims. One fused rule saves the transpose and broadcast-add nodes of `x @ W.T + b`.
    """
    if x.ndim == 0 or weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
        raise ShapeError(
            f"linear: input of shape {x.shape} does not fit weight of shape {weight.shape} "
            f"(expected input (..., {weight.shape[-1]}))"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ShapeError(f"linear: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    xd, wd = x._data, weight._data
    x2 = xd.reshape(-1, xd.shape[-1])
    out = x2 @ wd.T
    if bias is not None:
        out += bias._data
    out = out.reshape(*xd.shape[:-1], wd.shape[0])

    def backward(g: Array) -> tuple[Array | None, ...]:
        g2 = g.reshape(-1, wd.shape[0])
        gx = (g2 @ wd).reshape(xd.shape) if x.requires_grad else None
        gw = g2.T @ x2 if weight.requires_grad else None
        if bias is None:
            return gx, gw
        return gx, gw, (g2.sum(axis=0) if bias.requires_grad else None)

    parents = (x, weight) if bias is None else (x, weight, bias)
    return Tensor._result(out, parents, backward, "linear", saved=(x, weight))


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Concatenate along an existing `dim`; the gradient is split back into the pieces."""
    if len(tensors) == 0:
        raise ValueError("cat: expected a non-empty sequence of tensors")
    ts = tuple(tensors)
    (ax,) = _norm_axis(dim, ts[0].ndim, "cat")
    for t in ts[1:]:
        if t.ndim != ts[0].ndim or any(
            t.shape[i] != ts[0].shape[i] for i in range(t.ndim) if i != ax
        ):
            raise ShapeError(f"cat: shapes {ts[0].shape} and {t.shape} differ outside dim {dim}")
    sizes = np.cumsum([t.shape[ax] for t in ts])[:-1]
    return Tensor._result(
        np.concatenate([t._data for t in ts], axis=ax),
        ts,
        lambda g: tuple(np.split(g, sizes, axis=ax)),
        "cat",
    )


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Stack equally shaped tensors along a new `dim`."""
    if len(tensors) == 0:
        raise ValueError("stack: expected a non-empty sequence of tensors")
    ts = tuple(tensors)
    for t in ts[1:]:
        if t.shape != ts[0].shape:
            raise ShapeError(f"stack: all shapes must be equal, got {ts[0].shape} and {t.shape}")
    ax = dim % (ts[0].ndim + 1)
    return Tensor._result(
        np.stack([t._data for t in ts], axis=ax),
        ts,
        lambda g: tuple(np.moveaxis(g, ax, 0)),
        "stack",
    )


def where(condition: Tensor | Array, a: TensorLike, b: TensorLike) -> Tensor:
    """Elementwise `a if condition else b`; each branch gets the gradient where it was chosen."""
    cond = np.asarray(condition._data if isinstance(condition, Tensor) else condition, dtype=bool)
    ta = a if isinstance(a, Tensor) else None
    tb = b if isinstance(b, Tensor) else None
    ref = ta if ta is not None else tb
    if ref is None:
        raise TypeError("where: at least one of a, b must be a Tensor")
    ta = ta if ta is not None else ref._other(a)
    tb = tb if tb is not None else ref._other(b)
    _broadcast_shape("where", _broadcast_shape("where", cond.shape, ta.shape), tb.shape)
    sa, sb = ta.shape, tb.shape
    return Tensor._result(
        np.where(cond, ta._data, tb._data),
        (ta, tb),
        lambda g: (_unbroadcast(g * cond, sa), _unbroadcast(g * ~cond, sb)),
        "where",
    )


# -- convolution and pooling -------------------------------------------------------------------


def _tap(i: int, d: int, s: int, n_out: int) -> slice:
    """The input rows (or columns) that kernel tap `i` visits: `i*d, i*d + s, ...` (n_out of them)."""
    return slice(i * d, i * d + s * (n_out - 1) + 1, s)


def _pad2d(x: Array, ph: int, pw: int, fill: float) -> Array:
    """Pad the last two axes (faster than `np.pad` for this one case)."""
    if not ph and not pw:
        return x
    n, c, h, w = x.shape
    out = np.full((n, c, h + 2 * ph, w + 2 * pw), fill, dtype=x.dtype)
    out[:, :, ph : ph + h, pw : pw + w] = x
    return out


def _conv_out(size: int, k: int, s: int, p: int, d: int, op: str, what: str) -> int:
    out = (size + 2 * p - d * (k - 1) - 1) // s + 1
    if out < 1:
        raise ShapeError(
            f"{op}: input {what} {size} (padding {p}) is too small for kernel {k} with "
            f"dilation {d}; output would have size {out}"
        )
    return out


def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> Tensor:
    """2-D cross-correlation by im2col, like `torch.nn.functional.conv2d`.

    im2col copies every receptive field into a column, turning the convolution into a matrix
    product per example and group: with columns $X_\\text{col}$ of shape `(C/G * kh * kw, OH * OW)`
    and weights $W$ of shape `(O/G, C/G * kh * kw)`, $Y = W X_\\text{col}$. Backward is two more
    products, $\\bar W = \\bar Y X_\\text{col}^\\top$ and $\\bar X_\\text{col} = W^\\top \\bar Y$, and
    col2im adds each column back onto the pixels it came from.

    Args:
        x: input of shape `(N, C, H, W)`.
        weight: filters of shape `(O, C / groups, kh, kw)`.
        bias: optional `(O,)`.
        stride: step between receptive fields.
        padding: zeros added on each side.
        dilation: spacing between kernel taps.
        groups: split channels into independent groups.

    Returns:
        Output of shape `(N, O, OH, OW)`.
    """
    if x.ndim != 4 or weight.ndim != 4:
        raise ShapeError(
            f"conv2d: expected input (N, C, H, W) and weight (O, C/groups, kh, kw), got "
            f"{x.shape} and {weight.shape}"
        )
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    if groups < 1 or c % groups or o % groups or cg * groups != c:
        raise ShapeError(
            f"conv2d: input {x.shape} has {c} channels but weight {weight.shape} with "
            f"groups={groups} expects {cg * groups} (and out channels {o} divisible by groups)"
        )
    if bias is not None and bias.shape != (o,):
        raise ShapeError(f"conv2d: bias must have shape ({o},), got {bias.shape}")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    oh = _conv_out(h, kh, sh, ph, dh, "conv2d", "height")
    ow = _conv_out(w, kw, sw, pw, dw, "conv2d", "width")
    g = groups
    xd = x._data
    xp = _pad2d(xd, ph, pw, 0.0)
    # cols[n, c, i, j, oh, ow] = xp[n, c, i*dh + oh*sh, j*dw + ow*sw]: one strided copy per tap
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=xd.dtype)
    taps = [(i, j, _tap(i, dh, sh, oh), _tap(j, dw, sw, ow)) for i in range(kh) for j in range(kw)]
    for i, j, si, sj in taps:
        cols[:, :, i, j] = xp[:, :, si, sj]
    k = cg * kh * kw
    cols_g = cols.reshape(n, g, k, oh * ow)
    wd = weight._data
    w_g = wd.reshape(g, o // g, k)
    out = np.matmul(w_g, cols_g).reshape(n, o, oh, ow)  # batched over (n, g)
    if bias is not None:
        out += bias._data.reshape(1, o, 1, 1)

    def backward(gy: Array) -> tuple[Array | None, ...]:
        gy_g = np.ascontiguousarray(gy).reshape(n, g, o // g, oh * ow)
        gx = gw = gb = None
        if weight.requires_grad:
            gw = np.matmul(gy_g, cols_g.transpose(0, 1, 3, 2)).sum(axis=0).reshape(wd.shape)
        if bias is not None and bias.requires_grad:
            gb = gy.sum(axis=(0, 2, 3))
        if x.requires_grad:
            gcols = np.matmul(w_g.transpose(0, 2, 1), gy_g).reshape(n, c, kh, kw, oh, ow)
            gxp = np.zeros(xp.shape, dtype=xd.dtype)
            for i, j, si, sj in taps:  # col2im: add every column back onto its pixels
                gxp[:, :, si, sj] += gcols[:, :, i, j]
            gx = gxp[:, :, ph : ph + h, pw : pw + w]
        return (gx, gw) if bias is None else (gx, gw, gb)

    parents = (x, weight) if bias is None else (x, weight, bias)
    return Tensor._result(out, parents, backward, "conv2d", saved=(x, weight))


def _pool_windows(
    x: Array,
    k: tuple[int, int],
    s: tuple[int, int],
    p: tuple[int, int],
    d: tuple[int, int],
    fill: float,
    op: str,
) -> tuple[Array, list[tuple[int, int, slice, slice]], tuple[int, int]]:
    _n, _c, h, w = x.shape
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"{op}: padding {p} must be at most half the kernel size {k}")
    oh = _conv_out(h, k[0], s[0], p[0], d[0], op, "height")
    ow = _conv_out(w, k[1], s[1], p[1], d[1], op, "width")
    xp = _pad2d(x, p[0], p[1], fill)
    slices = [
        (i, j, _tap(i, d[0], s[0], oh), _tap(j, d[1], s[1], ow))
        for i in range(k[0])
        for j in range(k[1])
    ]
    return xp, slices, (oh, ow)


def _check_4d(x: Tensor, op: str) -> None:
    if x.ndim != 4:
        raise ShapeError(f"{op}: expected input of shape (N, C, H, W), got {x.shape}")


def max_pool2d(
    x: Tensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
) -> Tensor:
    """Max pooling over `(N, C, H, W)`; the gradient goes to the (first) maximal tap of a window."""
    _check_4d(x, "max_pool2d")
    k = _pair(kernel_size, "kernel_size")
    s = _pair(stride if stride is not None else kernel_size, "stride")
    xd = x._data
    p, d = _pair(padding, "padding"), _pair(dilation, "dilation")
    xp, slices, _ = _pool_windows(xd, k, s, p, d, -np.inf, "max_pool2d")
    h, w = xd.shape[2:]
    out = xp[:, :, slices[0][2], slices[0][3]].copy()
    for _, _, si, sj in slices[1:]:  # running maximum over the kernel taps
        np.maximum(out, xp[:, :, si, sj], out=out)

    def backward(g: Array) -> tuple[Array]:
        # route g to the first tap (in row-major kernel order) that attains the max, as torch does
        gxp = np.zeros(xp.shape, dtype=xd.dtype)
        taken = np.zeros(out.shape, dtype=bool)
        for _, _, si, sj in slices:
            hit = xp[:, :, si, sj] == out
            hit &= ~taken
            taken |= hit
            gxp[:, :, si, sj] += g * hit
        return (gxp[:, :, p[0] : p[0] + h, p[1] : p[1] + w],)

    return Tensor._result(out, (x,), backward, "max_pool2d", saved=(x,))


def avg_pool2d(
    x: Tensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    count_include_pad: bool = True,
) -> Tensor:
    """Average pooling over `(N, C, H, W)`; each tap receives `grad / window_count`."""
    _check_4d(x, "avg_pool2d")
    k = _pair(kernel_size, "kernel_size")
    s = _pair(stride if stride is not None else kernel_size, "stride")
    p = _pair(padding, "padding")
    xd = x._data
    xp, slices, (_oh, _ow) = _pool_windows(xd, k, s, p, (1, 1), 0.0, "avg_pool2d")
    if count_include_pad:
        count: Array | float = float(k[0] * k[1])
    else:
        ones, _, _ = _pool_windows(
            np.ones((1, 1, *xd.shape[2:])), k, s, p, (1, 1), 0.0, "avg_pool2d"
        )
        count = sum(ones[:, :, si, sj] for _, _, si, sj in slices)
    total = sum(xp[:, :, si, sj] for _, _, si, sj in slices)
    out = np.asarray(total / count, dtype=xd.dtype)
    h, w = xd.shape[2:]

    def backward(g: Array) -> tuple[Array]:
        gxp = np.zeros(xp.shape, dtype=xd.dtype)
        gc = g / count
        for _, _, si, sj in slices:
            gxp[:, :, si, sj] += gc
        return (gxp[:, :, p[0] : p[0] + h, p[1] : p[1] + w],)

    return Tensor._result(out, (x,), backward, "avg_pool2d")


# -- factories ---------------------------------------------------------------------------------


def tensor(data: Any, dtype: npt.DTypeLike | None = None, requires_grad: bool = False) -> Tensor:
    """Create a tensor (Python floats become float32, as in `torch.tensor`)."""
    arr = _as_array(data, dtype)
    return Tensor(np.array(arr, copy=True), requires_grad=requires_grad)


def zeros(*shape: int, dtype: npt.DTypeLike = np.float32, requires_grad: bool = False) -> Tensor:
    """A tensor of zeros."""
    return Tensor(np.zeros(shape, dtype=dtype), requires_grad=requires_grad)


def ones(*shape: int, dtype: npt.DTypeLike = np.float32, requires_grad: bool = False) -> Tensor:
    """A tensor of ones."""
    return Tensor(np.ones(shape, dtype=dtype), requires_grad=requires_grad)


def randn(*shape: int, dtype: npt.DTypeLike = np.float32, requires_grad: bool = False) -> Tensor:
    """Standard normal samples from the generator seeded by `manual_seed`."""
    return Tensor(_generator.standard_normal(shape).astype(dtype), requires_grad=requires_grad)


def rand(*shape: int, dtype: npt.DTypeLike = np.float32, requires_grad: bool = False) -> Tensor:
    """Uniform samples in `[0, 1)` from the generator seeded by `manual_seed`."""
    return Tensor(_generator.random(shape).astype(dtype), requires_grad=requires_grad)


def arange(start: int, stop: int | None = None, step: int = 1) -> Tensor:
    """Integers `start, start + step, ...` below `stop` (int64)."""
    return Tensor(np.arange(start, stop, step) if stop is not None else np.arange(start))


def _iter_graph(root: Tensor) -> Iterator[Tensor]:
    """Yield every tensor in the graph behind `root` once (used by the figure script)."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        t = todo.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        yield t
        todo.extend(t._parents)
