"""Every op against PyTorch in float64: outputs within 1e-6 and gradients within 1e-5.

Shapes come from hypothesis (few examples each, to keep the suite fast).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import fms_dl
from fms_dl.nn import functional as F

# Zero-size and single-element shapes (0-d, one element, an empty dimension anywhere) are drawn
# besides ordinary ones, and each op also runs on every one of them (`test_*_edge_shapes`).
EDGE_SHAPES: list[tuple[int, ...]] = [(), (1,), (0,), (1, 1), (2, 0), (0, 3), (1, 0, 2), (3, 1)]
shapes = st.sampled_from(EDGE_SHAPES) | st.lists(st.integers(0, 4), max_size=4).map(tuple)
FEW = settings(max_examples=8, deadline=None)


def run_both(
    h: Any, fn_ours: Callable[..., Any], fn_torch: Callable[..., Any], *arrays: np.ndarray
) -> None:
    """Forward and backward (with a random cotangent) through both; compare outputs and grads.

    Where torch refuses the input (an empty max, indexing a 0-d tensor, ...), ours must refuse
    it too.
    """
    pairs = [h.pair(a) for a in arrays]
    try:
        theirs = fn_torch(*[p[1] for p in pairs])
    except (RuntimeError, IndexError, ValueError):
        with pytest.raises((RuntimeError, IndexError, ValueError, TypeError)):
            fn_ours(*[p[0] for p in pairs])
        return
    ours = fn_ours(*[p[0] for p in pairs])
    h.close(ours, theirs, h.OUT_TOL, "output")
    v = np.random.default_rng(1).standard_normal(ours.shape)
    ours.backward(v)
    theirs.backward(torch.tensor(v))
    for i, (a, b) in enumerate(pairs):
        h.close(a.grad, b.grad, h.GRAD_TOL, f"grad of input {i}")


UNARY: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "exp": (lambda x: x.exp(), torch.exp),
    "tanh": (lambda x: x.tanh(), torch.tanh),
    "sigmoid": (lambda x: x.sigmoid(), torch.sigmoid),
    "relu": (lambda x: x.relu(), torch.relu),
    "gelu": (lambda x: x.gelu(), TF.gelu),
    "gelu_tanh": (lambda x: x.gelu("tanh"), lambda x: TF.gelu(x, approximate="tanh")),
    "silu": (lambda x: x.silu(), TF.silu),
    "abs": (lambda x: x.abs(), torch.abs),
    "neg": (lambda x: -x, torch.neg),
    "square": (lambda x: x**2, lambda x: x**2),
    "clamp": (lambda x: x.clamp(-0.3, 0.4), lambda x: x.clamp(-0.3, 0.4)),
    "sum": (lambda x: x.sum(), torch.sum),
    "mean": (lambda x: x.mean(), torch.mean),
    "var": (lambda x: x.var(), torch.var),
    "max": (lambda x: x.max(), torch.amax),
    "min": (lambda x: x.min(), torch.amin),
    "sum_last_keepdim": (lambda x: x.sum(-1, keepdim=True), lambda x: x.sum(-1, keepdim=True)),
    "mean_first": (lambda x: x.mean(0), lambda x: x.mean(0)),
    "max_last": (lambda x: x.max(-1), lambda x: x.amax(-1)),
    "var_last_biased": (lambda x: x.var(-1, correction=0), lambda x: x.var(-1, correction=0)),
    "softmax": (lambda x: x.softmax(-1), lambda x: x.softmax(-1)),
    "log_softmax": (lambda x: x.log_softmax(0), lambda x: x.log_softmax(0)),
    "flatten": (lambda x: x.flatten() * 1.0, lambda x: x.flatten() * 1.0),
    "transpose": (lambda x: x.transpose(0, -1) * 1.0, lambda x: x.transpose(0, -1) * 1.0),
    "permute_reverse": (
        lambda x: x.permute(tuple(reversed(range(x.ndim)))) * 1.0,
        lambda x: x.permute(tuple(reversed(range(x.ndim)))) * 1.0,
    ),
    "unsqueeze": (lambda x: x.unsqueeze(0) * 1.0, lambda x: x.unsqueeze(0) * 1.0),
    "getitem_first": (lambda x: x[0] * 1.0, lambda x: x[0] * 1.0),
    "getitem_slice": (lambda x: x[:: -1 if False else 2] * 1.0, lambda x: x[::2] * 1.0),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@FEW
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_unary_parity(h: Any, name: str, shape: tuple[int, ...], seed: int) -> None:
    """Unary ops and reductions equal PyTorch (float64; out 1e-6, grad 1e-5)."""
    x = np.random.default_rng(seed).standard_normal(shape)
    ours, theirs = UNARY[name]
    run_both(h, ours, theirs, x)


@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_parity_edge_shapes(h: Any, name: str, shape: tuple[int, ...]) -> None:
    """Every unary op and reduction on 0-d, one-element and empty tensors: torch's values (nan
    for the variance of one element and the mean of nothing), torch's gradients, torch's
    refusals (1e-6 / 1e-5)."""
    ours, theirs = UNARY[name]
    run_both(h, ours, theirs, np.random.default_rng(0).standard_normal(shape))


@pytest.mark.parametrize("name", ["log", "sqrt", "pow"])
@FEW
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_positive_parity(h: Any, name: str, shape: tuple[int, ...], seed: int) -> None:
    """log, sqrt and x ** y on positive inputs equal PyTorch (out 1e-6, grad 1e-5)."""
    r = np.random.default_rng(seed)
    x, y = r.random(shape) + 0.1, r.standard_normal(shape)
    fns: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
        "log": (lambda a, b: a.log() * b, lambda a, b: a.log() * b),
        "sqrt": (lambda a, b: a.sqrt() * b, lambda a, b: a.sqrt() * b),
        "pow": (lambda a, b: a**b, lambda a, b: a**b),
    }
    run_both(h, *fns[name], x, y)


@st.composite
def broadcast_pair(draw: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    full = draw(st.lists(st.integers(0, 4), max_size=4))  # 0: an empty dimension
    a = [n if draw(st.booleans()) else 1 for n in full]
    b = [n if draw(st.booleans()) else 1 for n in full]
    cut = draw(st.integers(0, len(full)))
    return tuple(a), tuple(b[cut:])


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "where"])
@FEW
@given(pair=broadcast_pair(), seed=st.integers(0, 2**16))
def test_broadcast_binary_parity(
    h: Any, op: str, pair: tuple[tuple[int, ...], ...], seed: int
) -> None:
    """Broadcast arithmetic equals PyTorch, gradients reduced to each input's shape (1e-6 / 1e-5)."""
    r = np.random.default_rng(seed)
    a, b = r.standard_normal(pair[0]), r.random(pair[1]) + 0.5
    cond = r.random(np.broadcast_shapes(pair[0], pair[1])) > 0.5
    fns: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
        "add": (lambda x, y: x + y, lambda x, y: x + y),
        "sub": (lambda x, y: x - y, lambda x, y: x - y),
        "mul": (lambda x, y: x * y, lambda x, y: x * y),
        "div": (lambda x, y: x / y, lambda x, y: x / y),
        "where": (
            lambda x, y: fms_dl.where(cond, x, y),
            lambda x, y: torch.where(torch.tensor(cond), x, y),
        ),
    }
    run_both(h, *fns[op], a, b)


@FEW
@given(
    batch=st.lists(st.integers(0, 3), max_size=2).map(tuple),
    m=st.integers(0, 4),
    k=st.integers(0, 4),
    n=st.integers(0, 4),
    seed=st.integers(0, 2**16),
)
def test_matmul_parity(h: Any, batch: tuple[int, ...], m: int, k: int, n: int, seed: int) -> None:
    """Batched matmul, with the second operand broadcast over the batch, equals PyTorch."""
    r = np.random.default_rng(seed)
    run_both(
        h,
        lambda a, b: a @ b,
        lambda a, b: a @ b,
        r.standard_normal((*batch, m, k)),
        r.standard_normal((k, n)),
    )
    run_both(
        h,
        lambda a, b: a @ b,
        lambda a, b: a @ b,
        r.standard_normal((k,)),
        r.standard_normal((*batch, k, n)),
    )


@FEW
@given(
    n=st.integers(1, 3),
    sizes=st.lists(st.integers(0, 3), min_size=1, max_size=3),
    seed=st.integers(0, 99),
)
def test_cat_stack_gather_parity(h: Any, n: int, sizes: list[int], seed: int) -> None:
    """cat, stack and gather equal PyTorch."""
    r = np.random.default_rng(seed)
    arrays = [r.standard_normal((n, s)) for s in sizes]
    run_both(h, lambda *xs: fms_dl.cat(xs, 1), lambda *xs: torch.cat(xs, 1), *arrays)
    same = [r.standard_normal((n, 3)) for _ in sizes]
    run_both(h, lambda *xs: fms_dl.stack(xs, 1), lambda *xs: torch.stack(xs, 1), *same)
    idx = r.integers(0, 3, size=(n, 5))
    run_both(h, lambda x: x.gather(1, idx), lambda x: x.gather(1, torch.tensor(idx)), same[0])
    rows = r.integers(0, n, size=4)
    run_both(h, lambda x: x[rows], lambda x: x[torch.tensor(rows)], same[0])


@settings(max_examples=10, deadline=None)
@given(
    n=st.integers(1, 2),
    groups=st.sampled_from([1, 2]),
    cin_per=st.integers(1, 2),
    cout_per=st.integers(1, 2),
    hw=st.tuples(st.integers(5, 8), st.integers(5, 8)),
    k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    bias=st.booleans(),
    seed=st.integers(0, 99),
)
def test_conv2d_parity(
    h: Any,
    n: int,
    groups: int,
    cin_per: int,
    cout_per: int,
    hw: Any,
    k: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    bias: bool,
    seed: int,
) -> None:
    """conv2d with stride, padding, dilation and groups equals torch.nn.functional.conv2d."""
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, groups * cin_per, *hw))
    w = r.standard_normal((groups * cout_per, cin_per, *k))
    b = r.standard_normal(groups * cout_per)
    kw = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    if bias:
        run_both(
            h,
            lambda x, w, b: F.conv2d(x, w, b, **kw),
            lambda x, w, b: TF.conv2d(x, w, b, **kw),
            x,
            w,
            b,
        )
    else:
        run_both(
            h,
            lambda x, w: F.conv2d(x, w, None, **kw),
            lambda x, w: TF.conv2d(x, w, None, **kw),
            x,
            w,
        )


@settings(max_examples=10, deadline=None)
@given(
    k=st.integers(1, 3),
    stride=st.integers(1, 3),
    pad=st.integers(0, 1),
    dil=st.integers(1, 2),
    include_pad=st.booleans(),
    seed=st.integers(0, 99),
)
def test_pool_parity(
    h: Any, k: int, stride: int, pad: int, dil: int, include_pad: bool, seed: int
) -> None:
    """max_pool2d and avg_pool2d equal PyTorch's (distinct inputs, so the arg-max is unique)."""
    pad = min(pad, k // 2)
    x = np.random.default_rng(seed).permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) / 7.0
    run_both(
        h,
        lambda x: F.max_pool2d(x, k, stride, pad, dil),
        lambda x: TF.max_pool2d(x, k, stride, pad, dil),
        x,
    )
    run_both(
        h,
        lambda x: F.avg_pool2d(x, k, stride, pad, count_include_pad=include_pad),
        lambda x: TF.avg_pool2d(x, k, stride, pad, count_include_pad=include_pad),
        x,
    )


def test_accumulation_and_shared_use(h: Any) -> None:
    """A tensor used twice, and two backward passes, accumulate gradients as PyTorch does."""
    x, tx = h.pair(np.array([1.0, -2.0, 3.0]))
    for _ in range(2):
        (x * x + x.exp() * x).sum().backward()
        (tx * tx + tx.exp() * tx).sum().backward()
    h.close(x.grad, tx.grad, h.GRAD_TOL, "accumulated grad")


def test_detach_and_no_grad() -> None:
    x = fms_dl.tensor([1.0, 2.0], requires_grad=True)
    y = x.detach() * 3
    assert not y.requires_grad
    with fms_dl.no_grad():
        z = x * 2
    assert not z.requires_grad
    assert z.grad_fn is None
    assert fms_dl.is_grad_enabled()
    (x * 2 + x.detach()).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [2.0, 2.0])


def test_dtypes_follow_torch() -> None:
    """Python floats make float32 (torch's default); float64 arrays stay float64; grads keep dtype."""
    assert fms_dl.tensor([1.0]).dtype == np.float32
    x = fms_dl.Tensor(np.ones(3), requires_grad=True)
    assert x.dtype == np.float64
    y = fms_dl.Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    ((y * 2.5).to(np.float64) * x).sum().backward()
    assert y.grad.dtype == np.float32
    assert x.grad.dtype == np.float64
    np.testing.assert_allclose(y.grad.data, 2.5)


@FEW
@given(pair=broadcast_pair(), seed=st.integers(0, 2**16))
def test_comparisons_parity(pair: tuple[tuple[int, ...], ...], seed: int) -> None:
    """Comparisons broadcast like torch's and give the same boolean tensors (not differentiable)."""
    r = np.random.default_rng(seed)
    a, b = (
        r.integers(0, 3, pair[0]).astype(np.float64),
        r.integers(0, 3, pair[1]).astype(np.float64),
    )
    ours, theirs = fms_dl.Tensor(a), torch.tensor(a)
    other_o, other_t = fms_dl.Tensor(b), torch.tensor(b)
    for op in ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"):
        got = getattr(ours, op)(other_o)
        assert got.dtype == np.bool_
        assert not got.requires_grad
        np.testing.assert_array_equal(got.data, getattr(theirs, op)(other_t).numpy(), err_msg=op)


def test_no_grad_as_decorator_and_nesting() -> None:
    x = fms_dl.tensor([1.0], requires_grad=True)

    @fms_dl.no_grad()
    def f(t: fms_dl.Tensor) -> fms_dl.Tensor:
        with fms_dl.enable_grad():
            inner = t * 2
        assert inner.requires_grad
        return t * 3

    assert not f(x).requires_grad
    assert fms_dl.is_grad_enabled()


def test_iteration_over_first_dim(h: Any) -> None:
    """Iterating yields rows (as in torch), each differentiable, and stops at the end."""
    x, tx = h.pair(np.arange(6.0).reshape(3, 2))
    rows = list(x)
    assert len(rows) == 3
    sum(r * float(i + 1) for i, r in enumerate(rows)).sum().backward()  # type: ignore[union-attr]
    sum(r * float(i + 1) for i, r in enumerate(tx)).sum().backward()
    h.close(x.grad, tx.grad, h.GRAD_TOL, "grad through iteration")


def test_graph_is_freed_by_reference_counting() -> None:
    """No reference cycles: a dropped graph (even of ops that save their output) frees at once."""
    import gc
    import weakref

    x = fms_dl.Tensor(np.ones((4, 4)), requires_grad=True)
    gc.disable()
    try:
        e = x.exp()  # exp, tanh, sigmoid, sqrt and softmax save their own output
        t = e.tanh().sigmoid().sqrt().softmax(-1)
        y = (t @ x).sum()
        refs = [weakref.ref(v) for v in (e, t, y)]
        y.backward()
        del e, t, y
        assert all(r() is None for r in refs)
    finally:
        gc.enable()


def test_retain_graph_semantics(h: Any) -> None:
    """As in torch: a second backward through a released graph is an error; with
    retain_graph=True it works and accumulates (1e-12)."""
    x, tx = h.pair(np.array([0.5, -1.0]))
    y, ty = (x.exp() * x).sum(), (tx.exp() * tx).sum()
    y.backward(retain_graph=True)
    ty.backward(retain_graph=True)
    y.backward()
    ty.backward()
    h.close(x.grad, tx.grad, 1e-12, "grad after two backward passes")
    with pytest.raises(fms_dl.AutogradError, match="second time"):
        y.backward()
