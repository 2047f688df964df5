"""Bad input: every error names the op or argument, what it got and what it expected."""

from __future__ import annotations

import numpy as np
import pytest

import fms_dl
from fms_dl import nn
from fms_dl.nn import functional as F


def test_shape_mismatch_names_op_and_both_shapes() -> None:
    a, b = fms_dl.randn(2, 3), fms_dl.randn(4, 5)
    with pytest.raises(
        fms_dl.ShapeError, match=r"add: cannot broadcast shapes \(2, 3\) and \(4, 5\)"
    ):
        a + b
    with pytest.raises(fms_dl.ShapeError, match=r"mul: .*\(2, 3\) and \(4, 5\)"):
        a * b
    with pytest.raises(fms_dl.ShapeError, match=r"matmul: shapes \(2, 3\) and \(4, 5\)"):
        a @ b
    with pytest.raises(fms_dl.ShapeError, match=r"cat: shapes \(2, 3\) and \(4, 5\)"):
        fms_dl.cat([a, b], 0)
    with pytest.raises(fms_dl.ShapeError, match=r"stack: .*\(2, 3\) and \(4, 5\)"):
        fms_dl.stack([a, b])
    with pytest.raises(fms_dl.ShapeError, match=r"reshape: .*\(2, 3\).*\(4, 2\)"):
        a.reshape(4, 2)
    with pytest.raises(
        ValueError, match=r"linear: input of shape \(2, 3\) .* weight of shape \(8, 5\)"
    ):
        nn.Linear(5, 8)(a)
    with pytest.raises(
        ValueError, match=r"conv2d: input \(1, 3, 8, 8\) has 3 channels but weight \(4, 2, 3, 3\)"
    ):
        nn.Conv2d(2, 4, 3)(fms_dl.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"conv2d: input height 2"):
        nn.Conv2d(1, 1, 5)(fms_dl.randn(1, 1, 2, 8))
    with pytest.raises(ValueError, match=r"BatchNorm2d: .*4 channels.*\(2, 3, 5, 5\)"):
        nn.BatchNorm2d(4)(fms_dl.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"LSTM: expected input \(L, N, 3\).*\(5, 2, 4\)"):
        nn.LSTM(3, 4)(fms_dl.randn(5, 2, 4))
    with pytest.raises(ValueError, match=r"h0 must have shape \(1, 2, 4\), got \(1, 3, 4\)"):
        nn.GRU(3, 4)(fms_dl.randn(5, 2, 3), fms_dl.randn(1, 3, 4))
    with pytest.raises(
        ValueError,
        match=r"cross_entropy: input of shape \(4, 3\).*target of shape \(4,\), got \(5,\)",
    ):
        F.cross_entropy(fms_dl.randn(4, 3), fms_dl.Tensor(np.zeros(5, dtype=np.int64)))
    with pytest.raises(
        ValueError, match=r"mse_loss: input shape \(2, 3\) != target shape \(4, 5\)"
    ):
        F.mse_loss(a, b)


def test_bad_values_are_named() -> None:
    with pytest.raises(ValueError, match=r"target values must be in \[0, 3\).*\[7\]"):
        F.cross_entropy(fms_dl.randn(2, 3), fms_dl.Tensor(np.array([0, 7])))
    with pytest.raises(ValueError, match=r"embedding: indices must be in \[0, 4\)"):
        nn.Embedding(4, 2)(fms_dl.Tensor(np.array([4])))
    with pytest.raises(TypeError, match="embedding: indices must be integers"):
        nn.Embedding(4, 2)(fms_dl.Tensor(np.array([1.0])))
    with pytest.raises(ValueError, match="dropout: p must be in"):
        F.dropout(fms_dl.randn(2), 1.5)
    with pytest.raises(TypeError, match="only float tensors"):
        fms_dl.Tensor(np.array([1, 2]), requires_grad=True)
    with pytest.raises(ValueError, match="reduction must be"):
        F.mse_loss(fms_dl.randn(2), fms_dl.randn(2), reduction="avg")


def test_backward_on_non_scalar_without_gradient() -> None:
    x = fms_dl.randn(3, requires_grad=True)
    with pytest.raises(fms_dl.AutogradError, match=r"only for a scalar output, got shape \(3,\)"):
        (x * 2).backward()
    with pytest.raises(
        fms_dl.AutogradError, match=r"gradient has shape \(2,\) but the tensor has shape \(3,\)"
    ):
        (x * 2).backward(np.ones(2))
    with pytest.raises(fms_dl.AutogradError, match="does not require grad"):
        fms_dl.randn(3).sum().backward()


def test_inplace_modification_of_saved_tensor_is_detected() -> None:
    """Changing .data of a tensor needed for backward is caught by the version counter."""
    w = fms_dl.randn(3, requires_grad=True)
    x = fms_dl.randn(3)
    y = (w * x).sum()
    x.data = x.data * 2  # x was saved by mul to compute dL/dw
    with pytest.raises(
        fms_dl.InplaceModificationError,
        match=r"saved by 'mul' was modified in place \(version 0 -> 1\)",
    ):
        y.backward()
    # the output saved by exp, modified through an in-place method
    z = w.exp()
    loss = z.sum()  # sum saves nothing; exp saved its output z
    with fms_dl.no_grad():
        z.mul_(2.0)
    with pytest.raises(fms_dl.InplaceModificationError, match="'exp'"):
        loss.backward()
    # detach shares the version counter, as in torch
    x2 = fms_dl.randn(3)
    y2 = (w * x2).sum()
    x2.detach().add_(1.0)
    with pytest.raises(fms_dl.InplaceModificationError):
        y2.backward()


def test_inplace_on_leaf_requiring_grad_is_refused() -> None:
    w = fms_dl.randn(3, requires_grad=True)
    with pytest.raises(fms_dl.InplaceModificationError, match="leaf tensor that requires grad"):
        w.add_(1.0)
    with fms_dl.no_grad():
        w.add_(1.0)  # allowed, as optimisers do


def test_inplace_on_graph_tensor_is_refused() -> None:
    """An in-place op on a non-leaf tensor would not be recorded; it is refused, not miscomputed."""
    w = fms_dl.randn(3, requires_grad=True)
    y = w * 2
    with pytest.raises(
        fms_dl.InplaceModificationError, match="produced by 'mul' is part of the graph"
    ):
        y[0] = 5.0
    with pytest.raises(fms_dl.InplaceModificationError, match="part of the graph"):
        y.mul_(2.0)


def test_state_dict_errors_name_keys_and_shapes() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    sd = model.state_dict()
    bad = dict(sd)
    del bad["1.bias"]
    bad["extra.weight"] = np.zeros(1)
    bad["0.weight"] = np.zeros((5, 3))
    with pytest.raises(nn.StateDictError) as info:
        model.load_state_dict(bad)
    msg = str(info.value)
    assert "missing keys: 1.bias" in msg
    assert "unexpected keys: extra.weight" in msg
    assert "0.weight: expected shape (4, 3), got (5, 3)" in msg
    # nothing was half-loaded
    np.testing.assert_array_equal(model.state_dict()["0.bias"], sd["0.bias"])
    # non-strict: returns the keys, still refuses wrong shapes
    del bad["0.weight"]
    result = model.load_state_dict(bad, strict=False)
    assert result.missing_keys == ["0.weight", "1.bias"]
    assert result.unexpected_keys == ["extra.weight"]
