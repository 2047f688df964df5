"""fms_llm.quantize against the references: torch's per-channel int8, gguf's Q4_0, QLoRA's NF4 table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fms_llm.models import Llama, LlamaConfig
from fms_llm.quantize import (
    NF4_LEVELS,
    QuantizationError,
    QuantizedLinear,
    dequantize,
    nf4_levels,
    quantize,
    quantize_linears,
)

# The NF4 code values as published with QLoRA (bitsandbytes' `create_normal_map`, float32).
QLORA_NF4 = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
]


def _weight(n: int = 24, k: int = 128, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * 0.05


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_int8_codes_equal_torch_quantize_per_channel_exactly() -> None:
    w = _weight()
    q = quantize(w, "int8")
    ref = torch.quantize_per_channel(
        w, q.scale.double(), torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8
    )
    assert torch.equal(q.data, ref.int_repr())
    assert torch.allclose(q.dequantize(), ref.dequantize(), atol=1e-7, rtol=0)
    # rounding error at most half a step per row
    err = (q.dequantize() - w).abs().amax(dim=1)
    assert bool((err <= q.scale / 2 + 1e-7).all())


def test_int4_bytes_and_values_equal_gguf_q4_0() -> None:
    """Codes byte for byte equal to gguf's Q4_0 blocks; dequantised values equal with the scale
    rounded to float16 as GGUF stores it (exact)."""
    from gguf import GGMLQuantizationType, quants

    w = _weight()
    q = quantize(w, "int4", group_size=32)
    blocks = quants.quantize(w.numpy(), GGMLQuantizationType.Q4_0).reshape(-1, 18)
    ref_scale = blocks[:, :2].copy().view(np.float16).astype(np.float32).reshape(w.shape[0], -1)
    ref_qs = blocks[:, 2:].reshape(w.shape[0], -1)
    assert np.array_equal(q.data.numpy(), ref_qs)
    assert np.array_equal(q.scale.to(torch.float16).float().numpy(), ref_scale)
    ref = quants.dequantize(
        quants.quantize(w.numpy(), GGMLQuantizationType.Q4_0), GGMLQuantizationType.Q4_0
    )
    ours = dequantize(
        type(q)(q.format, q.data, q.scale.half().float(), q.shape, q.group_size)
    ).numpy()
    assert np.array_equal(ours, ref)


def test_nf4_levels_equal_qlora_table_within_1e_6() -> None:
    assert torch.allclose(nf4_levels(), torch.tensor(QLORA_NF4), atol=1e-6, rtol=0)
    assert NF4_LEVELS[7] == 0.0
    assert NF4_LEVELS[0] == -1.0
    assert NF4_LEVELS[-1] == 1.0


def test_nf4_picks_the_nearest_level_per_block_absmax() -> None:
    w = _weight()
    q = quantize(w, "nf4", group_size=64)
    blocks = w.reshape(w.shape[0], -1, 64)
    absmax = blocks.abs().amax(-1, keepdim=True)
    nearest = (blocks / absmax)[..., None].sub(NF4_LEVELS).abs().argmin(-1)
    expected = (NF4_LEVELS[nearest] * absmax).reshape(w.shape)
    assert torch.allclose(q.dequantize(), expected, atol=1e-7, rtol=0)
    assert torch.equal(q.scale, absmax.squeeze(-1))


@pytest.mark.parametrize("fmt", ["int8", "int4", "nf4"])
def test_zero_rows_and_groups_round_trip_to_zero(fmt: str) -> None:
    w = _weight()
    w[3] = 0.0
    assert bool((quantize(w, fmt).dequantize()[3] == 0).all())


def test_memory_4bit_at_most_0_3_of_float32() -> None:
    w = _weight(64, 256)
    f32 = w.numel() * 4
    assert quantize(w, "int4").nbytes / f32 <= 0.3
    assert quantize(w, "nf4").nbytes / f32 <= 0.3
    assert quantize(w, "int8").nbytes / f32 <= 0.26


@pytest.mark.parametrize("fmt", ["int8", "int4", "nf4"])
def test_quantized_linear_forward_and_input_gradient_match_float_of_dequantized(fmt: str) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(64, 12)
    layer = QuantizedLinear.from_linear(lin, fmt)
    assert list(layer.parameters()) == []
    x = torch.randn(3, 5, 64, requires_grad=True)
    y = layer(x)
    w = layer.dequantized_weight()
    x2 = x.detach().clone().requires_grad_(True)
    y2 = x2 @ w.T + lin.bias.detach()
    assert torch.allclose(y, y2, atol=1e-6)
    y.sum().backward()
    y2.sum().backward()
    assert x.grad is not None
    assert x2.grad is not None
    assert torch.allclose(x.grad, x2.grad, atol=1e-6)


def test_quantize_linears_model_round_trips_through_safetensors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, n_layers=2, d_model=64, n_heads=4, max_seq_len=16)
    model = Llama(cfg).eval()
    idx = torch.randint(0, 64, (2, 8))
    float_logits = model(idx)
    names = quantize_linears(model, "nf4", targets=r"blocks\..*")
    assert len(names) == 2 * 7
    assert all(n.startswith("blocks.") for n in names)
    q_logits = model(idx)
    # a 4-bit base is close to, not equal to, the float one
    assert (q_logits - float_logits).abs().max() < 0.15
    loss = model(idx, targets=idx)  # the loss path reads lm_head.weight (still float)
    assert torch.isfinite(loss)
    save_file(model.state_dict(), tmp_path / "q.safetensors")
    fresh = Llama(cfg)
    quantize_linears(fresh, "nf4", targets=r"blocks\..*")
    fresh.load_state_dict(load_file(tmp_path / "q.safetensors"))
    assert torch.equal(fresh.eval()(idx), q_logits)


def test_bad_input_names_the_argument() -> None:
    w = _weight(4, 48)
    with pytest.raises(QuantizationError, match="format must be one of"):
        quantize(w, "int3")  # type: ignore[arg-type]
    with pytest.raises(
        QuantizationError, match="in_features=48 is not a multiple of group_size=32"
    ):
        quantize(w, "int4")
    with pytest.raises(QuantizationError, match="must be 2-D"):
        quantize(w[0], "int8")
    with pytest.raises(QuantizationError, match="non-finite"):
        quantize(torch.full((2, 32), float("nan")), "int4")
    with pytest.raises(QuantizationError, match=r"matches no nn\.Linear"):
        quantize_linears(nn.Sequential(nn.Linear(4, 4)), targets="attn")


@pytest.mark.parametrize(
    ("fmt", "group_size", "scale_dtype"),
    [("int8", None, torch.float32), ("int8", None, torch.float16),
     ("int4", 32, torch.float32), ("int4", 64, torch.float16), ("int4", 128, torch.float16),
     ("nf4", 64, torch.float32)],
)  # fmt: skip
def test_matmul_on_the_codes_equals_the_dequantized_reference(
    fmt: str, group_size: int | None, scale_dtype: torch.dtype
) -> None:
    """The forward multiplies from the codes (int8: scale on the output; int4: by nibble halves);
    the reference is `F.linear(x, dequantize(q))`. In float64 the two differ only by summation
    order (1e-12 relative to |x| |W|); in float32 within 2e-6 of it; decode (one row) and batched
    3-D inputs alike."""
    torch.manual_seed(1)
    lin = nn.Linear(256, 96)
    layer = QuantizedLinear.from_linear(lin, fmt, group_size=group_size, scale_dtype=scale_dtype)  # type: ignore[arg-type]
    assert layer.scale.dtype == scale_dtype
    for shape, dtype, tol in (((1, 256), torch.float64, 1e-12), ((3, 7, 256), torch.float64, 1e-12),
                              ((1, 256), torch.float32, 2e-6), ((4, 5, 256), torch.float32, 2e-6)):  # fmt: skip
        x = torch.randn(*shape, dtype=dtype)
        w = layer.dequantized_weight(dtype)
        ref = torch.nn.functional.linear(x, w, lin.bias.detach().to(dtype))
        scale = float(x.abs().amax() * w.abs().sum(1).amax())  # a bound on every |y| and its terms
        assert (layer(x) - ref).abs().max() <= tol * scale, (shape, dtype)


def test_float16_scales_store_less_and_int4_g32_is_gguf_q4_0_exactly() -> None:
    """float16 scales: bytes a weight int4 0.5 + 2/g, int8 1 + 2/k; the codes are those of the
    float32 scale (GGUF's rule), so int4/32 with float16 scales dequantises to gguf's Q4_0."""
    from gguf import GGMLQuantizationType, quants

    w = _weight(24, 256)
    for g in (32, 64, 128):
        q32 = quantize(w, "int4", group_size=g)
        q16 = quantize(w, "int4", group_size=g, scale_dtype=torch.float16)
        assert torch.equal(q16.data, q32.data)
        assert q16.nbytes == w.numel() // 2 + 2 * w.numel() // g
        assert q32.nbytes == w.numel() // 2 + 4 * w.numel() // g
    assert quantize(w, "int8", scale_dtype=torch.float16).nbytes == w.numel() + 2 * w.shape[0]
    q = quantize(w, "int4", group_size=32, scale_dtype=torch.float16)
    raw = quants.quantize(w.numpy(), GGMLQuantizationType.Q4_0)
    ref = quants.dequantize(raw, GGMLQuantizationType.Q4_0)
    assert np.array_equal(q.dequantize().numpy(), ref)
    with pytest.raises(
        QuantizationError, match=r"scale_dtype must be torch\.float32 or torch\.float16"
    ):
        quantize(w, "int4", scale_dtype=torch.bfloat16)
    with pytest.raises(QuantizationError, match="overflows float16"):
        quantize(torch.full((2, 32), 1e6), "int4", scale_dtype=torch.float16)
