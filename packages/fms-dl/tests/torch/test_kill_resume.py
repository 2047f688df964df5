"""SIGKILL a training run at a random step, resume it, and get bitwise the same weights (CPU).

The run (see `_kill_run.py`): MLP with dropout, AdamW, cosine schedule with warm-up, gradient
accumulation, clipping, a data augmentation that draws from Python's and numpy's global RNGs,
and a checkpoint after every step. Tolerance: none, `torch.equal` on every tensor.

Each run is a forked child process (as DataLoader workers are) executing `_kill_run.py` as
`__main__`: it inherits the already-imported torch, so a run costs about a second instead of
the several seconds a fresh interpreter spends importing torch.
"""

from __future__ import annotations

import os
import random
import runpy
import signal
import sys
import time
import traceback
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")

SCRIPT = Path(__file__).with_name("_kill_run.py")
MAX_STEPS = 16
_CHOICE = random.Random(20261129)  # the "random" kill steps are a seeded choice
KILLS = [
    ("after_step", _CHOICE.randrange(2, MAX_STEPS)),
    ("mid_save", _CHOICE.randrange(2, MAX_STEPS)),
]


def _fork(*args: str) -> int:
    """Start the script in a forked child and return its pid."""
    # Constructing an optimiser imports torch._dynamo lazily (seconds): do it once, here.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            sys.argv = [str(SCRIPT), *args]
            runpy.run_path(str(SCRIPT), run_name="__main__")
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _wait(pid: int) -> int:
    """The child's exit code, or -signal if a signal killed it."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _run(*args: str) -> int:
    return _wait(_fork(*args))


def _weights(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    with safetensors.safe_open(path, "pt") as f:
        resumed_from = f.metadata()["resumed_from"]
    return safetensors.torch.load_file(path), resumed_from


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    tmp = tmp_path_factory.mktemp("straight")
    assert _run(str(tmp / "ckpt"), str(tmp / "final.safetensors")) == 0
    weights, resumed_from = _weights(tmp / "final.safetensors")
    assert resumed_from == "none"
    return weights


@pytest.mark.parametrize(("mode", "kill_at"), KILLS)
def test_sigkill_then_resume_is_bitwise_equal_to_uninterrupted(
    tmp_path, uninterrupted, mode, kill_at
):
    ckpt, out = tmp_path / "ckpt", tmp_path / "final.safetensors"
    assert _run(str(ckpt), str(out), "--kill-at", str(kill_at), "--kill-mode", mode) == (
        -signal.SIGKILL
    )
    assert not out.exists()
    if mode == "mid_save":  # the half-written checkpoint is a hidden temporary, never a step dir
        assert any(p.name.startswith(".tmp-") for p in ckpt.iterdir())
    assert not (ckpt / f"step-{kill_at:08d}").exists()
    assert (ckpt / "latest").read_text().strip() == f"step-{kill_at - 1:08d}"

    assert _run(str(ckpt), str(out), "--resume") == 0
    final, resumed_from = _weights(out)
    assert resumed_from == f"step-{kill_at - 1:08d}"
    assert _equal(final, uninterrupted)
    assert (ckpt / "latest").read_text().strip() == f"step-{MAX_STEPS:08d}"
    assert not any(p.name.startswith(".tmp-") for p in ckpt.iterdir())  # temporaries cleaned


def test_sigkill_from_outside_at_an_arbitrary_instant(tmp_path, uninterrupted):
    """The parent kills the child a seeded random delay after it reports step 3: the kill lands
    wherever the child happens to be (forward, backward, optimiser step, a checkpoint write).
    If the child was too quick and finished, the resume is a no-op and must still match."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "final.safetensors"
    read_fd, write_fd = os.pipe()
    pid = _fork(str(ckpt), str(out), "--report-fd", str(write_fd))
    os.close(write_fd)
    delay = random.Random(7).uniform(0.0, 0.05)
    buffer = b""
    while b"\n3\n" not in b"\n" + buffer:  # wait until step 3 is done
        chunk = os.read(read_fd, 64)
        if not chunk:
            break
        buffer += chunk
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    status = _wait(pid)
    os.close(read_fd)
    assert status in (-signal.SIGKILL, 0)
    assert _run(str(ckpt), str(out), "--resume") == 0
    final, _ = _weights(out)
    assert _equal(final, uninterrupted)


def test_resume_without_restoring_rng_differs(tmp_path, uninterrupted):
    """Control (the test above can fail): skip the RNG restore and the weights differ."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "final.safetensors"
    assert _run(str(ckpt), str(out), "--kill-at", "5") == -signal.SIGKILL
    assert _run(str(ckpt), str(out), "--resume", "--no-rng") == 0
    final, resumed_from = _weights(out)
    assert resumed_from == "step-00000004"
    assert not _equal(final, uninterrupted)
