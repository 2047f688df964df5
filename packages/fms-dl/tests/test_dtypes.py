"""torch's type promotion (the engine's integers are int64, its floats float32/float64) and edge cases (empty, single-element and 0-d tensors) against torch 2.x.

Dtypes must be equal exactly; values within 1e-6 (float64) and gradients within 1e-6.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import fms_dl
from fms_dl.engine import ShapeError

_DTYPES = {
    "bool": (np.bool_, torch.bool),
    "int64": (np.int64, torch.int64),
    "float32": (np.float32, torch.float32),
    "float64": (np.float64, torch.float64),
}
_VALUES = [0, 1, 2]


def _pair(dtype: str, shape: tuple[int, ...] = (3,)) -> tuple[fms_dl.Tensor, torch.Tensor]:
    np_dtype, torch_dtype = _DTYPES[dtype]
    data = np.resize(np.array(_VALUES), shape).astype(np_dtype) if shape else np_dtype(1)
    return fms_dl.tensor(np.asarray(data), dtype=np_dtype), torch.tensor(data, dtype=torch_dtype)


def _same(ours: fms_dl.Tensor, theirs: torch.Tensor) -> None:
    assert str(ours.dtype) == str(theirs.dtype).removeprefix("torch."), (ours.dtype, theirs.dtype)
    np.testing.assert_allclose(
        ours.numpy().astype(np.float64), theirs.double().numpy(), rtol=1e-6, atol=1e-6
    )


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "lt": lambda a, b: a < b,
    "eq": lambda a, b: a == b,
}
_SCALARS = [True, 1, 2.5]


@pytest.mark.parametrize("op", sorted(_BINARY))
@pytest.mark.parametrize("left", sorted(_DTYPES))
@pytest.mark.parametrize("right", [*sorted(_DTYPES), "scalar:True", "scalar:1", "scalar:2.5"])
@pytest.mark.parametrize("zero_d", [False, True])
def test_binary_promotion_matches_torch(op: str, left: str, right: str, zero_d: bool) -> None:
    """`a op b` has torch's result dtype for every pair of dtypes, 0-d tensors and Python numbers."""
    fn = _BINARY[op]
    a, ta = _pair(left)
    if right.startswith("scalar:"):
        b = tb = {"True": True, "1": 1, "2.5": 2.5}[right.removeprefix("scalar:")]
    else:
        b, tb = _pair(right, () if zero_d else (3,))
    with np.errstate(divide="ignore", invalid="ignore"):
        _same(fn(a, b), fn(ta, tb))
        if not isinstance(b, fms_dl.Tensor):
            _same(fn(b, a), fn(tb, ta))


@pytest.mark.parametrize("name", ["sigmoid", "exp", "tanh", "sqrt", "log"])
@pytest.mark.parametrize("dtype", ["bool", "int64"])
def test_float_valued_unary_ops_promote_integers(name: str, dtype: str) -> None:
    """`tensor([0, 1, 2]).sigmoid()` (and exp, tanh, sqrt, log) is float32, as in torch."""
    a, ta = _pair(dtype)
    with np.errstate(divide="ignore"):
        _same(getattr(a, name)(), getattr(ta, name)())


@pytest.mark.parametrize("dtype", ["bool", "int64"])
def test_sum_of_integers_is_int64(dtype: str) -> None:
    """A sum of bools or integers is int64, as in torch."""
    a, ta = _pair(dtype)
    _same(a.sum(), ta.sum())


@pytest.mark.parametrize("name", ["mean", "var", "softmax", "gelu", "silu"])
def test_float_only_ops_refuse_integers(name: str) -> None:
    """mean, var, softmax, GELU and SiLU raise for an int64 tensor, as torch does."""
    a, ta = _pair("int64")
    torch_fn = {"gelu": TF.gelu, "silu": TF.silu, "softmax": lambda t: t.softmax(-1)}
    ours_fn = {"softmax": lambda t: t.softmax(-1)}
    with pytest.raises(RuntimeError):
        torch_fn.get(name, lambda t: getattr(t, name)())(ta)
    with pytest.raises(TypeError, match=name):
        ours_fn.get(name, lambda t: getattr(t, name)())(a)


@pytest.mark.parametrize(
    "fn", [lambda t: -t, lambda t: t - 1, lambda t: 1 - t, lambda t: t.abs()], ids=str
)
def test_bool_arithmetic_refused_like_torch(fn: Callable[[Any], Any]) -> None:
    """Negation, subtraction and abs of a bool tensor raise, in torch and here."""
    a, ta = _pair("bool")
    with pytest.raises(RuntimeError):
        fn(ta)
    with pytest.raises(TypeError, match="bool"):
        fn(a)


def _grads(
    fn_ours: Callable[[Any], Any], fn_torch: Callable[[Any], Any], x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    a = fms_dl.tensor(x, requires_grad=True)
    t = torch.tensor(x, requires_grad=True)
    fn_ours(a).sum().backward()
    fn_torch(t).sum().backward()
    assert a.grad is not None
    assert t.grad is not None
    return a.grad.numpy(), t.grad.numpy()


def test_pow_zero_gradient_at_zero_is_zero() -> None:
    """d(x**0)/dx at x = 0 is 0 (torch), not 0 * inf = nan."""
    ours, theirs = _grads(lambda t: t**0, lambda t: t**0, np.array([0.0, 1.0, -2.0]))
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ours, [0.0, 0.0, 0.0])


@pytest.mark.parametrize("bounds", [(-0.5, 0.5), (0.5, -0.5), (0.0, 0.0), (None, 0.0), (0.0, None)])
def test_clamp_gradient_at_the_bounds_matches_torch(bounds: tuple[Any, Any]) -> None:
    """clamp passes the gradient at (not just inside) the bounds, even for min > max, like torch."""
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, np.nan])
    lo, hi = bounds
    ours, theirs = _grads(lambda t: t.clamp(lo, hi), lambda t: t.clamp(lo, hi), x)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("var of one element", lambda t: t.var()),
        ("var over a dim of one", lambda t: t.reshape(1, -1).var(0)),
        ("var correction 2 of two", lambda t: t[:2].var(correction=2)),
        ("mean over an empty dim", lambda t: t.reshape(-1, 1)[:0].mean(0)),
        ("mean of nothing", lambda t: t[:0].mean()),
        ("sum over a 0-d dim", lambda t: t[0].sum(0)),
        ("mean over a 0-d dim -1", lambda t: t[0].mean(-1)),
        ("max of 0-d", lambda t: t[0].amax(0) if isinstance(t, torch.Tensor) else t[0].max(0)),
        ("softmax of 0-d", lambda t: t[0].softmax(0)),
        ("log_softmax of 0-d", lambda t: t[0].log_softmax(-1)),
    ],
)
def test_degenerate_reductions_match_torch(name: str, fn: Callable[[Any], Any]) -> None:
    """Reductions over one element, zero elements and 0-d tensors: torch's values (nan included).

    Gradients match too (to 1e-12), except for a divisor of zero with nonzero data (see below).
    """
    x = np.array([0.5, 2.0, -1.0])[: 1 if "one" in name else 3]
    a = fms_dl.tensor(x, requires_grad=True)
    t = torch.tensor(x, requires_grad=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ours, theirs = fn(a), fn(t)
        np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12)
        assert ours.shape == tuple(theirs.shape), name
        if "correction 2" in name:
            # a divisor of 0 with a nonzero sum of squares: torch's fused var gradient reads
            # +inf where the chain through the mean here reads inf - inf = nan; values agree
            return
        ours.sum().backward()
    theirs.sum().backward()
    assert a.grad is not None
    assert t.grad is not None
    np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_gather_refuses_negative_and_too_large_indices_like_torch() -> None:
    """gather accepts indices in [0, n) only; -1 is an error in torch, so it is here."""
    x = np.arange(6.0).reshape(2, 3)
    for bad in ([[-1], [0]], [[3], [0]]):
        with pytest.raises(RuntimeError):
            torch.tensor(x).gather(1, torch.tensor(bad))
        with pytest.raises(ShapeError, match=r"\[0, 3\)"):
            fms_dl.tensor(x).gather(1, np.array(bad))


def test_gather_with_a_smaller_index_matches_torch() -> None:
    """An index smaller than the input in the other dims reads a corner, as torch's does."""
    x = np.arange(12.0).reshape(3, 4)
    idx = np.array([[3], [0]])
    ours, theirs = _grads(
        lambda t: t.gather(1, idx) * 2.0, lambda t: t.gather(1, torch.tensor(idx)) * 2.0, x
    )
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(
        fms_dl.tensor(x).gather(1, idx).numpy(), torch.tensor(x).gather(1, torch.tensor(idx))
    )
    with pytest.raises(ShapeError, match="no larger"):
        fms_dl.tensor(x).gather(1, np.zeros((4, 1), dtype=np.int64))


@pytest.mark.parametrize(
    ("shape", "sizes"), [((3, 1), (-1, 4)), ((1, 3), (2, -1, -1)), ((3,), (2, -1)), ((1,), (0,))]
)
def test_expand_keeps_minus_one_dims_like_torch(
    shape: tuple[int, ...], sizes: tuple[int, ...]
) -> None:
    """expand(-1, n): -1 keeps that size; the gradient sums back over the copies."""
    x = np.random.default_rng(0).standard_normal(shape)
    ours, theirs = _grads(lambda t: t.expand(*sizes) * 1.0, lambda t: t.expand(*sizes) * 1.0, x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert fms_dl.tensor(x).expand(*sizes).shape == tuple(torch.tensor(x).expand(*sizes).shape)


@pytest.mark.parametrize("sizes", [(-1, 3, 1), (2,), (3, -2)])
def test_expand_refuses_what_torch_refuses(sizes: tuple[int, ...]) -> None:
    """-1 in a new leading dim, too few sizes and sizes below -1 are errors in both."""
    x = np.zeros((3, 1))
    with pytest.raises(RuntimeError):
        torch.tensor(x).expand(*sizes)
    with pytest.raises(ShapeError, match="expand"):
        fms_dl.tensor(x).expand(*sizes)


def test_exact_gelu_matches_torch_on_the_whole_line() -> None:
    """Exact (erf) GELU, now vectorised: float64 values and gradients within 1e-12 of torch's."""
    x = np.concatenate([np.linspace(-12.0, 12.0, 4001), [0.0, -0.0, 1e-30, -40.0, 40.0]])
    a = fms_dl.tensor(x, requires_grad=True)
    t = torch.tensor(x, requires_grad=True)
    np.testing.assert_allclose(a.gelu().numpy(), TF.gelu(t).detach().numpy(), rtol=0, atol=1e-12)
    a.gelu().sum().backward()
    TF.gelu(t).sum().backward()
    assert a.grad is not None
    assert t.grad is not None
    np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=0, atol=1e-12)
    # non-finite inputs in float64 on both sides: torch's float32 kernel answers nan at +inf on
    # AVX-512 CPUs and inf on AVX2 ones, so a float32 reference would test the CPU, not us
    special = np.array([np.inf, -np.inf, np.nan])
    inf = fms_dl.tensor(special).gelu().numpy()
    np.testing.assert_array_equal(inf, TF.gelu(torch.tensor(special, dtype=torch.float64)).numpy())
