"""CLIP against transformers' CLIPModel from random configs, the loss, the temperature and
zero-shot classification."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fms_mm.clip import (
    CLIP,
    MAX_LOGIT_SCALE,
    CLIPConfig,
    CLIPConfigError,
    CLIPTextConfig,
    CLIPVisionConfig,
    TextInputError,
    clip_loss,
    zero_shot_classifier,
)
from fms_mm.vision import ImageInputError

TEXT = {
    "vocab_size": 40,
    "max_position_embeddings": 12,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "eos_token_id": 3,
    "bos_token_id": 1,
    "pad_token_id": 0,
}
VISION = {
    "image_size": 16,
    "patch_size": 4,
    "num_channels": 3,
    "hidden_size": 24,
    "intermediate_size": 40,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}


def _config() -> CLIPConfig:
    return CLIPConfig(CLIPTextConfig(**TEXT), CLIPVisionConfig(**VISION), projection_dim=16)


def _batch(eos: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three images and three right-padded captions of different lengths (eos inside each)."""
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(3, 3, 16, 16, generator=g)
    ids = torch.zeros(3, 9, dtype=torch.long)
    mask = torch.zeros(3, 9, dtype=torch.long)
    for row, length in enumerate((9, 5, 3)):
        ids[row, 0] = 1
        ids[row, 1 : length - 1] = torch.randint(4, 40, (length - 2,), generator=g)
        ids[row, length - 1] = eos
        mask[row, :length] = 1
    return pixels, ids, mask


def test_clip_equals_hf_clipmodel_logits_and_loss_loaded_both_ways_1e5(tmp_path: Path) -> None:
    """A random transformers CLIPModel loaded into ours (through its save_pretrained directory),
    and ours loaded into transformers: logits_per_image, logits_per_text, both unit embeddings
    and the contrastive loss agree within 1e-5 (float32), padded captions included."""
    from transformers import CLIPConfig as HFConfig
    from transformers import CLIPModel

    torch.manual_seed(0)
    hf = CLIPModel(HFConfig(text_config=TEXT, vision_config=VISION, projection_dim=16)).eval()
    with torch.no_grad():  # a temperature away from its initial value, so it must be loaded
        hf.logit_scale.fill_(1.7)
    hf.save_pretrained(tmp_path / "hf")
    ours = CLIP.from_pretrained(tmp_path / "hf").eval()
    pixels, ids, mask = _batch()

    def check(a: CLIP, b: CLIPModel) -> None:
        with torch.no_grad():
            mine = a(pixels, ids, mask, return_loss=True)
            ref = b(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True)
        for name in ("logits_per_image", "logits_per_text", "image_embeds", "text_embeds"):
            torch.testing.assert_close(getattr(mine, name), getattr(ref, name), atol=1e-5, rtol=0)
        torch.testing.assert_close(mine.loss, ref.loss, atol=1e-5, rtol=0)

    check(ours, hf)
    torch.manual_seed(7)
    mine = CLIP(_config()).eval()
    mine.save_pretrained(tmp_path / "ours")
    check(mine, CLIPModel.from_pretrained(tmp_path / "ours").eval())


def test_legacy_eos_token_id_2_reads_out_at_the_largest_id_as_transformers() -> None:
    from transformers import CLIPConfig as HFConfig
    from transformers import CLIPModel

    text = {**TEXT, "eos_token_id": 2}
    torch.manual_seed(0)
    hf = CLIPModel(HFConfig(text_config=text, vision_config=VISION, projection_dim=16)).eval()
    ours = CLIP(CLIPConfig(CLIPTextConfig(**text), CLIPVisionConfig(**VISION), 16)).eval()
    ours.load_hf_state_dict(hf.state_dict())
    ids = torch.tensor([[1, 5, 39, 7], [1, 38, 6, 0]])
    with torch.no_grad():
        torch.testing.assert_close(
            ours.text_features(ids),
            hf.get_text_features(input_ids=ids).pooler_output,
            atol=1e-5,
            rtol=0,
        )


def test_clip_loss_is_the_mean_of_both_cross_entropies_and_ln_b_when_uninformative() -> None:
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(2))
    target = torch.arange(5)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    torch.testing.assert_close(clip_loss(logits), expected)
    torch.testing.assert_close(clip_loss(torch.zeros(4, 4)), torch.tensor(4.0).log())
    with pytest.raises(ValueError, match="square"):
        clip_loss(torch.zeros(3, 4))


def test_temperature_is_learned_and_clamped() -> None:
    torch.manual_seed(0)
    clip = CLIP(_config())
    pixels, ids, mask = _batch()
    clip(pixels, ids, mask, return_loss=True).loss.backward()  # type: ignore[union-attr]
    assert clip.logit_scale.grad is not None
    assert clip.logit_scale.grad.abs() > 0
    with torch.no_grad():
        clip.logit_scale.fill_(9.0)
    clip.clamp_logit_scale()
    assert float(clip.logit_scale.detach()) == pytest.approx(MAX_LOGIT_SCALE)


def test_zero_shot_classifier_picks_the_caption_most_similar_to_each_image() -> None:
    torch.manual_seed(0)
    clip = CLIP(_config()).eval()
    pixels, ids, mask = _batch()
    prompts = [ids[k : k + 1, : int(mask[k].sum())] for k in range(3)]
    classifier = zero_shot_classifier(clip, prompts)
    with torch.no_grad():
        sims = clip(pixels, ids, mask).logits_per_image
        torch.testing.assert_close(classifier(pixels), sims, atol=1e-5, rtol=0)
    assert torch.equal(classifier.predict(pixels), sims.argmax(-1))
    two = zero_shot_classifier(clip, [ids[:2], ids[2:]], [mask[:2], mask[2:]])
    v = F.normalize(clip.text_features(ids[:2], mask[:2]), dim=-1).mean(0)
    torch.testing.assert_close(two.class_embeds[0], F.normalize(v, dim=-1), atol=1e-6, rtol=0)


def test_bad_input_is_named() -> None:
    clip = CLIP(_config())
    pixels, ids, mask = _batch()
    with pytest.raises(TextInputError, match="longer than the context"):
        clip(pixels, torch.full((3, 13), 3), None)
    with pytest.raises(TextInputError, match="no end-of-text token"):
        clip(pixels, torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(TextInputError, match=r"token ids must be in \[0, 40\)"):
        clip(pixels, torch.full((3, 4), 41))
    with pytest.raises(TextInputError, match="attention_mask has shape"):
        clip(pixels, ids, mask[:, :4])
    with pytest.raises(ImageInputError, match="1 channels, expected 3"):
        clip(pixels[:, :1], ids, mask)
    with pytest.raises(CLIPConfigError, match="patch_size=5"):
        CLIPVisionConfig(image_size=16, patch_size=5)
    with pytest.raises(CLIPConfigError, match="hidden_act"):
        CLIPTextConfig(hidden_act="relu")  # type: ignore[arg-type]
