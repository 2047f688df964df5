"""The Hugging Face round trip: `config.json` + `model.safetensors` in transformers' own layouts.

**GPT-2** (`GPT2LMHeadModel`) stores its linear layers as `Conv1D`, whose weight is the
*transpose* of `nn.Linear`'s (`(in, out)`), and fuses the query, key and value projections into
one `attn.c_attn` of width $3d$. Per block `i`:

| Hugging Face key | ours |
| --- | --- |
| `transformer.h.i.ln_1.{weight,bias}` | `blocks.i.attn_norm.*` |
| `transformer.h.i.attn.c_attn.weight` `(d, 3d)` | `blocks.i.self_attn.{q,k,v}_proj.weight` = thirds, transposed |
| `transformer.h.i.attn.c_attn.bias` `(3d,)` | `blocks.i.self_attn.{q,k,v}_proj.bias` = thirds |
| `transformer.h.i.attn.c_proj.*` | `blocks.i.self_attn.out_proj.*` (weight transposed) |
| `transformer.h.i.ln_2.*` | `blocks.i.ffn_norm.*` |
| `transformer.h.i.mlp.c_fc.*`, `mlp.c_proj.*` | `blocks.i.ffn.up_proj.*`, `ffn.down_proj.*` (transposed) |

plus `transformer.wte.weight` (`tok_emb`, and the tied head), `transformer.wpe.weight`
(`pos_emb`), `transformer.ln_f.*` (`norm_f`). The tied `lm_head.weight` is not stored.

**Llama** (`LlamaForCausalLM`) uses `nn.Linear` and the same projection names as ours:
`model.embed_tokens`, `model.layers.i.{input_layernorm, self_attn.{q,k,v,o}_proj,
post_attention_layernorm, mlp.{gate,up,down}_proj}`, `model.norm`, `lm_head`; only renames.

Files are written into a temporary sibling directory and renamed into place, so an interrupted
save never leaves a half-written model that looks complete; reading checks the config, every key
and every shape before any weight is copied, and names what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from fms_dl.torch import resolve_device
from fms_llm.models.gpt import GPT, GPTConfig, Llama, LlamaConfig, ModelConfig, ModelConfigError
from fms_llm.tokenizer.formats import update_tokenizer_config

if TYPE_CHECKING:
    from fms_llm.tokenizer import BPETokenizer

__all__ = [
    "ModelFileError",
    "config_from_hf",
    "config_to_hf",
    "from_hf_state_dict",
    "load_pretrained",
    "load_with_tokenizer",
    "read_safetensors_header",
    "save_pretrained",
    "to_hf_state_dict",
]


class ModelFileError(ValueError):
    """A model directory is missing, corrupt, or holds an unsupported model; names the file."""


# --------------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------------


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """The transformers `config.json` dict of `config` (`gpt2` or `llama`)."""
    c = config
    if isinstance(c, LlamaConfig) or c.family == "llama":
        if c.norm != "rmsnorm" or c.ffn != "swiglu" or c.positional != "rope":
            raise ModelConfigError("a llama config needs rmsnorm, swiglu and rope to save as HF")
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": c.vocab_size,
            "hidden_size": c.d_model,
            "intermediate_size": c.d_ff,
            "num_hidden_layers": c.n_layers,
            "num_attention_heads": c.n_heads,
            "num_key_value_heads": c.n_kv_heads,
            "head_dim": c.head_dim,
            "max_position_embeddings": c.max_seq_len,
            "rms_norm_eps": c.norm_eps,
            "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
            "rope_theta": c.rope_theta,
            "hidden_act": "silu",
            "attention_bias": c.bias,
            "mlp_bias": c.bias,
            "attention_dropout": c.dropout,
            "tie_word_embeddings": c.tie_embeddings,
            "initializer_range": c.init_std,
            "torch_dtype": "float32",
        }
    if (
        c.norm != "layernorm"
        or c.positional != "learned"
        or not c.bias
        or c.n_kv_heads != c.n_heads
    ):
        raise ModelConfigError(
            "a gpt config needs layernorm, learned positions, biases and n_kv_heads == n_heads "
            "to save as HF GPT-2"
        )
    if c.ffn not in ("gelu_tanh_mlp", "gelu_mlp") or not c.tie_embeddings:
        raise ModelConfigError("a gpt config needs a GELU MLP and tied embeddings to save as HF")
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.max_seq_len,
        "n_embd": c.d_model,
        "n_layer": c.n_layers,
        "n_head": c.n_heads,
        "n_inner": c.d_ff,
        "activation_function": "gelu_new" if c.ffn == "gelu_tanh_mlp" else "gelu",
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "layer_norm_epsilon": c.norm_eps,
        "initializer_range": c.init_std,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


# The size fields a config.json may hold, with the largest value we accept: far past any real model,
# and small enough that products of them cannot overflow anything before the file-size check.
_SIZE_FIELDS = {
    "gpt2": ("vocab_size", "n_layer", "n_embd", "n_head", "n_positions", "n_inner"),
    "llama": (
        "vocab_size",
        "num_hidden_layers",
        "hidden_size",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "max_position_embeddings",
        "head_dim",
    ),
}
_MAX_SIZE = 1 << 24
_POSITIVE_FLOATS = ("layer_norm_epsilon", "rms_norm_eps", "rope_theta", "initializer_range")
_BOOL_FIELDS = ("tie_word_embeddings", "attention_bias", "mlp_bias", "scale_attn_weights")
# transformers flags that change the computation, and the one value of each that we implement
_FIXED_FLAGS: dict[str, dict[str, object]] = {
    "gpt2": {
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "add_cross_attention": False,
        "tie_word_embeddings": True,
    },
    "llama": {"pretraining_tp": 1, "is_encoder_decoder": False},
}


def _check_hf_types(hf: dict[str, Any], model_type: str, source: str) -> None:
    """Refuse wrong JSON types, out-of-range sizes and unsupported flags, naming the field."""
    for key in _SIZE_FIELDS[model_type]:
        value = hf.get(key)
        if value is None and key in ("n_inner", "num_key_value_heads", "head_dim"):
            continue  # optional: derived from the others
        if value is None:
            continue  # a missing required field is reported by the KeyError below
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _MAX_SIZE:
            raise ModelFileError(
                f"{source}: {key} must be an integer in [1, {_MAX_SIZE}], got {value!r}"
            )
    for key in _POSITIVE_FLOATS:
        if key not in hf:
            continue
        value = hf[key]
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ModelFileError(f"{source}: {key} must be a positive finite number, got {value!r}")
    for key in _BOOL_FIELDS:
        if key in hf and not isinstance(hf[key], bool):
            raise ModelFileError(f"{source}: {key} must be true or false, got {hf[key]!r}")
    for key, supported in _FIXED_FLAGS[model_type].items():
        if key in hf and hf[key] is not None and hf[key] != supported:
            raise ModelFileError(
                f"{source}: {key}={json.dumps(hf[key])} is not supported (only "
                f"{json.dumps(supported)}); the model would compute something else"
            )
    for key in ("rope_parameters", "rope_scaling"):
        if hf.get(key) is not None and not isinstance(hf[key], dict):
            raise ModelFileError(f"{source}: {key} must be an object or null, got {hf[key]!r}")


def config_from_hf(hf: dict[str, Any], *, source: str = "config.json") -> ModelConfig:
    """Our config from a transformers `config.json` dict (`gpt2` or `llama`).

    Every field is checked for its JSON type and range first; flags of transformers that change
    the computation (`scale_attn_weights=false`, `reorder_and_upcast_attn`, `pretraining_tp`...) are
    refused unless they hold the one value implemented here.

    Raises:
        ModelFileError: a field of the wrong type or range, a missing field, an unsupported
            model type, activation, RoPE variant or flag.
    """
    model_type = hf.get("model_type")
    if not isinstance(model_type, str):
        raise ModelFileError(f"{source}: model_type must be a string, got {model_type!r}")
    if model_type in _SIZE_FIELDS:
        _check_hf_types(hf, model_type, source)
    try:
        if model_type == "gpt2":
            act = hf.get("activation_function", "gelu_new")
            ffn = {
                "gelu_new": "gelu_tanh_mlp",
                "gelu_pytorch_tanh": "gelu_tanh_mlp",
                "gelu": "gelu_mlp",
            }
            if act not in ffn:
                raise ModelFileError(f"{source}: activation_function {act!r} is not supported")
            return GPTConfig(
                vocab_size=hf["vocab_size"],
                n_layers=hf["n_layer"],
                d_model=hf["n_embd"],
                n_heads=hf["n_head"],
                d_ff=hf.get("n_inner") or 4 * hf["n_embd"],
                max_seq_len=hf["n_positions"],
                norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                ffn=ffn[act],  # type: ignore[arg-type]
                dropout=0.0,
                init_std=hf.get("initializer_range", 0.02),
            )
        if model_type == "llama":
            if hf.get("hidden_act", "silu") != "silu":
                raise ModelFileError(f"{source}: hidden_act {hf['hidden_act']!r} is not supported")
            if hf.get("tie_word_embeddings") is None:
                hf = {**hf, "tie_word_embeddings": False}
            rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
            if rope.get("rope_type", "default") != "default":
                raise ModelFileError(f"{source}: rope_type {rope['rope_type']!r} is not supported")
            theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
            if not isinstance(theta, int | float) or isinstance(theta, bool) or not theta > 0:
                raise ModelFileError(
                    f"{source}: rope_theta must be a positive number, got {theta!r}"
                )
            d, h = hf["hidden_size"], hf["num_attention_heads"]
            if hf.get("head_dim", d // h) != d // h:
                raise ModelFileError(f"{source}: head_dim {hf['head_dim']} != hidden_size / heads")
            if bool(hf.get("attention_bias", False)) != bool(hf.get("mlp_bias", False)):
                raise ModelFileError(f"{source}: attention_bias != mlp_bias is not supported")
            return LlamaConfig(
                vocab_size=hf["vocab_size"],
                n_layers=hf["num_hidden_layers"],
                d_model=d,
                n_heads=h,
                n_kv_heads=hf.get("num_key_value_heads") or h,
                d_ff=hf["intermediate_size"],
                max_seq_len=hf.get("max_position_embeddings", 2048),
                norm_eps=hf.get("rms_norm_eps", 1e-6),
                rope_theta=float(theta),
                bias=bool(hf.get("attention_bias", False)),
                tie_embeddings=hf["tie_word_embeddings"],
                dropout=0.0,
                init_std=hf.get("initializer_range", 0.02),
            )
    except KeyError as exc:
        raise ModelFileError(
            f"{source}: missing field {exc.args[0]!r} for model_type {model_type!r}"
        ) from None
    except (ModelConfigError, TypeError, ValueError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{source}: {exc}") from None
    raise ModelFileError(
        f"{source}: model_type {model_type!r} is not supported (expected 'gpt2' or 'llama')"
    )


# --------------------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------------------


def to_hf_state_dict(model: GPT) -> dict[str, Tensor]:
    """Our weights under transformers' keys (contiguous float tensors, GPT-2 Conv1D transposed)."""
    c = model.config
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    out: dict[str, Tensor] = {}
    if c.family == "llama":
        out["model.embed_tokens.weight"] = sd["tok_emb.weight"]
        for i in range(c.n_layers):
            p, q = f"blocks.{i}.", f"model.layers.{i}."
            names = {
                "attn_norm.weight": "input_layernorm.weight",
                "ffn_norm.weight": "post_attention_layernorm.weight",
                "self_attn.q_proj": "self_attn.q_proj",
                "self_attn.k_proj": "self_attn.k_proj",
                "self_attn.v_proj": "self_attn.v_proj",
                "self_attn.out_proj": "self_attn.o_proj",
                "ffn.gate_proj": "mlp.gate_proj",
                "ffn.up_proj": "mlp.up_proj",
                "ffn.down_proj": "mlp.down_proj",
            }
            for ours, theirs in names.items():
                for suffix in ("", ".weight", ".bias"):
                    if (p + ours + suffix) in sd and (ours.endswith("weight") or suffix):
                        out[q + theirs + suffix] = sd[p + ours + suffix]
        out["model.norm.weight"] = sd["norm_f.weight"]
        if not c.tie_embeddings:
            out["lm_head.weight"] = sd["lm_head.weight"]
    else:
        out["transformer.wte.weight"] = sd["tok_emb.weight"]
        out["transformer.wpe.weight"] = sd["pos_emb.weight"]
        for i in range(c.n_layers):
            p, q = f"blocks.{i}.", f"transformer.h.{i}."
            for ours, theirs in (("attn_norm", "ln_1"), ("ffn_norm", "ln_2")):
                out[q + theirs + ".weight"] = sd[p + ours + ".weight"]
                out[q + theirs + ".bias"] = sd[p + ours + ".bias"]
            qkv = [sd[p + f"self_attn.{n}_proj.weight"] for n in "qkv"]
            out[q + "attn.c_attn.weight"] = torch.cat(qkv, dim=0).t()
            out[q + "attn.c_attn.bias"] = torch.cat(
                [sd[p + f"self_attn.{n}_proj.bias"] for n in "qkv"]
            )
            for ours, theirs in (
                ("self_attn.out_proj", "attn.c_proj"),
                ("ffn.up_proj", "mlp.c_fc"),
                ("ffn.down_proj", "mlp.c_proj"),
            ):
                out[q + theirs + ".weight"] = sd[p + ours + ".weight"].t()
                out[q + theirs + ".bias"] = sd[p + ours + ".bias"]
        out["transformer.ln_f.weight"] = sd["norm_f.weight"]
        out["transformer.ln_f.bias"] = sd["norm_f.bias"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def from_hf_state_dict(
    config: ModelConfig, hf: dict[str, Tensor], *, source: str = "model.safetensors"
) -> dict[str, Tensor]:
    """transformers' weights as our `state_dict` keys (checked: missing/unexpected keys raise)."""
    c = config
    hf = dict(hf)
    out: dict[str, Tensor] = {}

    def take(key: str) -> Tensor:
        try:
            return hf.pop(key)
        except KeyError:
            raise ModelFileError(f"{source}: missing weight {key!r}") from None

    if c.family == "llama":
        out["tok_emb.weight"] = take("model.embed_tokens.weight")
        for i in range(c.n_layers):
            p, q = f"blocks.{i}.", f"model.layers.{i}."
            out[p + "attn_norm.weight"] = take(q + "input_layernorm.weight")
            out[p + "ffn_norm.weight"] = take(q + "post_attention_layernorm.weight")
            pairs = (
                ("self_attn.q_proj", "self_attn.q_proj"),
                ("self_attn.k_proj", "self_attn.k_proj"),
                ("self_attn.v_proj", "self_attn.v_proj"),
                ("self_attn.out_proj", "self_attn.o_proj"),
                ("ffn.gate_proj", "mlp.gate_proj"),
                ("ffn.up_proj", "mlp.up_proj"),
                ("ffn.down_proj", "mlp.down_proj"),
            )
            for ours, theirs in pairs:
                out[p + ours + ".weight"] = take(q + theirs + ".weight")
                if c.bias:
                    out[p + ours + ".bias"] = take(q + theirs + ".bias")
        out["norm_f.weight"] = take("model.norm.weight")
        if c.tie_embeddings:
            hf.pop("lm_head.weight", None)
            out["lm_head.weight"] = out["tok_emb.weight"]
        else:
            out["lm_head.weight"] = take("lm_head.weight")
    else:
        out["tok_emb.weight"] = take("transformer.wte.weight")
        out["pos_emb.weight"] = take("transformer.wpe.weight")
        d = c.d_model
        for i in range(c.n_layers):
            p, q = f"blocks.{i}.", f"transformer.h.{i}."
            for ours, theirs in (("attn_norm", "ln_1"), ("ffn_norm", "ln_2")):
                out[p + ours + ".weight"] = take(q + theirs + ".weight")
                out[p + ours + ".bias"] = take(q + theirs + ".bias")
            w, b = take(q + "attn.c_attn.weight"), take(q + "attn.c_attn.bias")
            if w.shape != (d, 3 * d) or b.shape != (3 * d,):
                raise ModelFileError(
                    f"{source}: {q}attn.c_attn has weight {tuple(w.shape)}, bias {tuple(b.shape)}; "
                    f"expected ({d}, {3 * d}) and ({3 * d},)"
                )
            for j, n in enumerate("qkv"):
                out[p + f"self_attn.{n}_proj.weight"] = w[:, j * d : (j + 1) * d].t()
                out[p + f"self_attn.{n}_proj.bias"] = b[j * d : (j + 1) * d]
            for ours, theirs in (
                ("self_attn.out_proj", "attn.c_proj"),
                ("ffn.up_proj", "mlp.c_fc"),
                ("ffn.down_proj", "mlp.c_proj"),
            ):
                out[p + ours + ".weight"] = take(q + theirs + ".weight").t()
                out[p + ours + ".bias"] = take(q + theirs + ".bias")
            for buffer in (q + "attn.bias", q + "attn.masked_bias"):  # old causal-mask buffers
                hf.pop(buffer, None)
        out["norm_f.weight"] = take("transformer.ln_f.weight")
        out["norm_f.bias"] = take("transformer.ln_f.bias")
        hf.pop("lm_head.weight", None)
        out["lm_head.weight"] = out["tok_emb.weight"]
    if hf:
        raise ModelFileError(f"{source}: unexpected weights {sorted(hf)[:8]}")
    return out


# --------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------


def _atomic_dir(directory: Path, write: Callable[[Path], None]) -> Path:
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)  # the modes of any file (0644 under the usual umask)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes the directory private (0700)
        if directory.exists():
            # keep files written next to the model (tokenizer.json, logs), replace ours
            for f in tmp.iterdir():
                os.replace(f, directory / f.name)
            tmp.rmdir()
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def save_pretrained(
    model: GPT,
    directory: str | Path,
    tokenizer: BPETokenizer | None = None,
    *,
    eos_token: str | None = None,
) -> Path:
    """Write a complete transformers model directory into `directory`, atomically.

    Always `config.json` and `model.safetensors` (float32). With a `tokenizer`, also
    `tokenizer.json`, `generation_config.json` and `tokenizer_config.json`, and the token ids in
    `config.json`: the end-of-text token (`eos_token`, default `<|endoftext|>` when the tokenizer
    has it) is the bos, eos and pad token, as in GPT-2, so `generate` stops at the end of a text
    and batched pipelines can pad (on the left, as a decoder-only model needs).
    `tokenizer_config.json` is merged into an existing file by
    [update_tokenizer_config][fms_llm.tokenizer.formats.update_tokenizer_config], so keys others
    wrote (a `chat_template`) survive. Files get the usual modes (`0666 & ~umask`, the
    directory `0777 & ~umask`).

    Raises:
        ValueError: if `eos_token` is not a special token of `tokenizer`.
    """
    directory = Path(directory)
    hf_config = config_to_hf(model.config)
    state = {k: v.float() for k, v in to_hf_state_dict(model).items()}
    eos_id: int | None = None
    if tokenizer is not None:
        specials = tokenizer.special_tokens
        if eos_token is None and "<|endoftext|>" in specials:
            eos_token = "<|endoftext|>"
        if eos_token is not None:
            if eos_token not in specials:
                raise ValueError(
                    f"eos_token {eos_token!r} is not a special token of the tokenizer (its "
                    f"special tokens: {sorted(specials)})"
                )
            eos_id = specials[eos_token]
            hf_config |= {"bos_token_id": eos_id, "eos_token_id": eos_id, "pad_token_id": eos_id}

    def write(tmp: Path) -> None:
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(tmp / "tokenizer.json")
            generation: dict[str, Any] = {"_from_model_config": True}
            if eos_id is not None:
                generation |= {
                    "bos_token_id": eos_id,
                    "eos_token_id": eos_id,
                    "pad_token_id": eos_id,
                }
            (tmp / "generation_config.json").write_text(
                json.dumps(generation, indent=2) + "\n", encoding="utf-8"
            )

    _atomic_dir(directory, write)
    if tokenizer is not None:
        settings: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": model.config.max_seq_len,
            "padding_side": "left",
            "clean_up_tokenization_spaces": False,
        }
        if eos_token is not None:
            settings |= {"bos_token": eos_token, "eos_token": eos_token, "pad_token": eos_token}
        update_tokenizer_config(directory, settings)
    return directory


def load_with_tokenizer(
    directory: str | Path, *, map_location: str | torch.device | None = "cpu"
) -> tuple[GPT, BPETokenizer]:
    """The model ([load_pretrained][fms_llm.models.hf.load_pretrained], in eval mode) and the
    `tokenizer.json` of a saved directory, checked to belong together.

    Raises:
        ModelFileError: no `tokenizer.json`, or a tokenizer whose vocabulary size is not the
            model's (and everything `load_pretrained` raises).
    """
    from fms_llm.tokenizer import BPETokenizer

    tok_path = Path(directory) / "tokenizer.json"
    model = load_pretrained(directory, map_location=map_location).eval()  # checks the device first
    if not tok_path.is_file():
        raise ModelFileError(f"{tok_path} does not exist: the model directory has no tokenizer")
    tokenizer = BPETokenizer.load(tok_path)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ModelFileError(
            f"tokenizer {tok_path} has vocab_size={tokenizer.vocab_size} but the model in "
            f"{directory} has vocab_size={model.config.vocab_size}: they do not belong together"
        )
    return model, tokenizer


def read_config(directory: str | Path) -> ModelConfig:
    """Our config from `directory/config.json`."""
    path = Path(directory) / "config.json"
    if not Path(directory).is_dir():
        raise ModelFileError(f"model directory {directory} does not exist")
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path} does not exist: not a saved model directory") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} is unreadable or not JSON ({exc})") from None
    if not isinstance(hf, dict):
        raise ModelFileError(f"{path} must hold a JSON object, got {type(hf).__name__}")
    return config_from_hf(hf, source=str(path))


# safetensors dtypes by name: bytes per element, and whether we read them (floats only)
_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}  # fmt: skip
_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
_MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header
# allocation allowed beyond twice the file's size (a float16 file becomes float32): the RoPE tables
# and other buffers that a small model holds but does not store
_ALLOCATION_SLACK = 64 << 20


def read_safetensors_header(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    r"""The tensors a safetensors file declares, `name -> (dtype, shape)`, checked against the file.

    Reads only the header: an 8-byte little-endian length $n$, then $n$ bytes of JSON mapping
    each name to its `dtype`, `shape` and `data_offsets` `[begin, end)` into the data that
    follows. Checks that $n$ fits the file, the JSON is an object of well-formed entries, every
    byte count equals $\prod \text{shape} \times \text{itemsize}$ (in Python integers, so a huge
    shape cannot overflow), and the ranges lie inside the file without overlapping. Nothing is
    allocated beyond the header itself.

    Raises:
        ModelFileError: the file is unreadable, truncated, or its header is malformed.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelFileError(
                    f"{path}: {size} bytes is too short for a safetensors file (corrupt)"
                )
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > min(_MAX_HEADER, size - 8):
                raise ModelFileError(
                    f"{path}: header length {n} does not fit the file ({size} bytes); the file is "
                    "truncated, corrupt or not safetensors"
                )
            raw = f.read(n)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(
            f"{path}: the safetensors header is not UTF-8 JSON, the file is corrupt ({exc})"
        ) from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the safetensors header must be a JSON object")
    data_size = size - 8 - n
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("dtype"), str)
            and entry["dtype"] in _DTYPE_BYTES
            and isinstance(entry.get("shape"), list)
            and all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in entry["shape"]
            )
            and isinstance(entry.get("data_offsets"), list)
            and len(entry["data_offsets"]) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in entry["data_offsets"])
        )
        if not ok:
            raise ModelFileError(
                f"{path}: tensor {name!r} has a malformed header entry {str(entry)[:120]}; expected "
                "{'dtype': ..., 'shape': [ints >= 0], 'data_offsets': [begin, end]}"
            )
        dtype, shape = entry["dtype"], tuple(entry["shape"])
        begin, end = entry["data_offsets"]
        if not 0 <= begin <= end <= data_size:
            raise ModelFileError(
                f"{path}: tensor {name!r} spans bytes [{begin}, {end}) of a data section of "
                f"{data_size} bytes: the file is truncated or corrupt"
            )
        if math.prod(shape) * _DTYPE_BYTES[dtype] != end - begin:
            raise ModelFileError(
                f"{path}: tensor {name!r} of shape {list(shape)} and dtype {dtype} needs "
                f"{math.prod(shape) * _DTYPE_BYTES[dtype]} bytes, its offsets give {end - begin}"
            )
        out[name] = (dtype, shape)
        spans.append((begin, end, name))
    spans.sort()
    for (_, end_a, a), (begin_b, end_b, b) in pairwise(spans):
        if begin_b < end_a and end_b > begin_b:
            raise ModelFileError(f"{path}: the data of tensors {a!r} and {b!r} overlap")
    return out


def _expected_hf_shapes(config: ModelConfig) -> tuple[dict[str, tuple[int, ...]], int]:
    """The transformers keys and shapes `config` implies, and the bytes the model will allocate.

    Computed from the config alone (the same layout as
    [to_hf_state_dict][fms_llm.models.hf.to_hf_state_dict]; the round-trip tests hold the two to
    each other), so a config that asks for a terabyte costs nothing to check.
    """
    c = config
    assert c.d_ff is not None  # filled in by the config's checks
    assert c.n_kv_heads is not None
    v, d, f, t = c.vocab_size, c.d_model, c.d_ff, c.max_seq_len
    kv = c.n_kv_heads
    shapes: dict[str, tuple[int, ...]] = {}
    if c.family == "llama":
        hd = c.head_dim
        shapes["model.embed_tokens.weight"] = (v, d)
        for i in range(c.n_layers):
            q = f"model.layers.{i}."
            shapes[q + "input_layernorm.weight"] = (d,)
            shapes[q + "post_attention_layernorm.weight"] = (d,)
            for name, out_f, in_f in (
                ("self_attn.q_proj", c.n_heads * hd, d),
                ("self_attn.k_proj", kv * hd, d),
                ("self_attn.v_proj", kv * hd, d),
                ("self_attn.o_proj", d, c.n_heads * hd),
                ("mlp.gate_proj", f, d),
                ("mlp.up_proj", f, d),
                ("mlp.down_proj", d, f),
            ):
                shapes[q + name + ".weight"] = (out_f, in_f)
                if c.bias:
                    shapes[q + name + ".bias"] = (out_f,)
        shapes["model.norm.weight"] = (d,)
        if not c.tie_embeddings:
            shapes["lm_head.weight"] = (v, d)
        tables = 3 * t * hd  # the RoPE cos, sin and signed-sin tables
    else:
        shapes["transformer.wte.weight"] = (v, d)
        shapes["transformer.wpe.weight"] = (t, d)
        for i in range(c.n_layers):
            q = f"transformer.h.{i}."
            for name, shape in (
                ("ln_1.weight", (d,)),
                ("ln_1.bias", (d,)),
                ("attn.c_attn.weight", (d, 3 * d)),
                ("attn.c_attn.bias", (3 * d,)),
                ("attn.c_proj.weight", (d, d)),
                ("attn.c_proj.bias", (d,)),
                ("ln_2.weight", (d,)),
                ("ln_2.bias", (d,)),
                ("mlp.c_fc.weight", (d, f)),
                ("mlp.c_fc.bias", (f,)),
                ("mlp.c_proj.weight", (f, d)),
                ("mlp.c_proj.bias", (d,)),
            ):
                shapes[q + name] = shape
        shapes["transformer.ln_f.weight"] = (d,)
        shapes["transformer.ln_f.bias"] = (d,)
        tables = 0
    allocated = 4 * (sum(math.prod(x) for x in shapes.values()) + tables)  # float32
    return shapes, allocated


def load_pretrained(
    directory: str | Path, *, map_location: str | torch.device | None = "cpu"
) -> GPT:
    """A [GPT][fms_llm.models.GPT] or [Llama][fms_llm.models.Llama] from a saved directory.

    `map_location` (`None`: CUDA if present, else the CPU) is checked first
    ([fms_dl.torch.seed.resolve_device][]): a device that does not exist here is a `ValueError`
    that says so, not a corrupt-file error from the reader.

    Everything is checked before anything is allocated: `config.json`'s types, ranges and flags
    ([config_from_hf][fms_llm.models.hf.config_from_hf]), then the safetensors header
    ([read_safetensors_header][fms_llm.models.hf.read_safetensors_header]) against the keys and
    shapes the config implies, and the model's size against the file's (at most twice the file,
    a float16 file becoming float32, plus 64 MiB of tables it does not store). After reading, a
    weight holding NaN or infinity is an error.

    Raises:
        ModelFileError: (a `ValueError`) for any problem with the directory's files: missing,
            unreadable, malformed, truncated, unsupported, mis-shaped or non-finite. No other
            exception escapes for any file content.
        ValueError: `map_location` is not a device this machine has.
    """
    map_location = resolve_device(map_location)
    directory = Path(directory)
    config = read_config(directory)
    path = directory / "model.safetensors"
    if not path.is_file():
        raise ModelFileError(f"{path} does not exist")
    try:
        expected, allocated = _expected_hf_shapes(config)
    except (ModelConfigError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{directory / 'config.json'}: {exc}") from None
    file_size = path.stat().st_size
    if allocated > 2 * file_size + _ALLOCATION_SLACK:
        raise ModelFileError(
            f"{directory / 'config.json'} describes a model of {allocated} bytes, but {path} holds "
            f"only {file_size}: the config does not belong to these weights"
        )
    header = read_safetensors_header(path)
    optional = {k for k in header if k.endswith((".attn.bias", ".attn.masked_bias"))}
    if config.tie_embeddings:
        optional.add("lm_head.weight")
    for key, (dtype, shape) in header.items():
        if key in optional:
            continue
        if key not in expected:
            raise ModelFileError(f"{path}: unexpected weight {key!r} for this config")
        if dtype not in _FLOAT_DTYPES:
            raise ModelFileError(
                f"{path}: weight {key!r} has dtype {dtype}; expected one of {list(_FLOAT_DTYPES)}"
            )
        if shape != expected[key]:
            raise ModelFileError(
                f"{path}: weight {key!r} has shape {list(shape)}, the config "
                f"({directory / 'config.json'}) implies {list(expected[key])}"
            )
    missing = sorted(set(expected) - set(header))
    if missing:
        raise ModelFileError(f"{path}: missing weights {missing[:8]}")
    try:
        hf = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path} is corrupt or not a safetensors file ({exc})") from None
    for key, value in hf.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise ModelFileError(
                f"{path}: weight {key!r} holds {bad} NaN or infinite values; the file is corrupt "
                "(or the run that wrote it diverged)"
            )
    state = from_hf_state_dict(config, hf, source=str(path))
    model: GPT = (Llama if config.family == "llama" else GPT)(config)
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight
    return model.to(map_location)
