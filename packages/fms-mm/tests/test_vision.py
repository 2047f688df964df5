"""ViT against transformers' ViTModel / ViTForImageClassification from random configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fms_mm.vision import ImageInputError, ViT, ViTConfig, ViTConfigError

CFG = {
    "image_size": 16,
    "patch_size": 4,
    "num_channels": 3,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 48,
}


def _hf_vit(labels: int = 0):  # type: ignore[no-untyped-def]
    from transformers import ViTConfig as HFViTConfig
    from transformers import ViTForImageClassification, ViTModel

    hf_cfg = HFViTConfig(**CFG, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    if labels:
        hf_cfg.num_labels = labels
        return ViTForImageClassification(hf_cfg).eval()
    return ViTModel(hf_cfg, add_pooling_layer=False).eval()


def test_vit_equals_hf_vitmodel_loaded_both_ways_1e5(tmp_path: Path) -> None:
    """Random HF ViTModel -> our ViT (from its save_pretrained dir), and ours -> HF: the last
    hidden states agree within 1e-5 (float32)."""
    from transformers import ViTModel

    hf = _hf_vit()
    hf.save_pretrained(tmp_path / "hf")
    ours = ViT.from_pretrained(tmp_path / "hf").eval()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(pixel_values=x).last_hidden_state, atol=1e-5, rtol=0)
    torch.manual_seed(5)
    mine = ViT(ViTConfig(**CFG)).eval()
    mine.save_pretrained(tmp_path / "ours")
    back = ViTModel.from_pretrained(tmp_path / "ours", add_pooling_layer=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            back(pixel_values=x).last_hidden_state, mine(x), atol=1e-5, rtol=0
        )


def test_vit_classifier_equals_hf_vit_for_image_classification_1e5(tmp_path: Path) -> None:
    from transformers import ViTForImageClassification

    hf = _hf_vit(labels=5)
    hf.save_pretrained(tmp_path / "hf")
    ours = ViT.from_pretrained(tmp_path / "hf").eval()
    assert ours.config.num_labels == 5
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours.logits(x), hf(pixel_values=x).logits, atol=1e-5, rtol=0)
    ours.save_pretrained(tmp_path / "ours")
    back = ViTForImageClassification.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(pixel_values=x).logits, ours.logits(x), atol=1e-5, rtol=0)


def test_attention_maps_are_distributions_over_tokens() -> None:
    vit = ViT(ViTConfig(**CFG)).eval()
    maps = vit.attention_maps(torch.randn(2, 3, 16, 16))
    assert len(maps) == 2
    assert maps[0].shape == (2, 4, 17, 17)
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(2, 4, 17), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((2, 1, 16, 16), "1 channels, expected 3"),
        ((2, 3, 12, 16), r"\(12, 16\) pixels"),
        ((3, 16, 16), "must be \\(batch"),
    ],
)
def test_bad_images_are_named(shape: tuple[int, ...], message: str) -> None:
    vit = ViT(ViTConfig(**CFG))
    with pytest.raises(ImageInputError, match=message):
        vit(torch.zeros(shape))


def test_bad_config_is_named() -> None:
    with pytest.raises(ViTConfigError, match="patch_size=5 must divide image_size=16"):
        ViTConfig(image_size=16, patch_size=5)
    with pytest.raises(ViTConfigError, match="num_attention_heads=5"):
        ViTConfig(hidden_size=32, num_attention_heads=5)
