"""The C kernels for RMSNorm, RoPE and SwiGLU against the PyTorch code they replace.

Every kernel, forward and backward, is compared with float64 autograd on the plain formula and
with the PyTorch path of fms-llm (float32, within 1e-5), on sizes that are not multiples of any
vector width; then a whole Llama training step with and without them. Building the library needs
a C compiler: where there is none, the tests that run C skip and say so (the model then trains on
PyTorch's path, which the rest of the suite covers), and the fallback tests still run.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fms_llm.models import Llama, LlamaConfig, cpu_kernels
from fms_llm.models.fused import rms_norm
from fms_llm.models.gpt import _RotaryTable
from fms_transformer.positional import RotaryEmbedding

TOL = 1e-5


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A clean slate: nothing loaded, an empty cache directory; restored afterwards."""
    monkeypatch.setenv("FMS_LLM_CACHE", str(tmp_path))
    cpu_kernels._reset()
    yield tmp_path
    cpu_kernels._reset()


@pytest.fixture
def kernels() -> None:
    """The library, built if needed; the test skips where this machine cannot build it."""
    if os.environ.get("FMS_LLM_CPU_KERNELS", "auto") == "0":
        pytest.skip("FMS_LLM_CPU_KERNELS=0: the C kernels are switched off in this run")
    if not cpu_kernels.available():
        pytest.skip(f"no C kernels on this machine ({cpu_kernels.status()})")


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


# --------------------------------------------------------------------------------------------------
# each kernel against float64 autograd and against the PyTorch path
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 5, 37), (4, 128), (2, 1)])
def test_rms_norm_equals_float64_autograd_and_the_pytorch_path(
    kernels: None, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    x0, w0 = torch.randn(shape) * 3, torch.randn(shape[-1])
    g = torch.randn(shape)
    x, w = _leaf(x0), _leaf(w0)
    y = cpu_kernels.rms_norm(x, w, 1e-6)
    y.backward(g)
    x64, w64 = _leaf(x0.double()), _leaf(w0.double())
    ref = w64 * x64 * torch.rsqrt(x64.square().mean(-1, keepdim=True) + 1e-6)
    ref.backward(g.double())
    torch.testing.assert_close(y, ref.float(), atol=TOL, rtol=TOL)
    torch.testing.assert_close(x.grad, x64.grad.float(), atol=TOL, rtol=TOL)
    torch.testing.assert_close(w.grad, w64.grad.float(), atol=TOL, rtol=TOL)
    with torch.no_grad():  # the hand-derived PyTorch path gives the same values
        torch.testing.assert_close(rms_norm(x0, w0, 1e-6), y.detach(), atol=TOL, rtol=TOL)


def _tables(positions: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own RoPE tables (`cos` and the signed `sin`, `(positions, 1, d)`)."""
    table = _RotaryTable(RotaryEmbedding(d), positions)
    return table.cos_table, table.signed_sin_table


@pytest.mark.parametrize(("shape", "offset"), [((2, 7, 3, 10), 3), ((1, 5, 1, 2), 0)])
def test_rope_equals_float64_autograd_and_the_rotation_formula(
    kernels: None, shape: tuple[int, int, int, int], offset: int
) -> None:
    torch.manual_seed(1)
    d, seq = shape[-1], shape[1]
    cos, signed = _tables(16, d)
    x0, g = torch.randn(shape), torch.randn(shape)
    x = _leaf(x0)
    y = cpu_kernels.rope(x, cos, signed, offset)
    y.backward(g)
    # the textbook form, in float64: x cos + rotate_half(x) sin, angle t / 10000^(2i/d)
    inv = 1.0 / 10000 ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.arange(offset, offset + seq, dtype=torch.float64)[:, None] * inv
    angles = torch.cat((angles, angles), dim=-1)[:, None, :]
    x64 = _leaf(x0.double())
    c, s = angles.cos(), angles.sin()
    x1, x2 = x64.chunk(2, dim=-1)
    ref = x64 * c + torch.cat((-x2, x1), dim=-1) * s
    ref.backward(g.double())
    torch.testing.assert_close(y, ref.float(), atol=TOL, rtol=TOL)
    torch.testing.assert_close(x.grad, x64.grad.float(), atol=TOL, rtol=TOL)


def test_swiglu_equals_float64_autograd_over_the_whole_range(kernels: None) -> None:
    """Including |a| up to 100, where the exponential is clamped (silu saturates there)."""
    torch.manual_seed(2)
    a0 = torch.cat((torch.randn(1001) * 4, torch.tensor([-100.0, -87.5, -20.0, 0.0, 20.0, 100.0])))
    b0, g = torch.randn(a0.shape), torch.randn(a0.shape)
    a, b = _leaf(a0), _leaf(b0)
    h = cpu_kernels.swiglu(a, b)
    h.backward(g)
    a64, b64 = _leaf(a0.double()), _leaf(b0.double())
    ref = a64 * torch.sigmoid(a64) * b64
    ref.backward(g.double())
    torch.testing.assert_close(h, ref.float(), atol=TOL, rtol=TOL)
    torch.testing.assert_close(a.grad, a64.grad.float(), atol=TOL, rtol=TOL)
    torch.testing.assert_close(b.grad, b64.grad.float(), atol=TOL, rtol=TOL)
    with torch.no_grad():
        torch.testing.assert_close(h.detach(), F.silu(a0) * b0, atol=TOL, rtol=TOL)


@pytest.mark.parametrize(("rows", "vocab"), [(7, 1000), (1, 3), (33, 61)])
def test_softmax_cross_entropy_equals_float64_cross_entropy_and_its_gradient(
    kernels: None, rows: int, vocab: int
) -> None:
    torch.manual_seed(4)
    z0 = torch.randn(rows, vocab) * 5
    z0[0, 0] = 60.0  # one confident row: exponentials far below the maximum
    y = torch.randint(0, vocab, (rows,))
    z = z0.clone()
    loss = cpu_kernels.softmax_cross_entropy_(z, y)
    z64 = _leaf(z0.double())
    ref = F.cross_entropy(z64, y, reduction="none")
    ref.sum().backward()
    torch.testing.assert_close(loss, ref.detach().float(), atol=TOL, rtol=TOL)
    torch.testing.assert_close(z, z64.grad.float(), atol=TOL, rtol=TOL)  # softmax - onehot


def test_softmax_cross_entropy_refuses_targets_outside_the_vocabulary(kernels: None) -> None:
    for bad in (5, -1):
        with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
            cpu_kernels.softmax_cross_entropy_(torch.zeros(2, 5), torch.tensor([0, bad]))
    with pytest.raises(ValueError, match="contiguous float32"):
        cpu_kernels.softmax_cross_entropy_(torch.zeros(5, 2).t(), torch.tensor([0, 1]))


def test_nan_and_infinity_propagate(kernels: None) -> None:
    """No fast-math: a NaN stays a NaN (in its own row for RMSNorm), as in PyTorch."""
    x = torch.randn(3, 8)
    x[1, 2] = math.nan
    y = cpu_kernels.rms_norm(_leaf(x), _leaf(torch.ones(8)), 1e-6)
    assert torch.isnan(y[1]).all()
    assert torch.isfinite(y[[0, 2]]).all()
    a = torch.tensor([math.nan, math.inf, 1.0])
    h = cpu_kernels.swiglu(_leaf(a), _leaf(torch.ones(3)))
    assert torch.isnan(h[0])
    assert h[1] == math.inf
    assert torch.isfinite(h[2])
    cos, signed = _tables(4, 4)
    q = torch.randn(1, 2, 1, 4)
    q[0, 1, 0, 0] = math.nan
    r = cpu_kernels.rope(_leaf(q), cos, signed, 0)
    assert torch.isfinite(r[0, 0]).all()
    assert torch.isnan(r[0, 1]).any()


def test_non_contiguous_inputs_are_copied_not_misread(kernels: None) -> None:
    torch.manual_seed(3)
    base = torch.randn(6, 10)
    x = _leaf(base)
    view = x.t()  # (10, 6), transposed strides
    w = _leaf(torch.randn(6))
    torch.testing.assert_close(
        cpu_kernels.rms_norm(view, w, 1e-6),
        w * view * torch.rsqrt(view.square().mean(-1, keepdim=True) + 1e-6),
        atol=TOL,
        rtol=TOL,
    )


def test_shapes_that_do_not_fit_raise_before_any_c_call() -> None:
    cos, signed = _tables(4, 4)
    x = torch.randn(1, 3, 1, 4, requires_grad=True)
    with pytest.raises(ValueError, match=r"do not cover positions 2\.\.4"):
        cpu_kernels.rope(x, cos, signed, 2)
    with pytest.raises(ValueError, match="even head_dim"):
        cpu_kernels.rope(torch.randn(1, 3, 1, 5), cos, signed, 0)
    with pytest.raises(ValueError, match=r"gate \(2, 3\) and up \(3, 2\) differ"):
        cpu_kernels.swiglu(torch.randn(2, 3), torch.randn(3, 2))
    with pytest.raises(ValueError, match="does not end in"):
        cpu_kernels.rms_norm(torch.randn(2, 3), torch.randn(4), 1e-6)


# --------------------------------------------------------------------------------------------------
# when C runs, and when it does not
# --------------------------------------------------------------------------------------------------


def test_only_float32_cpu_training_calls_use_c(kernels: None) -> None:
    x = torch.randn(2, 4, requires_grad=True)
    assert cpu_kernels.supports(x)
    assert not cpu_kernels.supports(x.detach())  # nothing to differentiate: decoding, evaluation
    with torch.no_grad():
        assert not cpu_kernels.supports(x)
    assert not cpu_kernels.supports(x.double())
    assert not cpu_kernels.supports(x.bfloat16())


def _llama_step(seed: int) -> tuple[float, dict[str, torch.Tensor]]:
    """The loss and every parameter's gradient of one training step of a small Llama."""
    torch.manual_seed(seed)
    model = Llama(LlamaConfig(vocab_size=97, n_layers=2, d_model=48, n_heads=4, n_kv_heads=2))
    x, y = torch.randint(0, 97, (3, 17)), torch.randint(0, 97, (3, 17))
    loss = model(x, y)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert len(grads) == len(list(model.parameters()))
    return loss.item(), grads


def test_a_llama_training_step_is_the_same_with_and_without_the_kernels(
    kernels: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same loss (1e-6) and gradients (1e-5) for every parameter, on either path."""
    loss_c, grads_c = _llama_step(0)
    monkeypatch.setenv("FMS_LLM_CPU_KERNELS", "0")
    assert not cpu_kernels.available()
    loss_t, grads_t = _llama_step(0)
    assert loss_c == pytest.approx(loss_t, abs=1e-6)
    for name, g in grads_t.items():
        torch.testing.assert_close(grads_c[name], g, atol=TOL, rtol=1e-4, msg=name)


def test_switched_off_by_the_environment(monkeypatch: pytest.MonkeyPatch, fresh: Path) -> None:
    monkeypatch.setenv("FMS_LLM_CPU_KERNELS", "0")
    assert not cpu_kernels.available()
    assert cpu_kernels.status() == "off (FMS_LLM_CPU_KERNELS=0)"
    assert not cpu_kernels.supports(torch.randn(2, requires_grad=True))
    assert list(fresh.iterdir()) == []  # nothing compiled


def test_a_bad_setting_is_named(monkeypatch: pytest.MonkeyPatch, fresh: Path) -> None:
    monkeypatch.setenv("FMS_LLM_CPU_KERNELS", "yes")
    with pytest.raises(cpu_kernels.CPUKernelError, match="FMS_LLM_CPU_KERNELS must be"):
        cpu_kernels.available()


def test_without_a_working_compiler_training_falls_back_or_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, fresh: Path
) -> None:
    """`auto` keeps PyTorch's path and says why; `1` raises, naming the compiler's failure."""
    monkeypatch.setenv("CC", str(fresh / "no-such-compiler"))
    monkeypatch.setenv("FMS_LLM_CPU_KERNELS", "auto")
    assert not cpu_kernels.available()
    assert "no-such-compiler" in cpu_kernels.status()
    assert cpu_kernels.status().startswith("off: compiling cpu_kernels.c failed")
    loss, grads = _llama_step(1)  # trains all the same, on PyTorch's path
    assert math.isfinite(loss)
    assert all(torch.isfinite(g).all() for g in grads.values())
    monkeypatch.setenv("FMS_LLM_CPU_KERNELS", "1")
    with pytest.raises(cpu_kernels.CPUKernelError, match="no-such-compiler"):
        cpu_kernels.available()
    assert [p.name for p in fresh.iterdir()] == []  # no half-written library left behind


def test_built_once_into_the_cache_then_reused(
    kernels: None, monkeypatch: pytest.MonkeyPatch, fresh: Path
) -> None:
    assert cpu_kernels.available()
    (lib,) = fresh.iterdir()
    assert lib.name.startswith("cpu_kernels-")
    mtime = lib.stat().st_mtime_ns
    cpu_kernels._reset()
    assert cpu_kernels.available()
    assert cpu_kernels.status() == f"on: loaded {lib}"
    assert lib.stat().st_mtime_ns == mtime  # loaded, not compiled again
    assert list(fresh.iterdir()) == [lib]


def test_a_compiler_command_with_arguments_is_split_as_a_shell_would(
    kernels: None, monkeypatch: pytest.MonkeyPatch, fresh: Path
) -> None:
    """`CC="ccache gcc"` or `CC="gcc -v"`: the command and its arguments, not one file name."""
    compiler = cpu_kernels._compiler()  # the one that built the library for the fixture
    assert compiler is not None
    monkeypatch.setenv("CC", f"{shlex.join(compiler)} -DFMS_LLM_TEST=1")
    cpu_kernels._reset()
    assert cpu_kernels.available(), cpu_kernels.status()
