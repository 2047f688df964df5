"""Shared test settings: no network for Hugging Face, deterministic torch threads."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# The suite runs on a small shared machine: one intra-op thread avoids oversubscription stalls.
torch.set_num_threads(1)
