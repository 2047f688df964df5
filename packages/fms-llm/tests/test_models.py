"""Models: logits parity with transformers both ways, configs, counts, and bad model files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM
from transformers import LlamaConfig as HFLlamaConfig

from fms_llm.models import (
    GPT,
    GPTConfig,
    Llama,
    LlamaConfig,
    ModelConfigError,
    ModelFileError,
    load_pretrained,
)
from fms_transformer.kv_cache import KVCache

TOL = 1e-5  # float32 logits


def _hf_gpt2() -> GPT2LMHeadModel:
    cfg = GPT2Config(
        vocab_size=101, n_positions=40, n_embd=48, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return GPT2LMHeadModel(cfg).eval()


def _hf_llama() -> LlamaForCausalLM:
    cfg = HFLlamaConfig(
        vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=64,
        rope_theta=500.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def _perturb(model: torch.nn.Module) -> None:
    """Random weights everywhere, norms and biases included (fresh norms are all ones/zeros)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))


@pytest.mark.parametrize("make_hf", [_hf_gpt2, _hf_llama], ids=["gpt2", "llama"])
def test_logits_parity_with_transformers_both_ways_within_1e5(
    make_hf: object, tmp_path: Path
) -> None:
    """transformers model -> save -> fms-llm, and fms-llm -> save -> transformers: |dlogits| <= 1e-5."""
    torch.manual_seed(1)
    hf = make_hf()  # type: ignore[operator]
    _perturb(hf)
    hf.save_pretrained(tmp_path / "hf")
    ours = load_pretrained(tmp_path / "hf").eval()
    x = torch.randint(0, 101, (3, 17))
    with torch.no_grad():
        ref = hf(x).logits
        got = ours(x)
    torch.testing.assert_close(got, ref, atol=TOL, rtol=0)
    ours.save_pretrained(tmp_path / "ours")
    back = type(hf).from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, got, atol=TOL, rtol=0)


@pytest.mark.parametrize("family", ["gpt", "llama"])
def test_fresh_model_saves_and_loads_through_transformers(family: str, tmp_path: Path) -> None:
    """A model initialised by fms-llm loads in AutoModelForCausalLM with the same logits (1e-5)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(2)
    if family == "gpt":
        model: GPT = GPT(
            GPTConfig(vocab_size=67, n_layers=2, d_model=32, n_heads=4, max_seq_len=32)
        )
    else:
        model = Llama(LlamaConfig(vocab_size=67, n_layers=2, d_model=32, n_heads=4, n_kv_heads=1))
    model.eval().save_pretrained(tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 67, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(x).logits, atol=TOL, rtol=0)
    assert model.num_parameters() == hf.num_parameters()


def test_parameter_count_matches_transformers_and_gpt2_small() -> None:
    """GPT-2 small has 124,439,808 parameters (tied head counted once), as transformers counts."""
    model = GPT(GPTConfig())
    assert model.num_parameters() == 124_439_808
    assert model.num_parameters(non_embedding=True) == 124_439_808 - 50257 * 768 - 1024 * 768


def test_flops_per_token_is_6n_plus_attention() -> None:
    cfg = GPTConfig(vocab_size=100, n_layers=2, d_model=32, n_heads=4, max_seq_len=16)
    model = GPT(cfg)
    n_matmul = 2 * (4 * 32 * 32 + 2 * 32 * 128) + 100 * 32
    assert model.flops_per_token(16) == 6 * n_matmul + 12 * 2 * 32 * 16


def test_gpt2_init_scales_residual_projections() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=100, n_layers=8, d_model=256, n_heads=4, max_seq_len=16))
    out_std = model.blocks[0].self_attn.out_proj.weight.std().item()
    q_std = model.blocks[0].self_attn.q_proj.weight.std().item()
    assert abs(q_std - 0.02) < 0.002
    assert abs(out_std - 0.02 / 4) < 0.0005  # 0.02 / sqrt(2 * 8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d_model": 30, "n_heads": 4}, "d_model=30 is not divisible by n_heads=4"),
        ({"n_heads": 4, "n_kv_heads": 3}, "not a multiple of n_kv_heads=3"),
        ({"vocab_size": 0}, "vocab_size must be a positive int"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_model_configs_raise(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ModelConfigError, match=match):
        GPTConfig(**{"d_model": 32, "n_heads": 4, **kwargs})  # type: ignore[arg-type]


def test_context_longer_than_max_seq_len_raises() -> None:
    model = GPT(GPTConfig(vocab_size=10, n_layers=1, d_model=8, n_heads=2, max_seq_len=4))
    with pytest.raises(ValueError, match="exceeds max_seq_len=4"):
        model(torch.zeros(1, 5, dtype=torch.long))


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    GPT(GPTConfig(vocab_size=50, n_layers=1, d_model=16, n_heads=2, max_seq_len=8)).save_pretrained(
        tmp_path / "m"
    )
    return tmp_path / "m"


def test_missing_model_dir_and_files(tmp_path: Path, saved: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        load_pretrained(tmp_path / "nope")
    (saved / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match=r"model\.safetensors does not exist"):
        load_pretrained(saved)


def test_corrupt_config_and_weights(saved: Path) -> None:
    (saved / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not JSON"):
        load_pretrained(saved)
    (saved / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelFileError, match="model_type 'bert' is not supported"):
        load_pretrained(saved)


def test_truncated_safetensors(saved: Path) -> None:
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        load_pretrained(saved)


def test_config_weights_mismatch(saved: Path) -> None:
    cfg = json.loads((saved / "config.json").read_text())
    cfg["n_embd"] = 32
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match=r"has shape \[\d+(, \d+)?\], the config .* implies"):
        load_pretrained(saved)
    cfg["n_embd"], cfg["n_layer"] = 16, 2
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match=r"missing weights \['transformer\.h\.1"):
        load_pretrained(saved)


def test_save_is_atomic_and_keeps_other_files(saved: Path) -> None:
    (saved / "tokenizer.json").write_text("{}")
    model = load_pretrained(saved)
    model.save_pretrained(saved)
    assert sorted(p.name for p in saved.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]


def _reference_and_fast(family: str) -> tuple[GPT, GPT]:
    """The same perturbed weights in the readable reference modules and in the fused fast path."""
    cfg: GPTConfig | LlamaConfig
    if family == "gpt":
        cfg = GPTConfig(vocab_size=61, n_layers=2, d_model=32, n_heads=4, max_seq_len=16)
    else:
        cfg = LlamaConfig(vocab_size=61, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2)
    ref = (GPT if family == "gpt" else Llama)(cfg, fused=False)
    fast = (GPT if family == "gpt" else Llama)(cfg, fused=True)
    _perturb(ref)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


@pytest.mark.parametrize("family", ["gpt", "llama"])
def test_fused_kernels_equal_the_reference_modules(family: str) -> None:
    """The fast path (F.layer_norm, the hand-derived RMSNorm, F.gelu tanh, F.silu) matches the
    readable fms_transformer modules: logits and gradients within 1e-5 (float32)."""
    torch.manual_seed(4)
    ref, fast = _reference_and_fast(family)
    assert type(fast.norm_f).__name__.startswith("_Fused")
    x = torch.randint(0, 61, (2, 12))
    a, b = ref(x), fast(x)
    torch.testing.assert_close(b, a, atol=TOL, rtol=0)
    a.square().mean().backward()
    b.square().mean().backward()
    for (name, p), q in zip(ref.named_parameters(), fast.parameters(), strict=True):
        assert p.grad is not None, name
        assert q.grad is not None, name
        torch.testing.assert_close(q.grad, p.grad, atol=TOL, rtol=1e-4, msg=name)


@pytest.mark.parametrize("family", ["gpt", "llama"])
def test_fused_attention_decodes_like_the_reference_modules(family: str) -> None:
    """The fast self-attention (queries and keys rotated from a shared RoPE table sliced by the
    cache offset) gives the reference model's logits within 1e-5 (float32): a full
    forward pass, token-by-token decoding with a KV cache, and explicit positions."""
    torch.manual_seed(5)
    ref, fast = _reference_and_fast(family)
    if family == "llama":  # RoPE from one table shared by every layer
        assert type(fast.blocks[0].self_attn).__name__ == "_FusedSelfAttention"
        assert fast.blocks[0].self_attn.rope is fast.blocks[1].self_attn.rope
    x = torch.randint(0, 61, (2, 10))
    with torch.no_grad():
        full = ref(x)
        torch.testing.assert_close(fast(x), full, atol=TOL, rtol=0)
        cache = KVCache(fast.config.n_layers)
        steps = [fast(x[:, :4], kv_cache=cache)]
        steps += [fast(x[:, t : t + 1], kv_cache=cache) for t in range(4, 10)]
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=TOL, rtol=0)
        if family == "llama":  # explicit positions take the reference path
            h = torch.randn(2, 10, fast.config.d_model)
            pos = torch.arange(3, 13)
            a = ref.blocks[0].self_attn(h, is_causal=True, positions=pos)
            b = fast.blocks[0].self_attn(h, is_causal=True, positions=pos)
            torch.testing.assert_close(b, a, atol=TOL, rtol=0)


@pytest.mark.parametrize("make_hf", [_hf_gpt2, _hf_llama], ids=["gpt2", "llama"])
def test_loss_with_targets_equals_transformers_loss_and_gradients(
    make_hf: object, tmp_path: Path
) -> None:
    """`model(x, y)` (the head fused with the cross-entropy) gives transformers' loss for the same
    targets within 1e-5, and the gradients of every parameter (the tied GPT-2 head included)
    equal those of the logits followed by F.cross_entropy (1e-5)."""
    torch.manual_seed(8)
    hf = make_hf()  # type: ignore[operator]
    _perturb(hf)
    hf.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path)
    x, y = torch.randint(0, 101, (2, 9)), torch.randint(0, 101, (2, 9))
    y[0, 0] = -100  # ignored, as in transformers
    with torch.no_grad():
        ref = hf(x, labels=y, shift_labels=y).loss
    loss = ours(x, y)
    torch.testing.assert_close(loss, ref, atol=TOL, rtol=0)
    loss.backward()
    fused = {n: p.grad.clone() for n, p in ours.named_parameters() if p.grad is not None}
    ours.zero_grad()
    torch.nn.functional.cross_entropy(ours(x).flatten(0, 1), y.flatten()).backward()
    plain = {n: p.grad for n, p in ours.named_parameters() if p.grad is not None}
    assert fused.keys() == plain.keys()
    assert fused
    for name, grad in plain.items():
        torch.testing.assert_close(fused[name], grad, atol=TOL, rtol=1e-4, msg=name)


def test_targets_of_another_shape_raise() -> None:
    model = GPT(GPTConfig(vocab_size=11, n_layers=1, d_model=8, n_heads=2, max_seq_len=8))
    with pytest.raises(ValueError, match=r"targets \(1, 4\) must have the shape of idx \(1, 5\)"):
        model(torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))


def test_lean_blocks_only_without_dropout() -> None:
    """Dropout-free models call their sub-layers directly; with dropout the full block stays."""
    lean = Llama(LlamaConfig(vocab_size=11, n_layers=1, d_model=8, n_heads=2))
    full = Llama(LlamaConfig(vocab_size=11, n_layers=1, d_model=8, n_heads=2, dropout=0.1))
    assert type(lean.blocks[0]).__name__ == "_LeanDecoderBlock"
    assert type(full.blocks[0]).__name__ == "DecoderBlock"
    torch.manual_seed(9)
    full.load_state_dict(lean.state_dict())
    x = torch.randint(0, 11, (1, 6))
    torch.testing.assert_close(lean(x), full.eval()(x), atol=TOL, rtol=0)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_training_forward_traces_into_one_torch_compile_graph(family: str) -> None:
    """`fms-llm train --set train.compile=true` compiles `model(x, y)`: no graph breaks, which
    also means no host-device synchronisation in a step (a `.item()` or a data-dependent check on
    a GPU tensor would be both). Traced by Dynamo only (no code generation, so it is quick)."""
    cfg = (
        GPTConfig(vocab_size=64, n_layers=2, d_model=16, n_heads=2, max_seq_len=16)
        if family == "gpt2"
        else LlamaConfig(vocab_size=64, n_layers=2, d_model=16, n_heads=4, n_kv_heads=2)
    )
    model = GPT(cfg).train()
    x, y = torch.randint(0, 64, (2, 12)), torch.randint(0, 64, (2, 12))
    for args in ((x, y), (x,)):
        explained = torch._dynamo.explain(model)(*args)
        assert explained.graph_break_count == 0, explained.break_reasons
        assert explained.graph_count == 1


def test_load_pretrained_checks_the_device_before_reading(tiny_run: Path) -> None:
    model_dir = tiny_run / "model"
    with pytest.raises(ValueError, match=r"device 'tpu' is not a device PyTorch knows"):
        load_pretrained(model_dir, map_location="tpu")
    with pytest.raises(ValueError, match=r"device 'tpu'"):
        GPT.from_pretrained(model_dir, map_location="tpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert next(load_pretrained(model_dir, map_location=None).parameters()).device.type == expected


@pytest.mark.parametrize("family", ["gpt", "llama"])
def test_inputs_embeds_of_the_token_rows_equal_the_ids_forward(family: str) -> None:
    """`inputs_embeds=tok_emb(idx)` is the ids forward exactly (logits, loss, with a KV cache),
    and gradients reach the vectors passed in."""
    torch.manual_seed(0)
    cfg = {"vocab_size": 13, "n_layers": 2, "d_model": 16, "n_heads": 2, "max_seq_len": 10}
    model = (GPT(GPTConfig(**cfg)) if family == "gpt" else Llama(LlamaConfig(**cfg))).eval()
    idx = torch.randint(0, 13, (2, 6))
    emb = model.tok_emb(idx).detach().requires_grad_(True)
    torch.testing.assert_close(model(inputs_embeds=emb), model(idx), atol=0, rtol=0)
    loss = model(inputs_embeds=emb, targets=idx)
    torch.testing.assert_close(loss, model(idx, idx), atol=0, rtol=0)
    loss.backward()
    assert emb.grad is not None
    assert emb.grad.abs().sum() > 0
    cache = KVCache(model.n_layers)
    with torch.no_grad():
        first = model(inputs_embeds=emb[:, :4], kv_cache=cache)
        rest = model(idx[:, 4:], kv_cache=cache)
        torch.testing.assert_close(torch.cat([first, rest], 1), model(idx), atol=1e-5, rtol=0)


def test_inputs_embeds_bad_input_is_named() -> None:
    model = GPT(GPTConfig(vocab_size=11, n_layers=1, d_model=8, n_heads=2, max_seq_len=8))
    ids = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="exactly one of idx"):
        model(ids, inputs_embeds=torch.zeros(1, 3, 8))
    with pytest.raises(ValueError, match="exactly one of idx"):
        model()
    with pytest.raises(ValueError, match=r"inputs_embeds must be \(batch, seq, d_model=8\)"):
        model(inputs_embeds=torch.zeros(1, 3, 5))
    with pytest.raises(ValueError, match="exceeds max_seq_len=8"):
        model(inputs_embeds=torch.zeros(1, 9, 8))
    with pytest.raises(ValueError, match=r"shape of inputs_embeds' \(batch, seq\) \(1, 3\)"):
        model(inputs_embeds=torch.zeros(1, 3, 8), targets=torch.zeros(1, 2, dtype=torch.long))
