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
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from fms_dl.torch import resolve_device
from fms_llm.models.gpt import GPT, GPTConfig, Llama, LlamaConfig, ModelConfig, ModelConfigError

__all__ = [
    "ModelFileError",
    "config_from_hf",
    "config_to_hf",
    "from_hf_state_dict",
    "load_pretrained",
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


def config_from_hf(hf: dict[str, Any], *, source: str = "config.json") -> ModelConfig:
    """Our config from a transformers `config.json` dict (`gpt2` or `llama`)."""
    model_type = hf.get("model_type")
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
            for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
                if hf.get(flag):
                    raise ModelFileError(f"{source}: {flag}=true is not supported")
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
            rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
            if rope.get("rope_type", "default") != "default":
                raise ModelFileError(f"{source}: rope_type {rope['rope_type']!r} is not supported")
            theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
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
                tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
                dropout=0.0,
                init_std=hf.get("initializer_range", 0.02),
            )
    except KeyError as exc:
        raise ModelFileError(
            f"{source}: missing field {exc.args[0]!r} for model_type {model_type!r}"
        ) from None
    except ModelConfigError as exc:
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
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
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


def save_pretrained(model: GPT, directory: str | Path) -> Path:
    """Write `config.json` and `model.safetensors` (float32) into `directory`.

    Each file is written to a temporary name and renamed into place.
    """
    directory = Path(directory)
    hf_config = config_to_hf(model.config)
    state = {k: v.float() for k, v in to_hf_state_dict(model).items()}

    def write(tmp: Path) -> None:
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})

    return _atomic_dir(directory, write)


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


def load_pretrained(
    directory: str | Path, *, map_location: str | torch.device | None = "cpu"
) -> GPT:
    """A [GPT][fms_llm.models.GPT] or [Llama][fms_llm.models.Llama] from a saved directory.

    `map_location` (`None`: CUDA if present, else the CPU) is checked first
    ([fms_dl.torch.seed.resolve_device][]): a device that does not exist here is a `ValueError`
    that says so, not a corrupt-file error from the reader.
    """
    map_location = resolve_device(map_location)
    directory = Path(directory)
    config = read_config(directory)
    path = directory / "model.safetensors"
    if not path.is_file():
        raise ModelFileError(f"{path} does not exist")
    try:
        hf = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is corrupt or not a safetensors file ({exc})") from None
    state = from_hf_state_dict(config, hf, source=str(path))
    model: GPT = (Llama if config.family == "llama" else GPT)(config)
    expected = model.state_dict()
    for key, value in state.items():
        if key in expected and expected[key].shape != value.shape:
            raise ModelFileError(
                f"{path}: weight for {key} has shape {tuple(value.shape)}, the config "
                f"({directory / 'config.json'}) implies {tuple(expected[key].shape)}"
            )
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ModelFileError(f"{path}: missing weights {missing[:8]}")
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight
    return model.to(map_location)
