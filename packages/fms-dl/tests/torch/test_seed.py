"""Seeding and RNG capture/restore: every generator comes back to exactly the same position."""

from __future__ import annotations

import random

import numpy as np
import pytest
import safetensors.torch
import torch

from fms_dl.torch import (
    capture_rng_state,
    default_device,
    resolve_device,
    restore_rng_state,
    seed_everything,
)


def _draw() -> tuple[float, float, float, torch.Tensor]:
    return (
        random.random(),
        random.gauss(0, 1),
        float(np.random.standard_normal()),  # noqa: NPY002 - the global generator is under test
        torch.rand(3),
    )


def _equal(a, b) -> bool:
    return a[:3] == b[:3] and torch.equal(a[3], b[3])


def test_seed_everything_makes_every_generator_reproducible():
    seed_everything(123)
    first = _draw()
    seed_everything(123)
    assert _equal(first, _draw())
    seed_everything(124)
    assert not _equal(first, _draw())


def test_capture_restore_round_trips_through_safetensors():
    """Python's cached gauss, numpy's position and torch's state all survive the round trip."""
    seed_everything(7)
    random.gauss(0, 1)  # leaves a cached second gaussian in Python's state
    np.random.standard_normal()  # noqa: NPY002 - and one in numpy's
    state = capture_rng_state()
    assert all(v.dtype == torch.uint8 for v in state.values())
    assert {"python", "numpy", "torch"} <= set(state)
    blob = safetensors.torch.save(state)
    expected = _draw()
    _draw()  # move every generator on
    restore_rng_state(safetensors.torch.load(blob))
    assert _equal(expected, _draw())


def test_restore_rejects_bad_state():
    with pytest.raises(ValueError, match=r"missing keys \['numpy'\]"):
        restore_rng_state(
            {"python": torch.zeros(1, dtype=torch.uint8), "torch": torch.get_rng_state()}
        )
    state = capture_rng_state()
    state["torch"] = state["torch"].float()
    with pytest.raises(
        ValueError, match=r"state\['torch'\] must be a uint8 tensor, got torch.float32"
    ):
        restore_rng_state(state)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_cuda_states_without_a_gpu_warn_and_default_device_is_cpu():
    state = capture_rng_state()
    state["cuda:0"] = torch.zeros(16, dtype=torch.uint8)
    with pytest.warns(RuntimeWarning, match=r"no CUDA device for saved states \['cuda:0'\]"):
        restore_rng_state(state)
    assert default_device() == torch.device("cpu")


@pytest.mark.parametrize("device", [None, ""])
def test_resolve_device_unset_is_the_default_device(device):
    assert resolve_device(device) == default_device()


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_resolve_device_accepts_the_cpu_by_name_or_device(device):
    assert resolve_device(device) == torch.device("cpu")


@pytest.mark.parametrize("device", ["tpu", "gpu0", "cuda:x"])
def test_resolve_device_rejects_names_pytorch_does_not_parse(device):
    with pytest.raises(ValueError, match=rf"device '{device}' is not a device PyTorch knows"):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_resolve_device_rejects_cuda_where_there_is_none():
    with pytest.raises(ValueError, match=r"device 'cuda' is not available here .* use 'cpu'"):
        resolve_device("cuda")


def test_resolve_device_checks_the_index_against_the_device_count(monkeypatch):
    # stands in for a one-GPU machine: torch.device("cuda:k") itself never touches the driver
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match=r"'cuda:3' does not exist: this machine has 1 cuda"):
        resolve_device("cuda:3")


@pytest.mark.parametrize(("seed", "exc"), [(-1, ValueError), (2**32, ValueError), (1.5, TypeError)])
def test_seed_everything_rejects_bad_seeds(seed, exc):
    with pytest.raises(exc, match="seed"):
        seed_everything(seed)


def test_deterministic_flag_sets_torch_flags():
    before = torch.are_deterministic_algorithms_enabled()
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.deterministic = False
