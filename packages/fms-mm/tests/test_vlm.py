"""The vision-language model: the decoder unchanged, frozen and LoRA training, files, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fms_llm.finetune.lora import LoRAConfig
from fms_llm.models import GPT, GPTConfig, Llama, LlamaConfig
from fms_mm.vision import ViT, ViTConfig
from fms_mm.vlm import VLM, VLMConfig, VLMInputError

VIT = ViTConfig(
    image_size=8,
    patch_size=4,
    num_channels=3,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
)


def _vlm(family: str = "gpt", **kw: object) -> VLM:
    torch.manual_seed(0)
    cfg = {"vocab_size": 23, "n_layers": 2, "d_model": 24, "n_heads": 2, "max_seq_len": 12}
    decoder = GPT(GPTConfig(**cfg)) if family == "gpt" else Llama(LlamaConfig(**cfg))
    return VLM(ViT(VIT), decoder.eval(), VLMConfig(**kw)).eval()  # type: ignore[arg-type]


@pytest.mark.parametrize("family", ["gpt", "llama"])
def test_without_image_tokens_the_vlm_is_the_decoder(family: str) -> None:
    """Image tokens removed: the logits are the decoder's own, exactly; with them, the text
    positions are the decoder's forward on [projected image; token rows]."""
    vlm = _vlm(family)
    ids = torch.randint(0, 23, (2, 5))
    pixels = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(vlm(None, ids), vlm.decoder(ids), atol=0, rtol=0)
        embeds = torch.cat([vlm.image_embeds(pixels), vlm.decoder.tok_emb(ids)], 1)
        expected = vlm.decoder(inputs_embeds=embeds)[:, vlm.n_image_tokens :]
        torch.testing.assert_close(vlm(pixels, ids), expected, atol=0, rtol=0)
        assert not torch.allclose(vlm(pixels, ids), vlm.decoder(ids))  # the image matters


def test_frozen_decoder_training_moves_only_projector_and_vision() -> None:
    vlm = _vlm()
    vlm.train()
    vlm.freeze_decoder()
    before = {k: v.clone() for k, v in vlm.decoder.state_dict().items()}
    opt = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=1e-2)
    pixels, ids = torch.rand(4, 3, 8, 8), torch.randint(0, 23, (4, 6))
    targets = torch.roll(ids, -1, 1)
    targets[:, -1] = -100
    losses = []
    for _ in range(15):
        loss = vlm.loss(pixels, ids, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    for k, v in vlm.decoder.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=0, rtol=0, msg=k)


def test_lora_trains_adapters_and_saved_model_reloads_merged(tmp_path: Path) -> None:
    vlm = _vlm()
    wrapped = vlm.add_lora(LoRAConfig(r=2, alpha=4.0, targets=("q_proj", "v_proj")))
    assert len(wrapped) == 4
    trainable = {n for n, p in vlm.decoder.named_parameters() if p.requires_grad}
    assert trainable
    assert all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    pixels, ids = torch.rand(2, 3, 8, 8), torch.randint(0, 23, (2, 5))
    with torch.no_grad():
        for n, p in vlm.decoder.named_parameters():
            if n.endswith("lora_B"):
                p.normal_()
        expected = vlm(pixels, ids)
    vlm.save_pretrained(tmp_path / "vlm")
    back = VLM.from_pretrained(tmp_path / "vlm").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(pixels, ids), expected, atol=1e-5, rtol=0)


def test_save_and_load_round_trip_tied_decoder(tmp_path: Path) -> None:
    vlm = _vlm(projector="linear", image_tokens="all")
    vlm.save_pretrained(tmp_path / "vlm")
    back = VLM.from_pretrained(tmp_path / "vlm").eval()
    assert back.decoder.lm_head.weight is back.decoder.tok_emb.weight
    pixels, ids = torch.rand(2, 3, 8, 8), torch.randint(0, 23, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(back(pixels, ids), vlm(pixels, ids), atol=0, rtol=0)


def test_generate_is_greedy_decoding_of_the_full_forward() -> None:
    vlm = _vlm()
    pixels, prompt = torch.rand(2, 3, 8, 8), torch.tensor([[1, 4], [1, 7]])
    out = vlm.generate(pixels, prompt, max_new_tokens=4)
    seq = prompt
    for _ in range(4):  # the same tokens without a cache
        with torch.no_grad():
            nxt = vlm(pixels, seq)[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    assert torch.equal(out, seq[:, 2:])


def test_bad_input_is_named() -> None:
    vlm = _vlm()  # 4 image tokens in a 12-token context: 8 text tokens at most
    pixels = torch.rand(2, 3, 8, 8)
    with pytest.raises(VLMInputError, match="longer than the decoder's context max_seq_len=12"):
        vlm(pixels, torch.zeros(2, 9, dtype=torch.long))
    with pytest.raises(VLMInputError, match="3 images for 2 token rows"):
        vlm(torch.rand(3, 3, 8, 8), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(VLMInputError, match="longer than the 8 text tokens"):
        vlm.generate(pixels, torch.zeros(2, 3, dtype=torch.long), max_new_tokens=6)
    with pytest.raises(ValueError, match="1 channels, expected 3"):
        vlm(pixels[:, :1], torch.zeros(2, 3, dtype=torch.long))
