"""LoRA against peft on a transformers Llama: logits, merge and gradients; QLoRA; bad targets."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM

from fms_llm.finetune.lora import (
    LoRAConfig,
    LoRAError,
    LoRALinear,
    apply_lora,
    lora_state_dict,
    merge_lora,
    trainable_parameters,
)
from fms_llm.models import Llama
from fms_llm.models.hf import config_from_hf, from_hf_state_dict
from fms_llm.quantize import quantize_linears

# peft asks transformers a deprecated question on every wrap
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")

# transformers' module names -> ours (fms_llm.models.hf maps the weights the same way)
_NAMES = {"self_attn.o_proj": "self_attn.out_proj", "mlp.": "ffn."}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
OURS = ["q_proj", "k_proj", "v_proj", "out_proj", "gate_proj", "up_proj", "down_proj"]


def _pair() -> tuple[nn.Module, Llama]:
    """A peft LoRA model on a random transformers Llama, and ours with the same A, B, scaling."""
    torch.manual_seed(0)
    cfg = HFLlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=64,
        rope_theta=500.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    hf = LlamaForCausalLM(cfg).eval()
    ours = Llama(config_from_hf(cfg.to_dict())).eval()
    ours.load_state_dict(from_hf_state_dict(ours.config, hf.state_dict()))
    peft_model = get_peft_model(
        hf,
        LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False),
    )
    apply_lora(ours, LoRAConfig(r=4, alpha=8, targets=OURS))
    with torch.no_grad():
        for name, m in peft_model.named_modules():
            if (
                hasattr(m, "lora_A")
                and isinstance(m.lora_A, nn.ModuleDict)
                and "default" in m.lora_A
            ):
                ours_name = name.removeprefix("base_model.model.model.layers.")
                ours_name = "blocks." + ours_name
                for theirs, mine in _NAMES.items():
                    ours_name = ours_name.replace(theirs, mine)
                layer = ours.get_submodule(ours_name)
                assert isinstance(layer, LoRALinear)
                assert layer.scaling == m.scaling["default"]
                layer.lora_A.copy_(m.lora_A["default"].weight)
                layer.lora_B.copy_(m.lora_B["default"].weight)
    return peft_model, ours


def _lora_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.grad is not None
            key = name.replace("base_model.model.model.layers.", "blocks.")
            key = key.replace(".default.weight", "").replace(".weight", "")
            for theirs, mine in _NAMES.items():
                key = key.replace(theirs, mine)
            out[key] = p.grad
    return out


def test_logits_and_gradients_equal_peft_init_lora_weights_false_within_1e5() -> None:
    peft_model, ours = _pair()
    idx = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(1))
    theirs = peft_model(input_ids=idx).logits
    mine = ours(idx)
    assert (theirs - mine).abs().max() <= 1e-5
    theirs.square().mean().backward()
    mine.square().mean().backward()
    g_theirs, g_mine = _lora_grads(peft_model), _lora_grads(ours)
    assert sorted(g_theirs) == sorted(g_mine)
    assert len(g_mine) == 2 * 7 * 2
    for key, g in g_mine.items():
        assert torch.allclose(g, g_theirs[key], atol=1e-6, rtol=1e-4), key


def test_trainable_counts_equal_peft() -> None:
    peft_model, ours = _pair()
    trainable, total = trainable_parameters(ours)
    theirs_trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == theirs_trainable
    assert trainable < total // 10


def test_merged_equals_unmerged_within_1e5() -> None:
    _, ours = _pair()
    idx = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = ours(idx)
        names = merge_lora(ours)
        after = ours(idx)
    assert len(names) == 14
    assert not any(isinstance(m, LoRALinear) for m in ours.modules())
    assert (before - after).abs().max() <= 1e-5


def test_zero_b_start_is_the_base_model_and_loss_path_trains_the_head() -> None:
    torch.manual_seed(0)
    _, ours = _pair()
    merge_lora(ours)
    idx = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        base = ours(idx)
    names = apply_lora(ours, LoRAConfig(r=2, targets=r"(blocks\.\d+\.ffn\..*|lm_head)"))
    assert "lm_head" in names
    assert len(names) == 7
    with torch.no_grad():
        assert torch.equal(ours(idx), base)
    # the fused loss reads lm_head.weight: the adapter's effective weight, so B gets a gradient
    ours(idx, targets=idx).backward()
    head = ours.lm_head
    assert isinstance(head, LoRALinear)
    assert head.lora_B.grad is not None
    assert head.lora_B.grad.abs().sum() > 0
    assert set(lora_state_dict(ours)) == {f"{n}.{ab}" for n in names for ab in ("lora_A", "lora_B")}


@pytest.mark.parametrize("fmt", ["int8", "int4", "nf4"])
def test_qlora_trains_adapters_over_a_frozen_quantised_base_and_merges(fmt: str) -> None:
    _, ours = _pair()
    merge_lora(ours)
    quantize_linears(ours, fmt, targets=r"blocks\..*", group_size=None if fmt == "int8" else 32)  # type: ignore[arg-type]
    apply_lora(ours, LoRAConfig(r=2, targets=OURS, init_b_zero=False))
    idx = torch.randint(0, 97, (2, 12))
    loss = ours(idx, targets=idx)
    loss.backward()
    assert all(p.grad is not None for n, p in ours.named_parameters() if p.requires_grad)
    assert all("lora_" in n for n, p in ours.named_parameters() if p.requires_grad)
    with torch.no_grad():
        before = ours(idx)
        merge_lora(ours)
        after = ours(idx)
    assert all(type(m).__name__ != "QuantizedLinear" for m in ours.blocks.modules())
    assert (before - after).abs().max() <= 1e-5


def test_a_target_that_matches_nothing_is_an_error_before_any_change() -> None:
    _, ours = _pair()
    merge_lora(ours)
    flags = [p.requires_grad for p in ours.parameters()]
    with pytest.raises(LoRAError, match=r"targets=\['qkv'\] match no linear layer"):
        apply_lora(ours, LoRAConfig(targets=["qkv"]))
    assert [p.requires_grad for p in ours.parameters()] == flags
    with pytest.raises(LoRAError, match="r must be an int >= 1"):
        LoRAConfig(r=0)
