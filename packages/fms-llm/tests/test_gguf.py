"""GGUF against the `gguf` package (the reference quantiser and reader): Q8_0/Q4_0 bytes equal
`gguf.quants.quantize` exactly, our files read with `gguf.GGUFReader` with llama.cpp's Llama
metadata, the import gives back the dequantised weights; bad files get clear errors. And the
quantised loading of a saved model (`load_quantized`)."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from fms_llm.generate import generate
from fms_llm.inference.gguf import (
    GGUFError,
    dequantize_tensor,
    export_gguf,
    import_gguf,
    quantize_tensor,
    read_gguf,
    write_gguf,
)
from fms_llm.models import Llama, LlamaConfig, load_pretrained
from fms_llm.quantize import QuantizationError, QuantizedLinear, linear_weight_bytes, load_quantized
from fms_llm.tokenizer import BPETokenizer

QTYPES = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}


def _values(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    x[0, :32] = 0.0  # an all-zero block (scale 0)
    x[1, 5] = 0.4  # a block with one large entry, positive
    x[2, 40] = -0.4  # and negative
    return x


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
def test_block_bytes_equal_gguf_reference_quantiser_exactly(qtype: str) -> None:
    x = _values((8, 128))
    ours = quantize_tensor(x, qtype)  # type: ignore[arg-type]
    ref = gguf.quants.quantize(x, QTYPES[qtype])
    assert ours.dtype == np.uint8
    assert ours.shape == ref.shape
    assert np.array_equal(ours, ref)
    # and the dequantised values equal the reference's dequantiser to float32 bits
    back = dequantize_tensor(ours, qtype, x.shape)  # type: ignore[arg-type]
    assert np.array_equal(back, gguf.quants.dequantize(ref, QTYPES[qtype]))


def _save_llama(directory: Path, *, tie: bool = False, with_tokenizer: bool = True) -> Llama:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=300, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, max_seq_len=64,
        tie_embeddings=tie,
    )  # fmt: skip
    model = Llama(cfg).eval()
    tok = None
    if with_tokenizer:
        tok = BPETokenizer.train(
            ["hello world, hello tokens " * 20],
            300,
            special_tokens=["<|endoftext|>"],
            progress=False,
        )
    model.save_pretrained(directory, tok)
    return model


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's `convert_hf_to_gguf.py` permutation of W_q / W_k rows (as written there)."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0", "f32"])
def test_export_reads_with_gguf_reader_llama_metadata_and_reference_bytes(
    tmp_path: Path, qtype: str
) -> None:
    model = _save_llama(tmp_path / "m")
    path = export_gguf(tmp_path / "m", tmp_path / "m.gguf", qtype)  # type: ignore[arg-type]
    reader = gguf.GGUFReader(path)

    def field(key: str) -> object:
        return reader.fields[key].contents()

    assert field("general.architecture") == "llama"
    c = model.config
    assert field("llama.block_count") == c.n_layers
    assert field("llama.embedding_length") == c.d_model
    assert field("llama.feed_forward_length") == c.d_ff
    assert field("llama.attention.head_count") == c.n_heads
    assert field("llama.attention.head_count_kv") == c.n_kv_heads
    assert field("llama.context_length") == c.max_seq_len
    assert field("llama.rope.dimension_count") == c.head_dim
    assert field("llama.rope.freq_base") == pytest.approx(c.rope_theta)
    assert field("llama.attention.layer_norm_rms_epsilon") == pytest.approx(c.norm_eps)
    assert field("tokenizer.ggml.model") == "gpt2"
    tokens = field("tokenizer.ggml.tokens")
    assert isinstance(tokens, list)
    assert len(tokens) == c.vocab_size
    assert tokens[ord("h")] == "h"
    assert len(field("tokenizer.ggml.merges")) > 0  # type: ignore[arg-type]
    eos = field("tokenizer.ggml.eos_token_id")
    assert isinstance(eos, int)
    assert tokens[eos] == "<|endoftext|>"
    assert field("tokenizer.ggml.token_type")[eos] == 3  # type: ignore[index]  # CONTROL
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    expected = {
        "token_embd.weight": sd["tok_emb.weight"],
        "blk.1.attn_q.weight": _permute(sd["blocks.1.self_attn.q_proj.weight"], c.n_heads),
        "blk.1.attn_k.weight": _permute(sd["blocks.1.self_attn.k_proj.weight"], c.n_kv_heads),
        "blk.0.ffn_down.weight": sd["blocks.0.ffn.down_proj.weight"],
        "output.weight": sd["lm_head.weight"],
        "output_norm.weight": sd["norm_f.weight"],
    }
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 + 9 * c.n_layers + 1
    for name, values in expected.items():
        t = tensors[name]
        want = qtype if values.ndim == 2 else "f32"
        assert t.tensor_type == {"f32": 0, **QTYPES}[want]
        ref = gguf.quants.quantize(values, {"f32": gguf.GGMLQuantizationType.F32, **QTYPES}[want])
        assert np.array_equal(
            np.asarray(t.data).view(np.uint8).reshape(-1), ref.view(np.uint8).reshape(-1)
        )


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
def test_import_gives_the_dequantized_weights_and_the_same_model(
    tmp_path: Path, qtype: str
) -> None:
    model = _save_llama(tmp_path / "m")
    path = export_gguf(tmp_path / "m", tmp_path / "m.gguf", qtype)  # type: ignore[arg-type]
    back = import_gguf(path)
    assert back.config.n_kv_heads == model.config.n_kv_heads
    sd = model.state_dict()
    for name, value in back.state_dict().items():
        w = sd[name].numpy()
        if w.ndim == 2:
            q = QTYPES[qtype]
            deq = gguf.quants.dequantize(gguf.quants.quantize(w, q), q)
            assert torch.equal(value, torch.from_numpy(deq)), name
        else:
            assert torch.equal(value, sd[name]), name
    f32 = import_gguf(export_gguf(tmp_path / "m", tmp_path / "f.gguf", "f32"))
    x = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        assert torch.equal(f32(x), model(x))  # lossless: the RoPE permutation undone exactly


def test_tied_head_exports_without_output_and_imports_tied(tmp_path: Path) -> None:
    _save_llama(tmp_path / "m", tie=True, with_tokenizer=False)
    path = export_gguf(tmp_path / "m", tmp_path / "m.gguf", "q8_0")
    f = read_gguf(path)
    assert "output.weight" not in f.tensors
    assert "tokenizer.ggml.tokens" not in f.metadata
    back = import_gguf(path)
    assert back.lm_head.weight is back.tok_emb.weight


def test_writer_reader_round_trip_and_metadata_types(tmp_path: Path) -> None:
    x = _values((4, 64))
    meta = {"a.int": 7, "a.float": 0.5, "a.str": "hi", "a.bool": True, "a.list": ["x", "y"]}
    path = write_gguf(tmp_path / "t.gguf", meta, {"w": (x, "q4_0"), "b": (x[0], "f32")})
    f = read_gguf(path)
    assert {k: f.metadata[k] for k in meta} == meta
    assert f.tensors["b"].shape == (64,)
    assert np.array_equal(f.tensors["b"].dequantize(), x[0])
    ref = gguf.quants.dequantize(gguf.quants.quantize(x, QTYPES["q4_0"]), QTYPES["q4_0"])
    assert np.array_equal(f.tensors["w"].dequantize(), ref)
    reader = gguf.GGUFReader(path)
    assert reader.fields["a.str"].contents() == "hi"
    assert reader.fields["a.list"].contents() == ["x", "y"]


def test_bad_files_get_clear_errors(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "t.gguf", {"k": 1}, {"w": (_values((3, 64)), "q8_0")})
    data = path.read_bytes()
    with pytest.raises(GGUFError, match="does not exist"):
        read_gguf(tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + data[4:])
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_gguf(bad)
    bad.write_bytes(data[:4] + struct.pack("<I", 9) + data[8:])
    with pytest.raises(GGUFError, match="version 9"):
        read_gguf(bad)
    bad.write_bytes(data[:-30])  # past the 20 bytes of end padding
    with pytest.raises(GGUFError, match="truncated: tensor 'w'"):
        read_gguf(bad)
    bad.write_bytes(data[:30])
    with pytest.raises(GGUFError, match="truncated"):
        read_gguf(bad)
    with pytest.raises(GGUFError, match="only 'llama'"):
        import_gguf(path)
    with pytest.raises(GGUFError, match="multiple of 32"):
        quantize_tensor(np.zeros((2, 40), np.float32), "q4_0")
    with pytest.raises(GGUFError, match="type must be one of"):
        export_gguf(tmp_path, tmp_path / "x.gguf", "q5_k")  # type: ignore[arg-type]


@pytest.mark.parametrize(("fmt", "ratio"), [("int8", 3.75), ("int4", 6.4)])
def test_load_quantized_generates_in_less_memory(tmp_path: Path, fmt: str, ratio: float) -> None:
    model = _save_llama(tmp_path / "m", tie=True, with_tokenizer=False)
    q = load_quantized(tmp_path / "m", fmt)  # type: ignore[arg-type]
    assert all(not isinstance(m, torch.nn.Linear) for m in q.modules())
    assert isinstance(q.lm_head, QuantizedLinear)
    stored, f32 = linear_weight_bytes(q)
    # bytes a weight: int8 1 + 4/k (k >= 64 here), int4 0.5 + 4/32 (float32 scales)
    assert f32 / stored >= ratio
    x = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        err = (q(x) - model(x)).abs().max()
    assert float(err) < (0.05 if fmt == "int8" else 0.2)
    out = generate(q, x, 8, temperature=0)
    assert out.shape == (1, 12)
    with pytest.raises(QuantizationError, match="format must be one of"):
        load_quantized(tmp_path / "m", "int3")  # type: ignore[arg-type]
    assert load_pretrained(tmp_path / "m").lm_head.weight is not None
