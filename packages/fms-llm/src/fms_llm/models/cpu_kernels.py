r"""Fused CPU kernels in C for RMSNorm, RoPE, SwiGLU and the softmax cross-entropy, compiled on
first use.

**Why.** On a CPU the three elementwise chains of a Llama block are limited by memory traffic:
each PyTorch operation reads and writes a whole `(tokens, d)` tensor, and eager PyTorch runs one
operation at a time. RMSNorm's forward is four passes (square, mean, scale, weight), RoPE's three
(multiply, roll, fused multiply-add), SwiGLU's gate two; their backward passes about twice as
many. PyTorch fuses LayerNorm on CPU, but none of these. Measured by ablation
(`benchmarks/bench_training_ablation.py`), they hold about 13% of a small Llama's training step,
which is the difference between 1.1x and 1.3x transformers' speed at the sizes of the `tiny`
and `small` presets (see the fms-llm benchmark page). The loss has the same problem: the
softmax of each chunk of logits in [linear_cross_entropy][fms_llm.models.fused.linear_cross_entropy]
(GPT-2's too) is a log-softmax, a gather, an exponential and a scatter, each over the chunk.

**What.** `cpu_kernels.c`, beside this module, computes each chain in one pass per direction,
a row (or an element) at a time while it is in the L1 cache:

- RMSNorm, $y = w \odot x\,r$ with $r = (\lVert x \rVert^2/d + \epsilon)^{-1/2}$, and its
  backward $\partial L/\partial x = r\,(g \odot w) - x\,\tfrac{r^3}{d} \sum_j g_j w_j x_j$,
  $\partial L/\partial w = \sum_\text{rows} g \odot x\,r$ (derived in
  [rms_norm][fms_llm.models.fused.rms_norm]);
- RoPE in the split-half layout, $y = x \odot \cos + \mathrm{rotate\_half}(x) \odot \sin$; its
  backward is the rotation by the opposite angle (a rotation's transpose is its inverse);
- SwiGLU's gate $h = \mathrm{silu}(a) \odot b$, with
  $\partial h/\partial a = b\,(\sigma(a) + \mathrm{silu}(a)(1 - \sigma(a)))$ and
  $\partial h/\partial b = \mathrm{silu}(a)$; the exponential is a short polynomial the compiler
  vectorises (libm's `expf` is a scalar call);
- the cross-entropy of a chunk of logits and its gradient $\mathrm{softmax}(z) - e_y$, written
  over the logits (the inner step of
  [linear_cross_entropy][fms_llm.models.fused.linear_cross_entropy]): three sweeps over each
  row while it is in cache, where PyTorch makes a log-softmax, a gather, an exponential and a
  scatter, each over the whole chunk.

**How it is built, and why loading it is safe.** The first call compiles the C file with the
system's C compiler (`$CC`, else `cc`, `gcc` or `clang`) into a shared library and loads it with
`ctypes`. Loading a shared library runs its code, so it comes only from a **private directory**:
`$FMS_LLM_KERNEL_DIR`, else `$XDG_CACHE_HOME/fms_llm/cpu_kernels`, else
`~/.cache/fms_llm/cpu_kernels`, never the data cache (`$FMS_LLM_CACHE`, which others may share).
It is created with mode 0700 and refused (nothing built or loaded there) when it is a symbolic
link, owned by another user, or open to the group or others. In it, a **manifest** named by a
hash of the source, the compiler, its flags and this machine's CPU (the library is built for this
CPU, `-march=native`) records the SHA-256 of the library, and the library's file is named by that
SHA-256. Before loading, the file is opened, its bytes are hashed and compared with the manifest,
and what is loaded is that open file (`/proc/self/fd/N`), so a library that was planted,
truncated or damaged is refused and rebuilt, never run. A build writes under a temporary name,
`fsync`s and renames (the library, then the manifest), so a crash never leaves a named
half-written file, and a library in use is never rewritten in place (which killed later runs
with SIGBUS); temporary files over an hour old, left by killed builds, are removed. No OpenMP
runtime and no fast-math: NaN and infinity propagate, and the process's floating-point mode is
untouched.

**When it is used.** `FMS_LLM_CPU_KERNELS` chooses: `auto` (the default) uses the kernels when
the library builds and quietly keeps PyTorch's path when it does not (no compiler, a refused or
unwritable directory, a failed build; the reason is in
[status][fms_llm.models.cpu_kernels.status]); `1` requires them (a build failure raises
[CPUKernelError][fms_llm.models.cpu_kernels.CPUKernelError]); `0` never uses them. Each call
also checks its tensors and takes PyTorch's path for anything else than float32, contiguous
(or made so), on the CPU: bf16 autocast, a GPU and float64 never reach C. The kernels run on
one thread (the matrix multiplies around them keep all of PyTorch's threads).

**Proof.** `tests/test_cpu_kernels.py` checks every kernel, forward and backward, against the
PyTorch path it replaces and against float64 autograd (float32, to 1e-5), on sizes that are
not multiples of the vector width, with NaN and infinity, and a whole Llama training step with
and without the kernels. The model parity tests against transformers run through them.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "CPUKernelError",
    "available",
    "rms_norm",
    "rope",
    "softmax_cross_entropy_",
    "status",
    "supports",
    "swiglu",
]

_log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("cpu_kernels.c")
_ENV = "FMS_LLM_CPU_KERNELS"
_DIR_ENV = "FMS_LLM_KERNEL_DIR"
_FLAGS = ["-O3", "-std=c11", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math",
          "-fopenmp-simd"]  # fmt: skip
_TIMEOUT_S = 120
_SUFFIX = ".dll" if sys.platform == "win32" else ".so"


class CPUKernelError(RuntimeError):
    """The C kernels were required (`FMS_LLM_CPU_KERNELS=1`) but could not be built or loaded."""


# --------------------------------------------------------------------------------------------------
# Building and loading the library
# --------------------------------------------------------------------------------------------------


class _State:
    lock = threading.Lock()
    lib: ctypes.CDLL | None = None
    tried = False
    reason = "not loaded yet"


def _mode() -> str:
    mode = os.environ.get(_ENV, "auto").strip().lower()
    if mode not in ("auto", "1", "0"):
        raise CPUKernelError(f"{_ENV} must be 'auto', '1' or '0', got {mode!r}")
    return mode


def _compiler() -> list[str] | None:
    """The compiler command: `$CC` (which may carry arguments, as in `ccache gcc`), else the
    first of `cc`, `gcc` and `clang` on the PATH."""
    if os.environ.get("CC", "").strip():
        return shlex.split(os.environ["CC"])
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


def _cpu_id() -> str:
    """What `-march=native` depends on: the CPU's model and feature flags where the OS says."""
    parts = [platform.system(), platform.machine(), platform.processor()]
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(("model name", "flags", "Features", "CPU part")):
                parts.append(line)
                if line.startswith(("flags", "Features")):
                    break
    return "\n".join(parts)


def _kernel_dir() -> Path:
    """The private directory of the compiled library: `$FMS_LLM_KERNEL_DIR`, else
    `$XDG_CACHE_HOME/fms_llm/cpu_kernels`, else `~/.cache/fms_llm/cpu_kernels`.

    Never the data cache (`$FMS_LLM_CACHE`, which several users or runs may share): whatever
    can write this directory chooses the native code that training runs.
    """
    if os.environ.get(_DIR_ENV, "").strip():
        return Path(os.environ[_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fms_llm" / "cpu_kernels"


class _Refused(Exception):
    """The directory or a file in it is not safe to load native code from (the reason)."""


def _private_dir(directory: Path) -> Path:
    """Create `directory` (mode 0700) if needed, and check that it is private: a real directory
    (not a symbolic link), owned by this user, with no access for the group or others.

    Raises:
        _Refused: it is not private (nothing in it is then built or loaded).
        OSError: it cannot be created.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise _Refused(f"{directory} is not a directory (a symbolic link or a file)")
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        raise _Refused(
            f"{directory} is owned by user {st.st_uid}, not by this user ({os.geteuid()})"
        )
    if os.name == "posix" and st.st_mode & 0o077:
        raise _Refused(
            f"{directory} has mode {stat.S_IMODE(st.st_mode):o}, expected 700 "
            f"(`chmod 700 {directory}`)"
        )
    return directory


def _clean_stale(directory: Path) -> None:
    """Remove temporary files that a killed build left behind (older than an hour)."""
    cutoff = time.time() - 3600
    for tmp in directory.glob(".tmp-*"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
        except OSError:
            continue  # another process removed or renamed it meanwhile


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _version(cc: list[str]) -> str:
    try:
        out = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout


def _build(cc: list[str], directory: Path, manifest: Path) -> str | None:
    """Compile the library into `directory` and record its hash in `manifest`; return None, or
    why it failed.

    The library is written under a temporary name, flushed to disk (`fsync`) and renamed to
    `cpu_kernels-<its SHA-256>.so`, a name that only its own bytes can have; then the manifest
    (the key's file, naming that hash) is written the same way. Each rename is atomic, and a
    file that is loaded is never written again, so a process that is using the library never
    sees it change under it (rewriting a mapped library in place is what kills with SIGBUS).
    """
    errors = []
    for arch in (["-march=native"], []):  # a compiler without -march=native gets the baseline
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=_SUFFIX, dir=directory)
        os.close(fd)
        cmd = [*cc, *_FLAGS, *arch, str(_SOURCE), "-o", tmp, "-lm"]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(f"{' '.join(cmd)}: {exc}")
            Path(tmp).unlink(missing_ok=True)
            continue
        if result.returncode != 0:
            Path(tmp).unlink(missing_ok=True)
            errors.append(
                f"{' '.join(cmd)} exited with {result.returncode}: {result.stderr[-500:]}"
            )
            continue
        with open(tmp, "rb+") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
            os.fsync(f.fileno())
        os.replace(tmp, directory / f"cpu_kernels-{digest}{_SUFFIX}")
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".sha256", dir=directory)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(digest + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, manifest)
        _fsync_dir(directory)
        return None
    return "; ".join(errors)


def _open_verified(directory: Path, manifest: Path) -> tuple[int, Path]:
    """Open the library that `manifest` names and check its bytes against the hash there.

    Returns the open file descriptor (what is loaded is the file that was checked, not whatever
    the path names a moment later) and the library's path.

    Raises:
        _Refused: no manifest, a library that is missing, not a regular file of this user, or
            whose content does not hash to the manifest's value (planted, truncated, damaged).
    """
    try:
        digest = manifest.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise _Refused(f"no readable manifest {manifest.name} ({exc})") from None
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise _Refused(f"the manifest {manifest.name} does not hold a SHA-256")
    path = directory / f"cpu_kernels-{digest}{_SUFFIX}"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise _Refused(f"cannot open {path.name} ({exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Refused(f"{path.name} is not a regular file")
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise _Refused(f"{path.name} is owned by user {st.st_uid}, not by this user")
        h = hashlib.sha256()
        with os.fdopen(os.dup(fd), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != digest:
            raise _Refused(f"{path.name}'s content does not match its SHA-256 (planted or damaged)")
    except BaseException:
        os.close(fd)
        raise
    return fd, path


def _dlopen(fd: int, path: Path) -> ctypes.CDLL:
    """Load the checked file: through its descriptor where the OS names one (`/proc/self/fd`)."""
    proc = Path(f"/proc/self/fd/{fd}")
    try:
        return ctypes.CDLL(str(proc) if proc.exists() else str(path))
    finally:
        os.close(fd)


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i, f = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    signatures = {
        "fms_rms_norm_forward": [p, p, p, p, i, i, f],
        "fms_rms_norm_backward": [p, p, p, p, p, p, i, i],
        "fms_rope": [p, p, p, p, i, i, i, i, i, f],
        "fms_swiglu_forward": [p, p, p, i],
        "fms_swiglu_backward": [p, p, p, p, p, i],
        "fms_softmax_cross_entropy": [p, p, p, i, i],
    }
    for name, args in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, None
    return lib


def _load() -> tuple[ctypes.CDLL | None, str]:
    """Build (once) and load the library; never raises: `(None, why)` where it cannot."""
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (set $CC, or install cc, gcc or clang)"
    source = _SOURCE.read_bytes()
    identity = [source, " ".join(cc).encode(), _version(cc).encode(), " ".join(_FLAGS).encode()]
    key = hashlib.sha256(b"\0".join([*identity, _cpu_id().encode()])).hexdigest()[:20]
    directory = _kernel_dir()
    try:
        _private_dir(directory)
    except _Refused as exc:
        return None, f"refused the kernel directory: {exc}"
    except OSError as exc:
        return None, f"cannot create the kernel directory {directory}: {exc}"
    manifest = directory / f"cpu_kernels-{key}.sha256"
    note = ""
    try:
        _clean_stale(directory)
        try:
            fd, path = _open_verified(directory, manifest)
        except _Refused as exc:
            if manifest.exists():  # a library was there, and it failed the check
                note = f" (refused the cached library: {exc}; rebuilt it)"
                _log.warning("fms_llm: %s", note.strip(" ()"))
            _log.info("fms_llm: compiling the CPU kernels into %s", directory)
            failure = _build(cc, directory, manifest)
            if failure is not None:
                return None, f"compiling {_SOURCE.name} failed: {failure}"
            fd, path = _open_verified(directory, manifest)
    except _Refused as exc:
        return None, f"the library just built failed its check: {exc}"
    except OSError as exc:  # an unwritable or full directory: PyTorch's path, and why
        return None, f"cannot build the library in {directory}: {exc}"
    try:
        return _bind(_dlopen(fd, path)), f"loaded {path}{note}"
    except (OSError, AttributeError) as exc:
        return None, f"loading {path} failed: {exc}"


def _library() -> ctypes.CDLL | None:
    """The loaded library, or None when the kernels are off or cannot be built here."""
    mode = _mode()
    if mode == "0":
        return None
    if not _State.tried:
        with _State.lock:
            if not _State.tried:
                _State.lib, _State.reason = _load()
                _State.tried = True
                if _State.lib is None:
                    _log.info("fms_llm: CPU kernels not used: %s", _State.reason)
    if _State.lib is None and mode == "1":
        raise CPUKernelError(f"{_ENV}=1 but the CPU kernels are not available: {_State.reason}")
    return _State.lib


def available() -> bool:
    """Whether the C kernels are in use in this process (building them on the first call)."""
    return _library() is not None


def status() -> str:
    """One line: whether the kernels are in use, and the library's path or why not."""
    try:
        lib = _library()
    except CPUKernelError as exc:
        return f"off: {exc}"
    if _mode() == "0":
        return f"off ({_ENV}=0)"
    return ("on: " if lib is not None else "off: ") + _State.reason


def _reset() -> None:
    """Forget the loaded library (for tests that change the environment)."""
    with _State.lock:
        _State.lib, _State.tried, _State.reason = None, False, "not loaded yet"


# --------------------------------------------------------------------------------------------------
# The operations
# --------------------------------------------------------------------------------------------------


def _ptr(t: Tensor) -> int:
    return int(t.data_ptr())


def _loaded() -> ctypes.CDLL:
    """The library a forward pass ran with (its backward pass uses the same one)."""
    if _State.lib is None:
        raise CPUKernelError(f"the CPU kernels are not loaded: {_State.reason}")
    return _State.lib


def _require() -> ctypes.CDLL:
    """The library for a direct call, built or loaded now, or an error saying why it is not."""
    lib = _library()
    if lib is None:
        raise CPUKernelError(f"the CPU kernels are not available: {status()}")
    return lib


def supports(*tensors: Tensor) -> bool:
    """Whether a training call on these tensors runs in C: a gradient is being recorded for one
    of them, every one is float32 on the CPU (non-contiguous ones are copied first), and the
    kernels are available.

    Inference keeps PyTorch's path, so that decoding ([fms_llm.models.decode][], PyTorch
    operations) stays bitwise equal to the modules. Never true while `torch.compile` traces,
    since it fuses these chains itself.
    """
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors):
        return False
    if torch.compiler.is_compiling():
        return False
    if not all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors):
        return False
    return _library() is not None


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        lib = _loaded()
        x, weight = x.contiguous(), weight.contiguous()
        d = x.shape[-1]
        n = x.numel() // d if d else 0
        y = torch.empty_like(x)
        rstd = torch.empty(x.shape[:-1], dtype=torch.float32)
        lib.fms_rms_norm_forward(_ptr(x), _ptr(weight), _ptr(y), _ptr(rstd), n, d, eps)
        ctx.save_for_backward(x, rstd, weight)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        lib = _loaded()
        x, rstd, weight = ctx.saved_tensors
        grad = grad.contiguous()
        d = x.shape[-1]
        n = x.numel() // d if d else 0
        grad_x = torch.empty_like(x)
        grad_w = torch.zeros_like(weight)
        lib.fms_rms_norm_backward(
            _ptr(grad), _ptr(x), _ptr(rstd), _ptr(weight), _ptr(grad_x), _ptr(grad_w), n, d
        )
        return (
            grad_x if ctx.needs_input_grad[0] else None,
            grad_w if ctx.needs_input_grad[1] else None,
            None,
        )


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm of float32 `x` `(..., d)` with gain `weight` `(d,)`, in C (see the module text).

    Call it only where [supports][fms_llm.models.cpu_kernels.supports]`(x, weight)` holds;
    [fms_llm.models.fused.rms_norm][] does, and otherwise computes the same in PyTorch.
    """
    if x.shape[-1:] != weight.shape:
        raise ValueError(f"rms_norm: x {tuple(x.shape)} does not end in {tuple(weight.shape)}")
    _require()
    out: Tensor = _RMSNorm.apply(x, weight, eps)
    return out


class _Rope(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, cos: Tensor, sin: Tensor, offset: int) -> Tensor:
        lib = _loaded()
        x = x.contiguous()
        y = torch.empty_like(x)
        b, s, h, d = x.shape
        lib.fms_rope(_ptr(x), _ptr(cos), _ptr(sin), _ptr(y), b, s, h, d, offset, 1.0)
        ctx.save_for_backward(cos, sin)
        ctx.offset = offset
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        lib = _loaded()
        cos, sin = ctx.saved_tensors
        grad = grad.contiguous()
        out = torch.empty_like(grad)
        b, s, h, d = grad.shape
        lib.fms_rope(_ptr(grad), _ptr(cos), _ptr(sin), _ptr(out), b, s, h, d, ctx.offset, -1.0)
        return out, None, None, None


def rope(x: Tensor, cos_table: Tensor, signed_sin_table: Tensor, offset: int) -> Tensor:
    r"""Rotate `x` `(batch, seq, heads, head_dim)` to positions `offset .. offset + seq - 1`.

    The split-half layout: $x \odot \cos + \mathrm{rotate\_half}(x) \odot \sin$, with the tables
    of [fms_llm.models.gpt][] (`cos_table` and `signed_sin_table`, $[-\sin_1, \sin_2]$, each
    `(positions, 1, head_dim)` or `(positions, head_dim)`). Only the rotation of `x` is
    differentiated (the tables are constants).

    Raises:
        ValueError: shapes that do not fit together, or positions beyond the tables.
    """
    if x.ndim != 4 or x.shape[-1] % 2:
        raise ValueError(
            f"rope: x must be (batch, seq, heads, even head_dim), got {tuple(x.shape)}"
        )
    d, seq = x.shape[-1], x.shape[1]
    cos, sin = cos_table.reshape(-1, d), signed_sin_table.reshape(-1, d)
    if cos.shape != sin.shape or cos_table.shape[-1] != d or offset < 0 or offset + seq > len(cos):
        raise ValueError(
            f"rope: tables {tuple(cos_table.shape)} and {tuple(signed_sin_table.shape)} do not "
            f"cover positions {offset}..{offset + seq - 1} of head_dim {d}"
        )
    _require()
    out: Tensor = _Rope.apply(x, cos.contiguous(), sin.contiguous(), offset)
    return out


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor) -> Tensor:
        lib = _loaded()
        a, b = a.contiguous(), b.contiguous()
        h = torch.empty_like(a)
        lib.fms_swiglu_forward(_ptr(a), _ptr(b), _ptr(h), a.numel())
        ctx.save_for_backward(a, b)
        return h

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor]:
        lib = _loaded()
        a, b = ctx.saved_tensors
        grad = grad.contiguous()
        grad_a, grad_b = torch.empty_like(a), torch.empty_like(b)
        lib.fms_swiglu_backward(_ptr(grad), _ptr(a), _ptr(b), _ptr(grad_a), _ptr(grad_b), a.numel())
        return grad_a, grad_b


def swiglu(gate: Tensor, up: Tensor) -> Tensor:
    r"""$\mathrm{silu}(\text{gate}) \odot \text{up}$ for two float32 tensors of the same shape, in C."""
    if gate.shape != up.shape:
        raise ValueError(f"swiglu: gate {tuple(gate.shape)} and up {tuple(up.shape)} differ")
    _require()
    out: Tensor = _SwiGLU.apply(gate, up)
    return out


def softmax_cross_entropy_(
    logits: Tensor, targets: Tensor, *, check_targets: bool = True
) -> Tensor:
    r"""Each row's cross-entropy, and its gradient written over the logits, in one C pass.

    For logits $z$ `(rows, vocab)` (float32, contiguous, on the CPU) and target ids `(rows,)`:
    returns $\ell_i = \log \sum_v e^{z_{iv}} - z_{i y_i}$ `(rows,)`, and overwrites `logits`
    with $\partial \ell_i / \partial z_i = \mathrm{softmax}(z_i) - e_{y_i}$. This is the inner
    step of [fms_llm.models.fused.linear_cross_entropy][], which calls it chunk by chunk.
    Not differentiable itself (the gradient is its output). `check_targets=False` skips the
    range check of the ids, for a caller that has made it already (an id outside the vocabulary
    would make the C loop read outside the row).

    Raises:
        ValueError: a target outside `[0, vocab)`, or tensors of the wrong kind.
    """
    lib = _require()
    if (
        logits.ndim != 2
        or logits.dtype != torch.float32
        or logits.device.type != "cpu"
        or not logits.is_contiguous()
    ):
        raise ValueError(
            "softmax_cross_entropy_: logits must be a contiguous float32 (rows, vocab) CPU "
            f"tensor, got {logits.dtype} {tuple(logits.shape)} on {logits.device}"
        )
    rows, vocab = logits.shape
    targets = targets.to(torch.int64).contiguous()
    if targets.shape != (rows,):
        raise ValueError(f"softmax_cross_entropy_: targets {tuple(targets.shape)}, not ({rows},)")
    if check_targets and rows and (int(targets.min()) < 0 or int(targets.max()) >= vocab):
        raise ValueError(f"softmax_cross_entropy_: a target is outside [0, {vocab})")
    loss = torch.empty(rows, dtype=torch.float32)
    lib.fms_softmax_cross_entropy(_ptr(logits), _ptr(targets), _ptr(loss), rows, vocab)
    return loss
