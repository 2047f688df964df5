"""SIGKILL a training run at a random step, resume it, and get bitwise the same weights (CPU).

The run (see `_kill_run.py`): MLP with dropout, AdamW, cosine schedule with warm-up, gradient
accumulation, clipping, a data augmentation that draws from Python's and numpy's global RNGs,
and a checkpoint after every step. Tolerance: none, `torch.equal` on every tensor.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch

SCRIPT = Path(__file__).with_name("_kill_run.py")
MAX_STEPS = 16
_CHOICE = random.Random(20261129)  # the "random" kill steps are a seeded choice
KILLS = [
    ("after_step", _CHOICE.randrange(2, MAX_STEPS)),
    ("mid_save", _CHOICE.randrange(2, MAX_STEPS)),
]


def _run(ckpt: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(ckpt), str(out), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    tmp = tmp_path_factory.mktemp("straight")
    proc = _run(tmp / "ckpt", tmp / "final.safetensors")
    assert proc.returncode == 0, proc.stderr
    return safetensors.torch.load_file(tmp / "final.safetensors")


@pytest.mark.parametrize(("mode", "kill_at"), KILLS)
def test_sigkill_then_resume_is_bitwise_equal_to_uninterrupted(
    tmp_path, uninterrupted, mode, kill_at
):
    ckpt, out = tmp_path / "ckpt", tmp_path / "final.safetensors"
    killed = _run(ckpt, out, "--kill-at", str(kill_at), "--kill-mode", mode)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not out.exists()
    if mode == "mid_save":  # the half-written checkpoint is a hidden temporary, never a step dir
        assert any(p.name.startswith(".tmp-") for p in ckpt.iterdir())
    assert not (ckpt / f"step-{kill_at:08d}").exists()
    assert (ckpt / "latest").read_text().strip() == f"step-{kill_at - 1:08d}"

    resumed = _run(ckpt, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    with safetensors.safe_open(out, "pt") as f:
        assert f.metadata()["resumed_from"] == f"step-{kill_at - 1:08d}"
    final = safetensors.torch.load_file(out)
    assert final.keys() == uninterrupted.keys()
    for key in final:
        assert torch.equal(final[key], uninterrupted[key]), key
    assert (ckpt / "latest").read_text().strip() == f"step-{MAX_STEPS:08d}"
    assert not any(p.name.startswith(".tmp-") for p in ckpt.iterdir())  # stale temporaries cleaned


def test_resume_from_step_zero_differs_so_the_test_can_fail(tmp_path, uninterrupted):
    """Control: resuming with the RNG *not* restored gives different weights (dropout, jitter)."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "final.safetensors"
    assert _run(ckpt, out, "--kill-at", "5").returncode == -signal.SIGKILL
    from fms_dl.torch import checkpoint as ck

    (ck.latest_checkpoint(ckpt) / "rng.safetensors").unlink()  # lose the RNG state
    resumed = _run(ckpt, out, "--resume")
    assert resumed.returncode != 0
    assert "rng.safetensors: file is missing" in resumed.stderr
