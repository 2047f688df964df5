"""Shared fixtures for the `fms_dl.torch` tests (torch is the optional `torch` extra)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="fms_dl.torch needs the `torch` extra")


@pytest.fixture(autouse=True)
def _single_thread_and_restored_rng():
    """One intra-op thread (reproducible reductions) and no RNG leakage between tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)
    torch.set_num_threads(threads)
