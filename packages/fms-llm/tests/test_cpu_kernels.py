"""The C kernels for RMSNorm, RoPE and SwiGLU against the PyTorch code they replace.

Every kernel, forward and backward, is compared with float64 autograd on the plain formula and
with the PyTorch path of fms-llm (float32, within 1e-5), on sizes that are not multiples of any
vector width; then a whole Llama training step with and without them. Building the library needs
a C compiler: where there is none, the tests that run C skip and say so (the model then trains on
PyTorch's path, which the rest of the suite covers), and the fallback tests still run.
"""

from __future__ import annotations

import hashlib
import math
import os
import shlex
import stat
import subprocess
import time
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
    """A clean slate: nothing loaded, an empty private kernel directory; restored afterwards."""
    directory = tmp_path / "kernels"
    monkeypatch.setenv("FMS_LLM_KERNEL_DIR", str(directory))
    cpu_kernels._reset()
    yield directory
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
    assert not fresh.exists()  # nothing compiled


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
    assert list(fresh.iterdir()) == []  # no half-written library left behind


def _built(directory: Path) -> tuple[Path, Path]:
    """The library and its manifest in the kernel directory."""
    (lib,) = directory.glob("cpu_kernels-*.so")
    (manifest,) = directory.glob("cpu_kernels-*.sha256")
    return lib, manifest


def test_built_once_into_the_private_directory_then_reused(
    kernels: None, monkeypatch: pytest.MonkeyPatch, fresh: Path
) -> None:
    """Mode 0700; the library named by its SHA-256, which the manifest records."""
    assert cpu_kernels.available()
    lib, manifest = _built(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    digest = hashlib.sha256(lib.read_bytes()).hexdigest()
    assert lib.name == f"cpu_kernels-{digest}.so"
    assert manifest.read_text().strip() == digest
    mtime = lib.stat().st_mtime_ns
    cpu_kernels._reset()
    assert cpu_kernels.available()
    assert cpu_kernels.status() == f"on: loaded {lib}"
    assert lib.stat().st_mtime_ns == mtime  # loaded, not compiled again
    assert sorted(fresh.iterdir()) == sorted([lib, manifest])


def test_never_in_the_shared_data_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`$FMS_LLM_CACHE` (tokenizers and shards, which others may share) holds no native code."""
    monkeypatch.delenv("FMS_LLM_KERNEL_DIR", raising=False)
    monkeypatch.setenv("FMS_LLM_CACHE", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cpu_kernels._kernel_dir() == tmp_path / "xdg" / "fms_llm" / "cpu_kernels"


def _planted_library(directory: Path, marker: Path) -> bytes:
    """A shared library whose constructor writes `marker` when it is loaded: foreign code."""
    compiler = cpu_kernels._compiler()
    assert compiler is not None
    source = directory.parent / "planted.c"
    source.write_text(
        "#include <stdio.h>\n"
        "__attribute__((constructor)) static void planted(void) {\n"
        f'  FILE *f = fopen("{marker}", "w"); if (f) {{ fputs("ran", f); fclose(f); }}\n'
        "}\n"
    )
    out = directory.parent / "planted.so"
    subprocess.run([*compiler, "-shared", "-fPIC", str(source), "-o", str(out)], check=True)
    return out.read_bytes()


def test_a_planted_library_is_refused_by_its_hash_and_never_runs(
    kernels: None, fresh: Path
) -> None:
    """A library swapped in under the cached name: its constructor does not run, it is
    rebuilt, and the status says so."""
    assert cpu_kernels.available()
    lib, _ = _built(fresh)
    marker = fresh.parent / "planted-ran"
    lib.write_bytes(_planted_library(fresh, marker))
    cpu_kernels._reset()
    assert cpu_kernels.available()
    assert not marker.exists()  # the foreign code never ran
    assert "refused the cached library" in cpu_kernels.status()
    assert "does not match its SHA-256" in cpu_kernels.status()
    rebuilt, manifest = _built(fresh)
    assert hashlib.sha256(rebuilt.read_bytes()).hexdigest() == manifest.read_text().strip()


def test_a_truncated_library_is_refused_and_rebuilt(kernels: None, fresh: Path) -> None:
    """A half-written library (a killed copy, a full disk) is not loaded (loading one killed
    the process with SIGBUS): refused by its hash, rebuilt, and the kernels work."""
    assert cpu_kernels.available()
    lib, _ = _built(fresh)
    data = lib.read_bytes()
    lib.write_bytes(data[: len(data) // 2])
    cpu_kernels._reset()
    assert cpu_kernels.available()
    assert "refused the cached library" in cpu_kernels.status()
    rebuilt, manifest = _built(fresh)
    assert hashlib.sha256(rebuilt.read_bytes()).hexdigest() == manifest.read_text().strip()
    x = _leaf(torch.randn(3, 8))
    cpu_kernels.rms_norm(x, _leaf(torch.ones(8)), 1e-6).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()


def test_a_library_without_its_manifest_is_not_loaded(kernels: None, fresh: Path) -> None:
    """A file dropped into the directory under a library's name is never what is loaded."""
    assert cpu_kernels.available()
    lib, manifest = _built(fresh)
    manifest.unlink()
    marker = fresh.parent / "planted-ran"
    lib.write_bytes(_planted_library(fresh, marker))
    cpu_kernels._reset()
    assert cpu_kernels.available()
    assert not marker.exists()


@pytest.mark.parametrize("mode", ["auto", "1"])
def test_a_directory_open_to_others_is_refused(
    monkeypatch: pytest.MonkeyPatch, fresh: Path, mode: str
) -> None:
    """Mode 0755 (or any access for group or others): nothing is built or loaded from it."""
    fresh.mkdir(mode=0o755)
    os.chmod(fresh, 0o755)
    monkeypatch.setenv("FMS_LLM_CPU_KERNELS", mode)
    if mode == "auto":
        assert not cpu_kernels.available()
        assert "has mode 755, expected 700" in cpu_kernels.status()
    else:
        with pytest.raises(cpu_kernels.CPUKernelError, match="has mode 755, expected 700"):
            cpu_kernels.available()
    assert list(fresh.iterdir()) == []


def test_a_directory_owned_by_another_user_is_refused(
    monkeypatch: pytest.MonkeyPatch, fresh: Path
) -> None:
    monkeypatch.setenv("FMS_LLM_CPU_KERNELS", "auto")
    fresh.mkdir(mode=0o700)
    monkeypatch.setattr(cpu_kernels.os, "geteuid", lambda: fresh.stat().st_uid + 1)
    assert not cpu_kernels.available()
    assert "is owned by user" in cpu_kernels.status()
    assert list(fresh.iterdir()) == []


def test_a_symbolic_link_as_the_directory_is_refused(
    monkeypatch: pytest.MonkeyPatch, fresh: Path
) -> None:
    monkeypatch.setenv("FMS_LLM_CPU_KERNELS", "auto")
    target = fresh.parent / "elsewhere"
    target.mkdir(mode=0o700)
    fresh.symlink_to(target)
    assert not cpu_kernels.available()
    assert "is not a directory" in cpu_kernels.status()


def test_an_unwritable_directory_falls_back_in_auto(
    monkeypatch: pytest.MonkeyPatch, fresh: Path
) -> None:
    """`auto` trains on PyTorch's path and `status()` says why (this crashed with a
    PermissionError before); `1` raises with the same reason."""
    fresh.mkdir(mode=0o700)

    def unwritable(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied", str(fresh))

    monkeypatch.setattr(cpu_kernels.tempfile, "mkstemp", unwritable)
    monkeypatch.setenv("FMS_LLM_CPU_KERNELS", "auto")
    assert not cpu_kernels.available()
    assert cpu_kernels.status().startswith("off: cannot build the library in")
    assert "Permission denied" in cpu_kernels.status()
    loss, _ = _llama_step(2)
    assert math.isfinite(loss)
    monkeypatch.setenv("FMS_LLM_CPU_KERNELS", "1")
    with pytest.raises(cpu_kernels.CPUKernelError, match="Permission denied"):
        cpu_kernels.available()


def test_a_directory_path_that_cannot_be_created_falls_back(
    monkeypatch: pytest.MonkeyPatch, fresh: Path
) -> None:
    monkeypatch.setenv("FMS_LLM_CPU_KERNELS", "auto")
    blocker = fresh.parent / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("FMS_LLM_KERNEL_DIR", str(blocker / "kernels"))
    assert not cpu_kernels.available()
    assert "cannot create the kernel directory" in cpu_kernels.status()


def test_the_library_is_flushed_to_disk_before_its_rename(
    kernels: None, monkeypatch: pytest.MonkeyPatch, fresh: Path
) -> None:
    """fsync of the file, then the rename: a crash cannot leave a named but empty library."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append(f"replace {Path(dst).suffix}")
        real_replace(src, dst)

    monkeypatch.setattr(cpu_kernels.os, "fsync", fsync)
    monkeypatch.setattr(cpu_kernels.os, "replace", replace)
    assert cpu_kernels.available()
    assert events[:4] == ["fsync", "replace .so", "fsync", "replace .sha256"]


def test_stale_temporary_files_are_cleaned(kernels: None, fresh: Path) -> None:
    """A killed build's temporary file (over an hour old) goes; a fresh one (a build under way
    in another process) stays."""
    fresh.mkdir(mode=0o700)
    old, new = fresh / ".tmp-old.so", fresh / ".tmp-new.so"
    old.write_bytes(b"half")
    new.write_bytes(b"half")
    hours_ago = time.time() - 7200
    os.utime(old, (hours_ago, hours_ago))
    assert cpu_kernels.available()
    assert not old.exists()
    assert new.exists()


def test_a_compiler_command_with_arguments_is_split_as_a_shell_would(
    kernels: None, monkeypatch: pytest.MonkeyPatch, fresh: Path
) -> None:
    """`CC="ccache gcc"` or `CC="gcc -v"`: the command and its arguments, not one file name."""
    compiler = cpu_kernels._compiler()  # the one that built the library for the fixture
    assert compiler is not None
    monkeypatch.setenv("CC", f"{shlex.join(compiler)} -DFMS_LLM_TEST=1")
    cpu_kernels._reset()
    assert cpu_kernels.available(), cpu_kernels.status()
