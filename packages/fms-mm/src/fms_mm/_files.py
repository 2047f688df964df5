"""Atomic model directories shared by the fms-mm models: `config.json` plus `model.safetensors`.

A model directory is written into a temporary sibling, each file fsynced, then renamed into place,
so a killed save leaves either the old model or the new one, never half of either.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from fms_llm.models.hf import _atomic_dir

__all__ = [
    "ModelFileError",
    "load_exact",
    "load_renamed",
    "read_model_dir",
    "renamed_state",
    "write_model_dir",
]


class ModelFileError(ValueError):
    """A model directory that is missing a file or holds the wrong weights."""


def write_model_dir(
    directory: str | Path, config: dict[str, Any], state: dict[str, Tensor]
) -> Path:
    """Write `config.json` and `model.safetensors` (float32, contiguous) atomically."""
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in state.items()}

    def write(tmp: Path) -> None:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})

    # fms-llm's atomic directory writer: temp sibling, fsync each file, rename into place
    return _atomic_dir(Path(directory), write)


def read_model_dir(directory: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """`config.json` as a dict and `model.safetensors` as tensors, or a `ModelFileError`."""
    directory = Path(directory)
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    for p in (config_path, weights_path):
        if not p.is_file():
            raise ModelFileError(f"{directory}: missing {p.name} (expected a save_pretrained dir)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ModelFileError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    return config, load_file(str(weights_path), device="cpu")


def load_exact(module: torch.nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load `state` into `module`, naming missing and unexpected keys in a `ModelFileError`."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelFileError(
            f"{source}: missing weights {missing[:8]}, unexpected {unexpected[:8]}"
        )
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise ModelFileError(
                f"{source}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}"
            )
    module.load_state_dict(state)


def renamed_state(module: torch.nn.Module, names: dict[str, str]) -> dict[str, Tensor]:
    """`module`'s parameters under other names (`names` maps ours to theirs), detached."""
    own = dict(module.named_parameters())
    return {theirs: own[ours].detach() for ours, theirs in names.items()}


def load_renamed(
    module: torch.nn.Module,
    state: dict[str, Tensor],
    names: dict[str, str],
    source: str,
    skip: Callable[[str], bool] = lambda _name: False,
) -> None:
    """Load `state`, keyed by the other names of `names` (ours to theirs), into `module`; keys
    for which `skip` is true are ignored, any other unknown key is a `ModelFileError`."""
    ours_of = {theirs: ours for ours, theirs in names.items()}
    mapped = {}
    for name, value in state.items():
        if skip(name):
            continue
        if name not in ours_of:
            raise ModelFileError(f"{source}: unexpected weight {name!r}")
        mapped[ours_of[name]] = value
    load_exact(module, mapped, source)
