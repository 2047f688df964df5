"""The pieces of the training recipes: per-image random shifts and the digits ViT config."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fms_mm.train import TrainSettings, digits_vit_config, random_shifts, train_vit


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """`x` (C, H, W) moved down `dy` and right `dx` pixels, zeros where nothing moved in."""
    _, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1))
    return padded[:, 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]


def test_random_shifts_move_each_image_by_its_own_offset_with_zero_fill() -> None:
    x = torch.rand(64, 2, 6, 5) + 0.5  # no zero pixel: every zero in the output is fill
    out = random_shifts(x, 1, torch.Generator().manual_seed(0))
    offsets = []
    for img, moved in zip(x, out, strict=True):
        match = [
            (dy, dx)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if torch.equal(moved, _shifted(img, dy, dx))
        ]
        assert len(match) == 1
        offsets.append(match[0])
    assert len(set(offsets)) == 9  # 64 draws cover all nine offsets: per image, not per batch
    assert torch.equal(random_shifts(x, 0, torch.Generator()), x)


def test_train_vit_holds_out_a_validation_split_and_checks_its_arguments() -> None:
    _, m = train_vit(
        TrainSettings(steps=2, batch_size=8),
        digits_vit_config(hidden_size=16, num_hidden_layers=1),
        validation=0.2,
    )
    assert 0.0 <= m["validation_accuracy"] <= 1.0
    with pytest.raises(ValueError, match=r"validation must be in \[0, 1\), got 1.0"):
        train_vit(TrainSettings(steps=1), validation=1.0)
    with pytest.raises(ValueError, match="max_shift must be an int >= 0, got -1"):
        train_vit(TrainSettings(steps=1), max_shift=-1)
