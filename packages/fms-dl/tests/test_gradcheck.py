"""Every op's backward rule against central finite differences in float64 (`fms_dl.gradcheck`).

Tolerance: |analytic - numerical| <= 1e-5 + 1e-3 |numerical| (eps = 1e-6).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import fms_dl
from fms_dl import Tensor
from fms_dl.nn import functional as F


def t(rng: np.random.Generator, *shape: int, positive: bool = False) -> Tensor:
    a = rng.standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.5
    return Tensor(a, requires_grad=True)


UNARY: dict[str, Callable[[Tensor], Tensor]] = {
    "neg": lambda x: -x,
    "exp": lambda x: x.exp(),
    "tanh": lambda x: x.tanh(),
    "sigmoid": lambda x: x.sigmoid(),
    "relu": lambda x: x.relu(),
    "gelu": lambda x: x.gelu(),
    "gelu_tanh": lambda x: x.gelu("tanh"),
    "silu": lambda x: x.silu(),
    "abs": lambda x: x.abs(),
    "clamp": lambda x: x.clamp(-0.5, 0.5),
    "pow_scalar": lambda x: x**3,
    "sum_all": lambda x: x.sum(),
    "sum_axis": lambda x: x.sum(1),
    "sum_keepdim": lambda x: x.sum((0, 2), keepdim=True),
    "mean": lambda x: x.mean(-1, keepdim=True),
    "var": lambda x: x.var(1),
    "var_biased": lambda x: x.var((0, 1), correction=0, keepdim=True),
    "max": lambda x: x.max(1),
    "min_all": lambda x: x.min(),
    "softmax": lambda x: x.softmax(1),
    "log_softmax": lambda x: x.log_softmax(-1),
    "reshape": lambda x: x.reshape(3, -1) * 2,
    "transpose": lambda x: x.transpose(0, 2) * 2,
    "permute": lambda x: x.permute(2, 0, 1) * 2,
    "flatten": lambda x: x.flatten(1) * 2,
    "unsqueeze_squeeze": lambda x: x.unsqueeze(1).squeeze(1) * 2,
    "expand": lambda x: x[:, :1].expand(2, 5, 4) * 2,
    "getitem_basic": lambda x: x[1:, ::2, -1] * 2,
    "getitem_advanced": lambda x: x[[0, 1, 0], :, [1, 2, 1]] * 2,
    "getitem_mask": lambda x: x[x.data > 0] * 2,
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_gradcheck(name: str, rng: np.random.Generator) -> None:
    x = t(rng, 2, 3, 4)
    assert fms_dl.gradcheck(UNARY[name], [x])


@pytest.mark.parametrize("name", ["log", "sqrt", "pow_tensor_exponent", "div"])
def test_positive_domain_gradcheck(name: str, rng: np.random.Generator) -> None:
    x, y = t(rng, 3, 4, positive=True), t(rng, 4, positive=True)
    fn = {
        "log": lambda a, b: a.log(),
        "sqrt": lambda a, b: a.sqrt(),
        "pow_tensor_exponent": lambda a, b: a**b,
        "div": lambda a, b: a / b,
    }[name]
    assert fms_dl.gradcheck(
        fn, [x, y] if name in ("pow_tensor_exponent", "div") else [x, Tensor(np.ones(1))]
    )


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "radd", "rsub", "rmul", "rdiv"])
def test_binary_broadcast_gradcheck(op: str, rng: np.random.Generator) -> None:
    """Broadcasting (3, 1, 4) against (5, 1): each gradient is summed back to its own shape."""
    a, b = t(rng, 3, 1, 4, positive=True), t(rng, 5, 1, positive=True)
    fns = {
        "add": lambda x, y: x + y,
        "sub": lambda x, y: x - y,
        "mul": lambda x, y: x * y,
        "div": lambda x, y: x / y,
        "radd": lambda x, y: 2.0 + x + y,
        "rsub": lambda x, y: 2.0 - x * y,
        "rmul": lambda x, y: 3.0 * x * y,
        "rdiv": lambda x, y: 1.0 / (x + y),
    }
    assert fms_dl.gradcheck(fns[op], [a, b])


@pytest.mark.parametrize(
    ("sa", "sb"),
    [
        ((3, 4), (4, 5)),
        ((2, 3, 4), (4, 5)),
        ((2, 1, 3, 4), (5, 4, 2)),
        ((4,), (4, 3)),
        ((3, 4), (4,)),
    ],
)
def test_matmul_gradcheck(
    sa: tuple[int, ...], sb: tuple[int, ...], rng: np.random.Generator
) -> None:
    assert fms_dl.gradcheck(lambda x, y: x @ y, [t(rng, *sa), t(rng, *sb)])


def test_cat_stack_where_gather_gradcheck(rng: np.random.Generator) -> None:
    a, b = t(rng, 2, 3), t(rng, 2, 5)
    assert fms_dl.gradcheck(lambda x, y: fms_dl.cat([x, y, x], dim=1), [a, b])
    c, d = t(rng, 2, 3), t(rng, 2, 3)
    assert fms_dl.gradcheck(lambda x, y: fms_dl.stack([x, y], dim=1), [c, d])
    cond = rng.random((2, 3)) > 0.5
    assert fms_dl.gradcheck(lambda x, y: fms_dl.where(cond, x, y), [c, d])
    idx = np.array([[0, 2, 2], [1, 1, 0]])
    assert fms_dl.gradcheck(lambda x: x.gather(1, idx), [c])


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups"),
    [(1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1), (2, 1, 1, 2)],
)
def test_conv2d_gradcheck(
    stride: int, padding: int, dilation: int, groups: int, rng: np.random.Generator
) -> None:
    x, w, b = t(rng, 2, 4, 6, 5), t(rng, 4, 4 // groups, 3, 2), t(rng, 4)
    assert fms_dl.gradcheck(
        lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups), [x, w, b]
    )


def test_pooling_gradcheck(rng: np.random.Generator) -> None:
    # distinct values so the max is unique (a tie makes max non-differentiable)
    x = Tensor(rng.permutation(2 * 3 * 6 * 6).reshape(2, 3, 6, 6) / 10.0, requires_grad=True)
    assert fms_dl.gradcheck(lambda x: F.max_pool2d(x, 2), [x])
    assert fms_dl.gradcheck(lambda x: F.max_pool2d(x, 3, stride=2, padding=1, dilation=1), [x])
    assert fms_dl.gradcheck(lambda x: F.max_pool2d(x, 2, stride=1, dilation=2), [x])
    assert fms_dl.gradcheck(lambda x: F.avg_pool2d(x, 3, stride=2, padding=1), [x])
    assert fms_dl.gradcheck(lambda x: F.avg_pool2d(x, 2, padding=1, count_include_pad=False), [x])


def test_nn_functional_gradcheck(rng: np.random.Generator) -> None:
    x, w, b = t(rng, 4, 5), t(rng, 3, 5), t(rng, 3)
    assert fms_dl.gradcheck(F.linear, [x, w, b])
    assert fms_dl.gradcheck(lambda x, w, b: F.layer_norm(x, (5,), w[0], b[0].expand(5)), [x, w, b])
    assert fms_dl.gradcheck(lambda x: F.batch_norm(x, None, None, training=True), [x])
    target = Tensor(np.array([0, 2, 1, 1]))
    logits = t(rng, 4, 3)
    assert fms_dl.gradcheck(lambda z: F.cross_entropy(z, target, label_smoothing=0.1), [logits])
    assert fms_dl.gradcheck(lambda z: F.nll_loss(z.log_softmax(1), target), [logits])
    y = Tensor(rng.random((4, 3)))
    assert fms_dl.gradcheck(lambda z: F.binary_cross_entropy_with_logits(z, y), [logits])
    assert fms_dl.gradcheck(lambda z: F.mse_loss(z, y), [logits])
    emb = t(rng, 6, 3)
    idx = Tensor(np.array([[0, 5, 0], [2, 2, 1]]))
    assert fms_dl.gradcheck(lambda e: F.embedding(idx, e), [emb])


def test_dropout_gradcheck(rng: np.random.Generator) -> None:
    """Dropout with a fixed seed is a fixed mask times a scale, so its gradient is checkable."""
    x = t(rng, 3, 4)

    def fn(x: Tensor) -> Tensor:
        fms_dl.manual_seed(3)
        return F.dropout(x, 0.4, training=True)

    assert fms_dl.gradcheck(fn, [x])


def test_gradcheck_catches_a_wrong_rule(rng: np.random.Generator) -> None:
    """The checker itself can fail: a deliberately wrong backward rule is reported."""
    x = t(rng, 3)

    def bad(x: Tensor) -> Tensor:
        return Tensor._result(x.data**2, (x,), lambda g: (g * x.data,), "bad_square")

    with pytest.raises(fms_dl.GradcheckError, match="analytic"):
        fms_dl.gradcheck(bad, [x])
