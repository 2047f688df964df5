"""The saved model directory is a complete transformers model (issue 15), and load_pretrained
refuses bad config fields, unsupported flags, lying safetensors headers and NaN weights.

References: transformers' `AutoModelForCausalLM`, `AutoTokenizer`, `pipeline("text-generation")`;
ids must be equal exactly, and generation must stop at the end-of-text id.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from fms_llm.models import GPT, GPTConfig, Llama, LlamaConfig, ModelFileError, load_pretrained
from fms_llm.tokenizer import BPETokenizer
from fms_llm.tokenizer.formats import update_tokenizer_config

EOT = "<|endoftext|>"
CORPUS = ["the cat sat on the mat. the dog ran to the cat!"] * 20


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, 300, special_tokens=[EOT], progress=False)


def _eos_loving_gpt(tok: BPETokenizer) -> GPT:
    """A tiny GPT-2 whose every next token is the end-of-text token (so generation must stop)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tok), n_layers=1, d_model=32, n_heads=2, max_seq_len=64))
    eos = tok.token_to_id(EOT)
    with torch.no_grad():
        model.tok_emb.weight[eos] *= 20.0
        model.norm_f.weight.zero_()  # the final norm outputs its bias: the eos embedding
        model.norm_f.bias.copy_(model.tok_emb.weight[eos])
    return model.eval()


def test_saved_directory_is_a_complete_transformers_model(
    tok: BPETokenizer, tmp_path: Path
) -> None:
    out = _eos_loving_gpt(tok).save_pretrained(tmp_path / "m", tok)
    eos = tok.token_to_id(EOT)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json"):  # fmt: skip
        mode = stat.S_IMODE(os.stat(out / name).st_mode)
        assert mode == 0o666 & ~_umask(), (name, oct(mode))
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o777 & ~_umask()
    hf_tok = AutoTokenizer.from_pretrained(out)
    for text in [*CORPUS[:1], "new words, unseen: zebra 42"]:
        assert hf_tok(text)["input_ids"] == tok.encode(text)
    assert hf_tok(f"a{EOT}b")["input_ids"] == tok.encode(f"a{EOT}b", allowed_special="all")
    assert (hf_tok.eos_token_id, hf_tok.pad_token_id) == (eos, eos)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.generation_config.eos_token_id == eos
    prompt = torch.tensor([tok.encode("the cat")])
    generated = model.generate(prompt, max_new_tokens=10, do_sample=False)
    assert generated[0, prompt.shape[1] :].tolist() == [eos]  # stopped at end of text
    pipe = pipeline("text-generation", model=model, tokenizer=hf_tok)
    results = pipe(
        ["the cat", "the dog ran to the"], batch_size=2, max_new_tokens=5, do_sample=False
    )
    assert [r[0]["generated_text"] for r in results] == ["the cat", "the dog ran to the"]


def test_tokenizer_config_keeps_keys_others_wrote(tok: BPETokenizer, tmp_path: Path) -> None:
    directory = tmp_path / "m"
    directory.mkdir()
    update_tokenizer_config(directory, {"chat_template": "{{ messages }}", "eos_token": "old"})
    _eos_loving_gpt(tok).save_pretrained(directory, tok)
    config = json.loads((directory / "tokenizer_config.json").read_text())
    assert config["chat_template"] == "{{ messages }}"
    assert config["eos_token"] == EOT


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.fixture
def saved_llama(tok: BPETokenizer, tmp_path: Path) -> Path:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), n_layers=1, d_model=32, n_heads=2, n_kv_heads=1, d_ff=48,
                      max_seq_len=32)  # fmt: skip
    return Llama(cfg).save_pretrained(tmp_path / "llama", tok)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tie_word_embeddings", "false", "tie_word_embeddings must be true or false"),
        ("tie_word_embeddings", 1, "tie_word_embeddings must be true or false"),
        ("hidden_size", 32.0, r"hidden_size must be an integer in \[1, "),
        ("num_hidden_layers", True, "num_hidden_layers must be an integer"),
        ("vocab_size", -3, "vocab_size must be an integer"),
        ("vocab_size", 1 << 40, "vocab_size must be an integer"),
        ("rms_norm_eps", -1.0, "rms_norm_eps must be a positive finite number"),
        ("rope_parameters", [1], "rope_parameters must be an object"),
        ("pretraining_tp", 2, "pretraining_tp=2 is not supported"),
        ("max_position_embeddings", 1 << 24, "describes a model of"),
    ],
)
def test_bad_llama_config_fields_are_named(
    saved_llama: Path, field: str, value: Any, message: str
) -> None:
    config = json.loads((saved_llama / "config.json").read_text())
    config[field] = value
    (saved_llama / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match=message):
        load_pretrained(saved_llama)


@pytest.mark.parametrize(
    ("field", "value"),
    [("scale_attn_weights", False), ("reorder_and_upcast_attn", True),
     ("scale_attn_by_inverse_layer_idx", True), ("add_cross_attention", True),
     ("tie_word_embeddings", False)],
)  # fmt: skip
def test_unsupported_gpt2_flags_are_refused(
    tok: BPETokenizer, tmp_path: Path, field: str, value: Any
) -> None:
    saved = _eos_loving_gpt(tok).save_pretrained(tmp_path / "g", tok)
    config = json.loads((saved / "config.json").read_text())
    config[field] = value
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match=f"{field}={json.dumps(value)} is not supported"):
        load_pretrained(saved)


def _rewrite_header(path: Path, edit: Any) -> None:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])


def test_a_header_that_lies_is_refused_before_anything_is_allocated(saved_llama: Path) -> None:
    path = saved_llama / "model.safetensors"
    key = "model.norm.weight"

    def huge(header: dict[str, Any]) -> None:
        header[key]["shape"] = [1 << 40, 1 << 40]

    _rewrite_header(path, huge)
    with pytest.raises(ModelFileError, match=r"needs \d+ bytes, its offsets give 128"):
        load_pretrained(saved_llama)
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 1 << 60) + data[8:])
    with pytest.raises(ModelFileError, match="header length 1152921504606846976 does not fit"):
        load_pretrained(saved_llama)


def test_overlapping_offsets_are_refused(saved_llama: Path) -> None:
    def overlap(header: dict[str, Any]) -> None:
        names = sorted(k for k in header if k != "__metadata__" and header[k]["shape"] == [32])
        header[names[1]]["data_offsets"] = header[names[0]]["data_offsets"]

    _rewrite_header(saved_llama / "model.safetensors", overlap)
    with pytest.raises(ModelFileError, match="overlap"):
        load_pretrained(saved_llama)


def test_nan_weights_are_a_clear_error(tok: BPETokenizer, tmp_path: Path) -> None:
    model = _eos_loving_gpt(tok)
    with torch.no_grad():
        model.blocks[0].ffn.up_proj.weight[3, 4] = float("nan")
    saved = model.save_pretrained(tmp_path / "g")
    with pytest.raises(ModelFileError, match=r"'transformer\.h\.0\.mlp\.c_fc\.weight' holds 1 NaN"):
        load_pretrained(saved)
