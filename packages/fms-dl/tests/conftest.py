"""Shared fixtures for the fms-dl tests: numpy <-> torch conversion and closeness checks."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

os.environ["HF_HUB_OFFLINE"] = "1"

# The test shapes are tiny: BLAS worker threads only add contention on a shared 2-core machine
# (a 64x64 @ 64x128 product went from 50 us to 9 ms under load). One thread for both engines.
threadpool_limits(1)
torch.set_num_threads(1)


def _register_mutations() -> None:
    """Make `tests/_mutations.py` importable as `fms_dl_test_mutations` by the fuzz suites here
    and in `tests/torch/` (pytest's importlib mode puts no test directory on `sys.path`)."""
    spec = importlib.util.spec_from_file_location(
        "fms_dl_test_mutations", Path(__file__).with_name("_mutations.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fms_dl_test_mutations"] = module
    spec.loader.exec_module(module)


_register_mutations()


class Helpers:
    """Conversions between fms_dl and torch, and the parity tolerances used everywhere."""

    OUT_TOL = 1e-6  # float64 outputs
    GRAD_TOL = 1e-5  # float64 gradients

    @staticmethod
    def pair(arr: np.ndarray, requires_grad: bool = True) -> tuple[Any, Any]:
        """The same float64 data as an fms_dl Tensor and a torch tensor."""
        import torch

        import fms_dl

        a = np.array(arr, dtype=np.float64)
        return (
            fms_dl.Tensor(a.copy(), requires_grad=requires_grad),
            torch.tensor(a.copy(), requires_grad=requires_grad),
        )

    @staticmethod
    def close(ours: Any, theirs: Any, tol: float, what: str = "") -> None:
        a = ours.data if hasattr(ours, "_data") else np.asarray(ours)
        b = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
        assert a.shape == b.shape, f"{what}: shape {a.shape} != torch {b.shape}"
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=what)

    @classmethod
    def copy_module(cls, ours: Any, theirs: Any) -> None:
        """Load the torch module's state dict into ours (names and shapes must agree)."""
        ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})

    @classmethod
    def grads_close(cls, ours: Any, theirs: Any) -> None:
        """Compare every parameter gradient by name."""
        tp = dict(theirs.named_parameters())
        for name, p in ours.named_parameters():
            assert p.grad is not None, f"no grad for {name}"
            cls.close(p.grad, tp[name].grad, cls.GRAD_TOL, f"grad {name}")


@pytest.fixture(scope="session")
def h() -> type[Helpers]:
    return Helpers


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
