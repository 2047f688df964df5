"""Seeding, determinism and the capture/restore of every random number generator.

A training run touches four independent generators: Python's `random`, numpy's global
`np.random`, torch's CPU generator and one torch generator per CUDA device. Dropout draws from the
torch generator of the device it runs on; data pipelines often draw from numpy or Python. To
*reproduce* a run from its seed, all of them are seeded; to *resume* a run exactly, all of them
are saved in the checkpoint and restored, because after $k$ steps each generator sits at a
position that depends on everything drawn so far, and re-seeding would replay the numbers drawn
by step 0 instead of those due at step $k$.

[capture_rng_state][fms_dl.torch.seed.capture_rng_state] returns the states as `uint8` tensors so
that a checkpoint can store them in safetensors (never pickle).
"""

from __future__ import annotations

import json
import os
import random
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = [
    "capture_rng_state",
    "default_device",
    "resolve_device",
    "restore_rng_state",
    "seed_everything",
]


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python's `random`, numpy's global generator and torch (CPU and every CUDA device).

    Args:
        seed: An integer in $[0, 2^{32})$ (numpy's legacy generator accepts no more).
        deterministic: Also ask torch for deterministic kernels:
            `torch.use_deterministic_algorithms(True)`, `cudnn.deterministic = True`,
            `cudnn.benchmark = False` and `CUBLAS_WORKSPACE_CONFIG=:4096:8` (needed by cuBLAS for
            reproducible matmuls on CUDA >= 10.2). Ops without a deterministic kernel then raise.

    Raises:
        TypeError: `seed` is not an integer.
        ValueError: `seed` is outside $[0, 2^{32})$.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed_everything: seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed_everything: seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the legacy global generator is what we must seed
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def default_device() -> torch.device:
    """The device to train on: `cuda` when a CUDA device is available, else `cpu`."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device a run asked for, checked to exist here before any work starts.

    `None` or `""` means [default_device][fms_dl.torch.seed.default_device]. Otherwise the name
    must be one PyTorch parses (`"cpu"`, `"cuda"`, `"cuda:1"`, `"mps"`, ...) and, for an
    accelerator, one that this PyTorch build and machine actually have: without this check a
    typo or a missing GPU surfaces later as a driver traceback, possibly after a corpus has been
    tokenised or a checkpoint half-read.

    Raises:
        ValueError: the name is not a device, or the device is not available here.
    """
    if device is None or device == "":
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device {device!r} is not a device PyTorch knows (expected e.g. 'cpu', 'cuda', "
            f"'cuda:1' or 'mps')"
        ) from exc
    if dev.type == "cpu":
        return dev
    backend = getattr(torch, dev.type, None)  # torch.cuda, torch.mps, torch.xpu, ...
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise ValueError(
            f"device {device!r} is not available here (torch {torch.__version__}); "
            f"use 'cpu', or leave the device unset to pick {default_device().type}"
        )
    count = getattr(backend, "device_count", None)
    if dev.index is not None and count is not None and dev.index >= count():
        raise ValueError(
            f"device {device!r} does not exist: this machine has {count()} {dev.type} device(s)"
        )
    return dev


def _json_bytes(obj: Any) -> torch.Tensor:
    return torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8).clone()


def _from_json_bytes(t: torch.Tensor) -> Any:
    return json.loads(bytes(t.cpu().numpy().tobytes()).decode())


def capture_rng_state() -> dict[str, torch.Tensor]:
    """Snapshot every generator as a flat `{name: uint8 tensor}` mapping.

    Keys: `python` (the Mersenne Twister state as JSON bytes), `numpy` (numpy's global
    `MT19937` state as JSON bytes), `torch` (`torch.get_rng_state()`), and `cuda:<i>` for each
    CUDA device when CUDA is initialised or available.

    Returns:
        A dict that [restore_rng_state][fms_dl.torch.seed.restore_rng_state] accepts and that
        safetensors can store as is.
    """
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)  # noqa: NPY002
    assert isinstance(np_state, dict)
    np_json = {
        "bit_generator": np_state["bit_generator"],
        "key": np_state["state"]["key"].tolist(),
        "pos": int(np_state["state"]["pos"]),
        "has_gauss": int(np_state["has_gauss"]),
        "gauss": float(np_state["gauss"]),
    }
    state = {
        "python": _json_bytes([version, list(internal), gauss]),
        "numpy": _json_bytes(np_json),
        "torch": torch.get_rng_state().clone(),
    }
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda:{i}"] = s.cpu().clone()
    return state


def _parsed_rng_state(state: Mapping[str, torch.Tensor]) -> tuple[Any, dict[str, Any]]:
    """Decode and check every generator state *without touching any generator*.

    Each state is tried on a scratch generator of its kind (`random.Random`,
    `np.random.RandomState`, `torch.Generator`), so that a state the real one would refuse is
    found before any of them changes: restoring is then all or nothing.

    Raises:
        ValueError: a required key is missing, a value is not a uint8 tensor, or a state is not
            one its generator accepts.
    """
    missing = [k for k in ("python", "numpy", "torch") if k not in state]
    if missing:
        raise ValueError(
            f"restore_rng_state: state is missing keys {missing}; got keys {sorted(state)}"
        )
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8:
            got = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"restore_rng_state: state[{key!r}] must be a uint8 tensor, got {got}")
        if key.startswith("cuda:") and not key[5:].isdigit():
            raise ValueError(f"restore_rng_state: {key!r} is not a CUDA state key ('cuda:<i>')")
    try:
        version, internal, gauss = _from_json_bytes(state["python"])
        py_state = (version, tuple(internal), gauss)
        random.Random().setstate(py_state)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise ValueError(
            f"restore_rng_state: state['python'] is not a random state ({exc})"
        ) from None
    try:
        np_json = _from_json_bytes(state["numpy"])
        np_state = {
            "bit_generator": np_json["bit_generator"],
            "state": {"key": np.asarray(np_json["key"], dtype=np.uint32), "pos": np_json["pos"]},
            "has_gauss": np_json["has_gauss"],
            "gauss": np_json["gauss"],
        }
        np.random.RandomState().set_state(np_state)
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
        raise ValueError(
            f"restore_rng_state: state['numpy'] is not a numpy state ({exc!r})"
        ) from None
    try:
        torch.Generator().set_state(state["torch"].cpu())
    except RuntimeError as exc:
        raise ValueError(
            f"restore_rng_state: state['torch'] is not a torch CPU state ({exc})"
        ) from None
    return py_state, np_state


def restore_rng_state(state: Mapping[str, torch.Tensor]) -> None:
    """Put every generator back where [capture_rng_state][fms_dl.torch.seed.capture_rng_state] found it.

    Every state is decoded and checked before any generator is set, so a bad state raises and
    leaves all of them as they were. CUDA states are restored for the devices present; states
    saved on a machine with more (or any) CUDA devices than this one are skipped with a
    `RuntimeWarning`, since the run cannot be bitwise identical there anyway.

    Args:
        state: The mapping returned by `capture_rng_state` (possibly after a safetensors round trip).

    Raises:
        ValueError: a required key (`python`, `numpy`, `torch`) is missing, a value is not a
            `uint8` tensor, or a state is not one its generator accepts.
    """
    py_state, np_state = _parsed_rng_state(state)
    random.setstate(py_state)
    np.random.set_state(np_state)  # noqa: NPY002
    torch.set_rng_state(state["torch"].cpu())
    cuda_keys = sorted((k for k in state if k.startswith("cuda:")), key=lambda k: int(k[5:]))
    n_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    skipped = []
    for key in cuda_keys:
        index = int(key[5:])
        if index < n_devices:
            torch.cuda.set_rng_state(state[key].cpu(), device=index)
        else:
            skipped.append(key)
    if skipped:
        warnings.warn(
            f"restore_rng_state: no CUDA device for saved states {skipped} "
            f"({n_devices} device(s) here); they were not restored",
            RuntimeWarning,
            stacklevel=2,
        )
