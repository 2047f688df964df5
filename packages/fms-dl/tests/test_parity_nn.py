"""Every layer and loss against PyTorch in float64 with copied weights.

Outputs within 1e-6, parameter and input gradients within 1e-5; shapes from hypothesis.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fms_dl
from fms_dl import nn
from fms_dl.nn import functional as F

FEW = settings(max_examples=6, deadline=None)


def check_layer(
    h: Any, ours: nn.Module, theirs: torch.nn.Module, x: np.ndarray, out_index: Any = None
) -> None:
    """Copy torch's weights into ours, run both forward and backward, compare everything."""
    theirs = theirs.double()
    ours.double()
    h.copy_module(ours, theirs)
    xo, xt = h.pair(x)
    yo, yt = ours(xo), theirs(xt)
    if out_index is not None:
        yo, yt = out_index(yo), out_index(yt)
    h.close(yo, yt, h.OUT_TOL, "output")
    v = np.random.default_rng(2).standard_normal(yo.shape)
    yo.backward(v)
    yt.backward(torch.tensor(v))
    h.close(xo.grad, xt.grad, h.GRAD_TOL, "input grad")
    h.grads_close(ours, theirs)
    for name, b in theirs.named_buffers():
        h.close(dict(ours.named_buffers())[name], b, h.OUT_TOL, f"buffer {name}")


@FEW
@given(
    n=st.integers(1, 4),
    i=st.integers(1, 5),
    o=st.integers(1, 5),
    bias=st.booleans(),
    seed=st.integers(0, 99),
)
def test_linear(h: Any, n: int, i: int, o: int, bias: bool, seed: int) -> None:
    """Linear equals torch.nn.Linear (1e-6 / 1e-5)."""
    x = np.random.default_rng(seed).standard_normal((n, 2, i))
    check_layer(h, nn.Linear(i, o, bias=bias), torch.nn.Linear(i, o, bias=bias), x)


@FEW
@given(
    groups=st.sampled_from([1, 2]),
    k=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    seed=st.integers(0, 99),
)
def test_conv2d(
    h: Any, groups: int, k: int, stride: int, padding: int, dilation: int, seed: int
) -> None:
    """Conv2d equals torch.nn.Conv2d (1e-6 / 1e-5)."""
    x = np.random.default_rng(seed).standard_normal((2, 4, 7, 6))
    kw = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    check_layer(h, nn.Conv2d(4, 6, k, **kw), torch.nn.Conv2d(4, 6, k, **kw), x)


def test_pool_layers(h: Any) -> None:
    x = np.random.default_rng(0).permutation(2 * 2 * 6 * 6).reshape(2, 2, 6, 6) / 5.0
    check_layer(h, nn.MaxPool2d(3, 2, 1), torch.nn.MaxPool2d(3, 2, 1), x)
    check_layer(h, nn.AvgPool2d(2), torch.nn.AvgPool2d(2), x)


@pytest.mark.parametrize("momentum", [0.1, None])
@settings(max_examples=3, deadline=None)
@given(
    n=st.integers(2, 5),
    c=st.integers(1, 4),
    length=st.integers(1, 3),
    hw=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    seed=st.integers(0, 99),
)
def test_batchnorm_train_then_eval(
    h: Any, momentum: float | None, n: int, c: int, length: int, hw: tuple[int, int], seed: int
) -> None:
    """BatchNorm1d/2d: training output, gradients and running statistics over 3 steps, then eval."""
    rng = np.random.default_rng(seed)
    for ours, theirs, shape in (
        (nn.BatchNorm1d(c, momentum=momentum), torch.nn.BatchNorm1d(c, momentum=momentum), (n, c)),
        (
            nn.BatchNorm1d(c, momentum=momentum),
            torch.nn.BatchNorm1d(c, momentum=momentum),
            (n, c, length),
        ),
        (
            nn.BatchNorm2d(c, momentum=momentum),
            torch.nn.BatchNorm2d(c, momentum=momentum),
            (n, c, *hw),
        ),
    ):
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            theirs.bias.uniform_(-0.5, 0.5)
        for _ in range(3):
            ours.zero_grad()
            theirs.zero_grad()
            check_layer(h, ours, theirs, rng.standard_normal(shape) * 2 + 1)
            theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
        ours.eval()
        theirs.eval()
        ours.zero_grad()
        theirs.zero_grad()
        check_layer(h, ours, theirs, rng.standard_normal(shape))


@FEW
@given(
    shape=st.lists(st.integers(1, 4), min_size=2, max_size=4).map(tuple), seed=st.integers(0, 99)
)
def test_layernorm(h: Any, shape: tuple[int, ...], seed: int) -> None:
    """LayerNorm over the last two dims equals torch.nn.LayerNorm."""
    ours, theirs = nn.LayerNorm(shape[-2:]), torch.nn.LayerNorm(shape[-2:])
    with torch.no_grad():
        theirs.weight.normal_()
        theirs.bias.normal_()
    check_layer(h, ours, theirs, np.random.default_rng(seed).standard_normal(shape))


def test_embedding_with_padding_idx(h: Any) -> None:
    """Embedding equals torch.nn.Embedding, including no gradient for padding_idx and repeated ids."""
    ours, theirs = nn.Embedding(7, 3, padding_idx=1), torch.nn.Embedding(7, 3, padding_idx=1)
    theirs.double()
    ours.double()
    h.copy_module(ours, theirs)
    idx = np.array([[1, 2, 2], [6, 1, 0]])
    yo, yt = ours(fms_dl.Tensor(idx)), theirs(torch.tensor(idx))
    h.close(yo, yt, h.OUT_TOL, "output")
    v = np.random.default_rng(0).standard_normal(yo.shape)
    yo.backward(v)
    yt.backward(torch.tensor(v))
    h.grads_close(ours, theirs)


def test_dropout_semantics() -> None:
    """Dropout: identity in eval; in training zeros about p and scales survivors by 1/(1-p)."""
    fms_dl.manual_seed(0)
    layer = nn.Dropout(0.25)
    x = fms_dl.Tensor(np.ones((200, 50)))
    y = layer(x).data
    assert set(np.unique(y)) <= {0.0, 1 / 0.75}
    assert abs((y == 0).mean() - 0.25) < 0.02
    layer.eval()
    np.testing.assert_array_equal(layer(x).data, x.data)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@settings(max_examples=3, deadline=None)
@given(
    layers=st.integers(1, 3),
    n=st.integers(1, 3),
    length=st.integers(1, 5),
    i=st.integers(1, 4),
    hs=st.integers(1, 5),
    seed=st.integers(0, 99),
)
def test_recurrent(
    h: Any,
    kind: str,
    batch_first: bool,
    bidirectional: bool,
    layers: int,
    n: int,
    length: int,
    i: int,
    hs: int,
    seed: int,
) -> None:
    """RNN, LSTM and GRU (multi-layer, both layouts, uni- and bidirectional) equal torch's:
    outputs, final states and every gradient."""
    rng = np.random.default_rng(seed)
    kw = {"num_layers": layers, "batch_first": batch_first, "bidirectional": bidirectional}
    ours = getattr(nn, kind)(i, hs, **kw)
    theirs = getattr(torch.nn, kind)(i, hs, **kw).double()
    ours.double()
    h.copy_module(ours, theirs)
    x = rng.standard_normal((n, length, i) if batch_first else (length, n, i))
    d = 2 if bidirectional else 1
    h0 = rng.standard_normal((layers * d, n, hs))
    c0 = rng.standard_normal((layers * d, n, hs))
    xo, xt = h.pair(x)
    h0o, h0t = h.pair(h0)
    if kind == "LSTM":
        c0o, c0t = h.pair(c0)
        yo, (hno, cno) = ours(xo, (h0o, c0o))
        yt, (hnt, cnt) = theirs(xt, (h0t, c0t))
        h.close(cno, cnt, h.OUT_TOL, "c_n")
        loss_o = (yo * yo).sum() + hno.sum() + (cno * cno).sum()
        loss_t = (yt * yt).sum() + hnt.sum() + (cnt * cnt).sum()
    else:
        yo, hno = ours(xo, h0o)
        yt, hnt = theirs(xt, h0t)
        loss_o = (yo * yo).sum() + hno.sum()
        loss_t = (yt * yt).sum() + hnt.sum()
    h.close(yo, yt, h.OUT_TOL, "output")
    h.close(hno, hnt, h.OUT_TOL, "h_n")
    loss_o.backward()
    loss_t.backward()
    h.close(xo.grad, xt.grad, h.GRAD_TOL, "input grad")
    h.close(h0o.grad, h0t.grad, h.GRAD_TOL, "h0 grad")
    h.grads_close(ours, theirs)


def test_recurrent_unbatched_and_default_state(h: Any) -> None:
    """Unbatched input (L, H_in) and zero initial state, as in torch."""
    ours, theirs = nn.GRU(3, 4), torch.nn.GRU(3, 4).double()
    ours.double()
    h.copy_module(ours, theirs)
    x = np.random.default_rng(0).standard_normal((6, 3))
    yo, hno = ours(fms_dl.Tensor(x))
    yt, hnt = theirs(torch.tensor(x))
    h.close(yo, yt, h.OUT_TOL, "output")
    h.close(hno, hnt, h.OUT_TOL, "h_n")


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_and_nll(h: Any, smoothing: float, reduction: str) -> None:
    """cross_entropy with ignore_index and label_smoothing, (N, C) and (N, C, L), equals torch's."""
    rng = np.random.default_rng(0)
    for shape, tshape in (((6, 4), (6,)), ((3, 4, 5), (3, 5))):
        logits = rng.standard_normal(shape)
        target = rng.integers(0, 4, size=tshape)
        target.reshape(-1)[::3] = -100
        _ce_case(h, logits, target, smoothing, reduction)


def _ce_case(
    h: Any, logits: np.ndarray, target: np.ndarray, smoothing: float, reduction: str
) -> None:
    to, tt = fms_dl.Tensor(target), torch.tensor(target)
    _loss_pair(
        h,
        logits,
        lambda z: F.cross_entropy(z, to, label_smoothing=smoothing, reduction=reduction),
        lambda z: torch.nn.functional.cross_entropy(
            z, tt, label_smoothing=smoothing, reduction=reduction
        ),
    )
    _loss_pair(
        h,
        logits,
        lambda z: F.nll_loss(z.log_softmax(1), to, reduction=reduction),
        lambda z: torch.nn.functional.nll_loss(z.log_softmax(1), tt, reduction=reduction),
    )


def _loss_pair(h: Any, x: np.ndarray, fo: Any, ft: Any) -> None:
    xo, xt = h.pair(x)
    lo, lt = fo(xo), ft(xt)
    h.close(lo, lt, h.OUT_TOL, "loss")
    lo.sum().backward()
    lt.sum().backward()
    h.close(xo.grad, xt.grad, h.GRAD_TOL, "grad")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits_and_mse(h: Any, reduction: str) -> None:
    """BCE with logits (also with pos_weight and extreme logits) and MSE equal torch's."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3)) * 4
    x[0, 0], x[1, 1] = 60.0, -60.0
    y = rng.random((5, 3))
    pw = rng.random(3) + 0.5
    _loss_pair(
        h,
        x,
        lambda z: F.binary_cross_entropy_with_logits(z, fms_dl.Tensor(y), reduction),
        lambda z: torch.nn.functional.binary_cross_entropy_with_logits(
            z, torch.tensor(y), reduction=reduction
        ),
    )
    _loss_pair(
        h,
        x,
        lambda z: nn.BCEWithLogitsLoss(reduction, pos_weight=fms_dl.Tensor(pw))(
            z, fms_dl.Tensor(y)
        ),
        lambda z: torch.nn.BCEWithLogitsLoss(reduction=reduction, pos_weight=torch.tensor(pw))(
            z, torch.tensor(y)
        ),
    )
    _loss_pair(
        h,
        x,
        lambda z: nn.MSELoss(reduction)(z, fms_dl.Tensor(y)),
        lambda z: torch.nn.MSELoss(reduction=reduction)(z, torch.tensor(y)),
    )


def test_sequential_mlp_and_cnn(h: Any) -> None:
    """Whole models (Sequential of many layers) equal their torch twins."""
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8))
    ours = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10),
        nn.GELU(),
        nn.LayerNorm(10),
        nn.Linear(10, 3),
        nn.LogSoftmax(-1),
    )
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 10),
        torch.nn.GELU(),
        torch.nn.LayerNorm(10),
        torch.nn.Linear(10, 3),
        torch.nn.LogSoftmax(-1),
    )
    check_layer(h, ours, theirs, x)


def test_initialisers_statistics() -> None:
    """Xavier and Kaiming draws have the variances their formulas promise (within 5%)."""
    fms_dl.manual_seed(0)
    w = fms_dl.Tensor(np.empty((400, 300)))
    nn.init.xavier_uniform_(w)
    assert abs(w.data.var() / (2 / 700) - 1) < 0.05
    nn.init.xavier_normal_(w, gain=2.0)
    assert abs(w.data.var() / (4 * 2 / 700) - 1) < 0.05
    nn.init.kaiming_normal_(w, nonlinearity="relu")
    assert abs(w.data.var() / (2 / 300) - 1) < 0.05
    nn.init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu")
    assert abs(w.data.var() / (2 / 400) - 1) < 0.05
    for name in ("linear", "tanh", "relu", "leaky_relu", "selu"):
        assert nn.init.calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name))
