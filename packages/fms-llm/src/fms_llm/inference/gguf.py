r"""GGUF, llama.cpp's single-file model format: a writer and a reader for F32, Q8_0 and Q4_0
tensors, and the export of a saved Llama to it (and back).

A GGUF file is, in order (all little-endian):

1. a header: the magic `GGUF`, the version (3), the number of tensors and of metadata entries;
2. the metadata, typed key/value pairs (`general.architecture = "llama"`,
   `llama.block_count`, the tokenizer's tokens and merges...);
3. one info record per tensor: its name, its dimensions (innermost first, `ne[0]` being the
   length of a row), its type and the offset of its data;
4. padding to `general.alignment` (32 bytes), then the tensors' data, each aligned the same way.

Two block formats of 32 weights along a row, each block with one float16 scale $d$:

- **Q8_0** (34 bytes a block, 8.5 bits a weight): $d = \max_j |x_j| / 127$ and
  $q_j = \operatorname{round}(x_j / d) \in [-127, 127]$ (rounding half away from zero), stored as
  int8; $\hat x_j = d\, q_j$.
- **Q4_0** (18 bytes a block, 4.5 bits a weight): with $m$ the entry of largest magnitude (sign
  kept), $d = m / -8$ and $q_j = \min(15, \lfloor x_j / d + 8.5 \rfloor)$, a nibble standing for
  $q_j - 8$; byte $j$ holds $q_j$ in its low nibble and $q_{j+16}$ in its high one. This is
  `"int4"` of [fms_llm.quantize][] with the scale rounded to float16.

In both the codes come from the float32 scale and only the stored scale is rounded to float16,
as ggml's reference quantiser does: the bytes equal the `gguf` package's
`gguf.quants.quantize` (tested).

**Names and layout for a Llama.** llama.cpp names the weights `token_embd`, `blk.{i}.attn_q`,
`attn_k`, `attn_v`, `attn_output`, `ffn_gate`, `ffn_up`, `ffn_down`, `attn_norm`, `ffn_norm`,
`output_norm` and `output`. Its RoPE rotates adjacent pairs $(x_{2i}, x_{2i+1})$, where Hugging
Face's (and ours) rotates $(x_i, x_{i + d/2})$; so, as llama.cpp's `convert_hf_to_gguf.py`
does, the rows of each head of $W_q$ and $W_k$ are permuted on export (row $i$ of the first half
to $2i$, of the second half to $2i+1$) and permuted back on import.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from fms_dl.files import atomic_write_bytes
from fms_llm.models.gpt import GPT, Llama, LlamaConfig
from fms_llm.models.hf import load_pretrained

__all__ = [
    "GGML_TYPES",
    "GGUFError",
    "GGUFFile",
    "GGUFTensor",
    "dequantize_tensor",
    "export_gguf",
    "import_gguf",
    "quantize_tensor",
    "read_gguf",
    "write_gguf",
]

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGNMENT = 32
BLOCK = 32

GGML_TYPES: dict[str, int] = {"f32": 0, "q4_0": 2, "q8_0": 8}
"""The tensor types this module reads and writes, by name, with their ggml type ids."""
_TYPE_NAMES = {v: k for k, v in GGML_TYPES.items()}
_BLOCK_BYTES = {"q4_0": 18, "q8_0": 34}
# general.file_type (llama_ftype): ALL_F32 = 0, MOSTLY_Q4_0 = 2, MOSTLY_Q8_0 = 7
_FILE_TYPES = {"f32": 0, "q4_0": 2, "q8_0": 7}

# metadata value types
_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL, _STRING, _ARRAY = range(10)
_UINT64, _INT64, _FLOAT64 = 10, 11, 12
_SCALARS: dict[int, str] = {
    _UINT8: "<B", _INT8: "<b", _UINT16: "<H", _INT16: "<h", _UINT32: "<I", _INT32: "<i",
    _FLOAT32: "<f", _BOOL: "<?", _UINT64: "<Q", _INT64: "<q", _FLOAT64: "<d",
}  # fmt: skip

GGUFType = Literal["f32", "q8_0", "q4_0"]


class GGUFError(ValueError):
    """A GGUF file that cannot be read or written (the message names the file and the problem)."""


# --------------------------------------------------------------------------------------------------
# the block quantisers
# --------------------------------------------------------------------------------------------------


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """Round to nearest, halves away from zero (C's `roundf`, which ggml uses).

    Written as $\\lfloor a \rfloor + \\lfloor 2 (a - \\lfloor a \rfloor) \rfloor$ for $a = |x|$, not
    $\\lfloor a + 0.5 \rfloor$: in float32 the sum rounds up for the largest value below a half.
    """
    a = np.abs(x)
    floored = np.floor(a)
    out: np.ndarray = np.sign(x) * (floored + np.floor(2 * (a - floored)))
    return out


def quantize_tensor(x: np.ndarray, type: GGUFType) -> np.ndarray:
    r"""The bytes of `x` as a GGUF tensor of `type`.

    Args:
        x: float32 values, any shape whose last dimension (a row) is a multiple of 32 for the
            block types.
        type: `"f32"`, `"q8_0"` or `"q4_0"`.

    Returns:
        `uint8` array `(*x.shape[:-1], row_bytes)`: for the block types, each row's blocks in
        order, each block its float16 scale then its codes.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if type == "f32":
        return x.view(np.uint8).reshape(*x.shape[:-1], -1)
    if type not in _BLOCK_BYTES:
        raise GGUFError(f"type must be one of {list(GGML_TYPES)}, got {type!r}")
    if x.ndim == 0 or x.shape[-1] % BLOCK:
        raise GGUFError(
            f"{type} needs rows whose length is a multiple of {BLOCK}, got shape {x.shape}"
        )
    blocks = x.reshape(-1, BLOCK)
    if type == "q8_0":
        d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)
        with np.errstate(divide="ignore"):
            inv = np.where(d == 0, np.float32(0), np.float32(1) / d)
        codes = _round_half_away(blocks * inv).astype(np.int8).view(np.uint8)
    else:
        at = np.abs(blocks).argmax(axis=1)[:, None]
        d = np.take_along_axis(blocks, at, axis=1) / np.float32(-8)
        with np.errstate(divide="ignore"):
            inv = np.where(d == 0, np.float32(0), np.float32(1) / d)
        q = np.clip(np.trunc(blocks * inv + np.float32(8.5)), 0, 15).astype(np.uint8)
        codes = q[:, : BLOCK // 2] | (q[:, BLOCK // 2 :] << np.uint8(4))
    scale = d.astype(np.float16).view(np.uint8)
    out = np.concatenate([scale, codes], axis=1)
    return out.reshape(*x.shape[:-1], -1)


def dequantize_tensor(data: np.ndarray, type: GGUFType, shape: Sequence[int]) -> np.ndarray:
    """The float32 values `shape` (numpy order) of a GGUF tensor's bytes `data`."""
    raw = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    shape = tuple(int(s) for s in shape)
    if type == "f32":
        return raw.view(np.float32).reshape(shape).copy()
    nb = _BLOCK_BYTES[type]
    blocks = raw.reshape(-1, nb)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    if type == "q8_0":
        values = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
    else:
        qs = blocks[:, 2:]
        values = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
    return (d * values).reshape(shape)


def _nbytes(type: str, shape: Sequence[int]) -> int:
    n = int(np.prod(shape)) if shape else 1
    return 4 * n if type == "f32" else n // BLOCK * _BLOCK_BYTES[type]


# --------------------------------------------------------------------------------------------------
# the file
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of a GGUF file.

    Attributes:
        name: its name (`blk.0.attn_q.weight`).
        type: `"f32"`, `"q8_0"` or `"q4_0"`.
        shape: the numpy shape (outermost first: `(out_features, in_features)` for a weight;
            the file stores it innermost first).
        data: its bytes, `uint8`.
    """

    name: str
    type: str
    shape: tuple[int, ...]
    data: np.ndarray

    def dequantize(self) -> np.ndarray:
        """The float32 values, `shape`."""
        return dequantize_tensor(self.data, self.type, self.shape)  # type: ignore[arg-type]


@dataclass(frozen=True)
class GGUFFile:
    """A GGUF file's metadata and tensors, as [read_gguf][fms_llm.inference.gguf.read_gguf] returns it."""

    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]


def _pack_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _value_type(value: Any, key: str) -> int:
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, int):
        return _UINT32 if 0 <= value < 2**32 else _INT64
    if isinstance(value, float):
        return _FLOAT32
    if isinstance(value, str):
        return _STRING
    raise GGUFError(
        f"metadata {key!r}: values must be bool, int, float, str or a list of one of them, "
        f"got {type(value).__name__}"
    )


def _pack_value(value: Any, key: str) -> bytes:
    if isinstance(value, list | tuple):
        if not value:
            raise GGUFError(f"metadata {key!r}: an empty list has no element type")
        t = _value_type(value[0], key)
        if t == _UINT32:  # lists of ints (token types) are int32, as llama.cpp reads them
            t = _INT32
        if any(_value_type(v, key) not in (t, _UINT32, _INT64) for v in value):
            raise GGUFError(f"metadata {key!r}: a list must hold values of one type")
        body = b"".join(
            _pack_string(v) if t == _STRING else struct.pack(_SCALARS[t], v) for v in value
        )
        return struct.pack("<IIQ", _ARRAY, t, len(value)) + body
    t = _value_type(value, key)
    body = _pack_string(value) if t == _STRING else struct.pack(_SCALARS[t], value)
    return struct.pack("<I", t) + body


def write_gguf(
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any],
    tensors: Mapping[str, tuple[np.ndarray, GGUFType]],
) -> Path:
    """Write a GGUF (version 3) file, atomically (temp file, fsync, rename).

    Args:
        path: the file to write.
        metadata: key/value pairs; `int` is written as uint32 (int64 outside its range),
            `float` as float32, lists as typed arrays (a list of ints as int32). `general.alignment` is set to 32.
        tensors: name to `(float32 values, type)`, quantised here by
            [quantize_tensor][fms_llm.inference.gguf.quantize_tensor].

    Returns:
        `path`.
    """
    path = Path(path)
    meta = {"general.alignment": ALIGNMENT, **dict(metadata)}
    blobs: list[tuple[str, str, tuple[int, ...], bytes]] = []
    for name, (values, type) in tensors.items():
        arr = np.asarray(values, dtype=np.float32)
        blobs.append((name, type, arr.shape, quantize_tensor(arr, type).tobytes()))
    head = bytearray(GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(blobs), len(meta)))
    for key, value in meta.items():
        head += _pack_string(key) + _pack_value(value, key)
    offset = 0
    for name, kind, shape, blob in blobs:
        dims = shape[::-1] or (1,)
        head += _pack_string(name) + struct.pack("<I", len(dims))
        head += struct.pack(f"<{len(dims)}Q", *dims)
        head += struct.pack("<IQ", GGML_TYPES[kind], offset)
        offset += len(blob) + (-len(blob)) % ALIGNMENT
    head += b"\0" * ((-len(head)) % ALIGNMENT)
    body = b"".join(blob + b"\0" * ((-len(blob)) % ALIGNMENT) for _, _, _, blob in blobs)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, bytes(head) + body)
    return path


class _Cursor:
    """Reads little-endian values from a buffer, with errors that say where the file ended."""

    def __init__(self, buf: bytes, path: Path) -> None:
        self.buf, self.at, self.path = buf, 0, path

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.at + n > len(self.buf):
            raise GGUFError(
                f"{self.path}: truncated: {what} needs {n} bytes at offset {self.at}, the file "
                f"has {len(self.buf)}"
            )
        out = self.buf[self.at : self.at + n]
        self.at += n
        return out

    def unpack(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("<Q", what)
        try:
            return self.take(n, what).decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFError(f"{self.path}: {what} is not valid UTF-8") from None

    def value(self, t: int, key: str) -> Any:
        if t == _STRING:
            return self.string(f"metadata {key!r}")
        if t == _ARRAY:
            et, n = self.unpack("<I", key), self.unpack("<Q", key)
            if et == _ARRAY:
                raise GGUFError(f"{self.path}: metadata {key!r}: nested arrays are not supported")
            return [self.value(et, key) for _ in range(n)]
        if t not in _SCALARS:
            raise GGUFError(f"{self.path}: metadata {key!r} has unknown value type {t}")
        return self.unpack(_SCALARS[t], f"metadata {key!r}")


def read_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Read a GGUF file (versions 2 and 3) with F32, Q8_0 and Q4_0 tensors.

    Raises:
        GGUFError: a missing file, a wrong magic or version, a truncated header or data, an
            unsupported tensor type, or a tensor whose data lies outside the file.
    """
    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"{path} does not exist or is not a file")
    buf = path.read_bytes()
    cur = _Cursor(buf, path)
    magic = cur.take(4, "the magic")
    if magic != GGUF_MAGIC:
        raise GGUFError(f"{path} is not a GGUF file: it starts with {magic!r}, expected b'GGUF'")
    version = cur.unpack("<I", "the version")
    if version not in (2, 3):
        raise GGUFError(f"{path}: GGUF version {version} is not supported (2 or 3 are)")
    n_tensors, n_kv = cur.unpack("<Q", "the tensor count"), cur.unpack("<Q", "the key count")
    if n_tensors > len(buf) or n_kv > len(buf):  # each takes several bytes: cannot fit
        raise GGUFError(f"{path}: header claims {n_tensors} tensors and {n_kv} keys; corrupt")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string("a metadata key")
        metadata[key] = cur.value(cur.unpack("<I", f"the type of {key!r}"), key)
    infos = []
    for _ in range(n_tensors):
        name = cur.string("a tensor name")
        n_dims = cur.unpack("<I", f"the rank of {name!r}")
        if not 1 <= n_dims <= 4:
            raise GGUFError(f"{path}: tensor {name!r} has {n_dims} dimensions (1 to 4 allowed)")
        dims = struct.unpack(f"<{n_dims}Q", cur.take(8 * n_dims, f"the dims of {name!r}"))
        t, offset = cur.unpack("<I", f"the type of {name!r}"), cur.unpack("<Q", name)
        if t not in _TYPE_NAMES:
            raise GGUFError(
                f"{path}: tensor {name!r} has ggml type {t}; this reader supports "
                f"{ {v: k for k, v in _TYPE_NAMES.items()} }"
            )
        infos.append((name, _TYPE_NAMES[t], tuple(int(d) for d in dims[::-1]), offset))
    align = int(metadata.get("general.alignment", ALIGNMENT))
    if align < 1:
        raise GGUFError(f"{path}: general.alignment must be positive, got {align}")
    start = cur.at + (-cur.at) % align
    raw = np.frombuffer(buf, dtype=np.uint8)
    tensors: dict[str, GGUFTensor] = {}
    for name, type, shape, offset in infos:
        if type != "f32" and shape[-1] % BLOCK:
            raise GGUFError(f"{path}: {type} tensor {name!r} has rows of {shape[-1]} values")
        n = _nbytes(type, shape)
        lo = start + offset
        if lo + n > len(buf):
            raise GGUFError(
                f"{path}: truncated: tensor {name!r} needs bytes {lo}..{lo + n}, the file has "
                f"{len(buf)}"
            )
        tensors[name] = GGUFTensor(name, type, shape, raw[lo : lo + n])
    return GGUFFile(metadata, tensors)


# --------------------------------------------------------------------------------------------------
# Llama <-> GGUF
# --------------------------------------------------------------------------------------------------

_LAYER_NAMES = {
    "attn_norm.weight": "attn_norm.weight",
    "ffn_norm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.out_proj.weight": "attn_output.weight",
    "ffn.gate_proj.weight": "ffn_gate.weight",
    "ffn.up_proj.weight": "ffn_up.weight",
    "ffn.down_proj.weight": "ffn_down.weight",
}


def _rope_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """Rows of each head from the half-split RoPE layout to the interleaved one."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def _rope_unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """The inverse of `_rope_permute`."""
    return (
        w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def _tokenizer_metadata(directory: Path, vocab_size: int) -> dict[str, Any]:
    """`tokenizer.ggml.*` from a Hugging Face byte-level BPE `tokenizer.json` (GPT-2 style)."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text(encoding="utf-8"))
    model = doc.get("model", {})
    if model.get("type") != "BPE":
        raise GGUFError(f"{path}: only byte-level BPE tokenizers export, got {model.get('type')}")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [5] * vocab_size  # UNUSED; NORMAL = 1, CONTROL = 3
    for token, i in model.get("vocab", {}).items():
        if 0 <= i < vocab_size:
            tokens[i], types[i] = token, 1
    for added in doc.get("added_tokens", []):
        i = added["id"]
        if 0 <= i < vocab_size:
            tokens[i], types[i] = added["content"], 3 if added.get("special") else 4
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    meta: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
    }
    if merges:
        meta["tokenizer.ggml.merges"] = merges
    return meta


def export_gguf(
    model_dir: str | os.PathLike[str],
    path: str | os.PathLike[str],
    type: GGUFType = "q8_0",
) -> Path:
    r"""Write the Llama saved in `model_dir` as a GGUF file llama.cpp can load.

    Every 2-D weight whose rows are a multiple of 32 long is stored as `type`, the others (and
    the norms) as F32, as llama.cpp's quantiser does. The metadata holds `general.architecture =
    "llama"`, the `llama.*` hyper-parameters (context and embedding length, block count,
    feed-forward length, heads, KV heads, RoPE base and dimension, RMSNorm $\epsilon$, vocabulary
    size), `general.file_type`, the tokenizer (`tokenizer.ggml.model = "gpt2"`, tokens, token
    types, merges) when the directory has a `tokenizer.json`, and the bos/eos/pad ids of its
    `config.json`.

    Args:
        model_dir: a directory written by [save_pretrained][fms_llm.models.hf.save_pretrained].
        path: the `.gguf` file to write (atomically).
        type: `"q8_0"`, `"q4_0"` or `"f32"`.

    Raises:
        GGUFError: an unknown type, or a model that is not a Llama (GPT-2's layout is not
            written here).
    """
    if type not in GGML_TYPES:
        raise GGUFError(f"type must be one of {list(GGML_TYPES)}, got {type!r}")
    directory = Path(model_dir)
    model = load_pretrained(directory)
    c = model.config
    if c.family != "llama":
        raise GGUFError(
            f"{directory}: only Llama-family models export to GGUF here, got family {c.family!r}"
        )
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    assert c.n_kv_heads is not None
    assert c.d_ff is not None
    tensors: dict[str, tuple[np.ndarray, GGUFType]] = {}

    def put(name: str, w: np.ndarray) -> None:
        block_ok = w.ndim == 2 and w.shape[-1] % BLOCK == 0
        tensors[name] = (w, type if block_ok else "f32")

    put("token_embd.weight", sd["tok_emb.weight"])
    for i in range(c.n_layers):
        for ours, theirs in _LAYER_NAMES.items():
            w = sd[f"blocks.{i}.{ours}"]
            if ours.startswith("self_attn.q_proj"):
                w = _rope_permute(w, c.n_heads)
            elif ours.startswith("self_attn.k_proj"):
                w = _rope_permute(w, c.n_kv_heads)
            put(f"blk.{i}.{theirs}", w)
    put("output_norm.weight", sd["norm_f.weight"])
    if not c.tie_embeddings:
        put("output.weight", sd["lm_head.weight"])
    meta: dict[str, Any] = {
        "general.architecture": "llama",
        "general.name": directory.resolve().name,
        "general.file_type": _FILE_TYPES[type],
        "general.quantization_version": 2,
        "llama.context_length": c.max_seq_len,
        "llama.embedding_length": c.d_model,
        "llama.block_count": c.n_layers,
        "llama.feed_forward_length": c.d_ff,
        "llama.attention.head_count": c.n_heads,
        "llama.attention.head_count_kv": c.n_kv_heads,
        "llama.rope.freq_base": float(c.rope_theta),
        "llama.rope.dimension_count": c.head_dim,
        "llama.attention.layer_norm_rms_epsilon": float(c.norm_eps),
        "llama.vocab_size": c.vocab_size,
    }
    meta |= _tokenizer_metadata(directory, c.vocab_size)
    config_path = directory / "config.json"
    hf = json.loads(config_path.read_text(encoding="utf-8"))
    for ours, theirs in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "pad_token_id")):
        if isinstance(hf.get(theirs), int):
            meta[f"tokenizer.ggml.{ours}_token_id"] = hf[theirs]
    return write_gguf(path, meta, tensors)


def _require(meta: Mapping[str, Any], key: str, path: Path, kind: type) -> Any:
    value = meta.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise GGUFError(f"{path}: metadata {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def import_gguf(path: str | os.PathLike[str]) -> GPT:
    """A [Llama][fms_llm.models.Llama] (float32) from a GGUF file written for llama.cpp:
    the hyper-parameters from the `llama.*` metadata, the weights dequantised.

    Raises:
        GGUFError: an unreadable file, another architecture, missing metadata or tensors, or a
            tensor whose shape does not fit the hyper-parameters.
    """
    path = Path(path)
    f = read_gguf(path)
    meta = f.metadata
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise GGUFError(f"{path}: general.architecture is {arch!r}; only 'llama' is imported")
    token_embd = f.tensors.get("token_embd.weight")
    if token_embd is None or len(token_embd.shape) != 2:
        raise GGUFError(f"{path}: missing the 2-D tensor 'token_embd.weight'")
    config = LlamaConfig(
        vocab_size=token_embd.shape[0],
        n_layers=_require(meta, "llama.block_count", path, int),
        d_model=_require(meta, "llama.embedding_length", path, int),
        n_heads=_require(meta, "llama.attention.head_count", path, int),
        n_kv_heads=int(
            meta.get("llama.attention.head_count_kv", meta["llama.attention.head_count"])
        ),
        d_ff=_require(meta, "llama.feed_forward_length", path, int),
        max_seq_len=_require(meta, "llama.context_length", path, int),
        norm_eps=float(_require(meta, "llama.attention.layer_norm_rms_epsilon", path, float)),
        rope_theta=float(meta.get("llama.rope.freq_base", 10000.0)),
        tie_embeddings="output.weight" not in f.tensors,
    )
    assert config.n_kv_heads is not None
    model = Llama(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}

    def get(name: str, ours: str) -> torch.Tensor:
        t = f.tensors.get(name)
        if t is None:
            raise GGUFError(f"{path}: missing tensor {name!r}")
        if t.shape != expected[ours]:
            raise GGUFError(
                f"{path}: tensor {name!r} has shape {list(t.shape)}, the metadata implies "
                f"{list(expected[ours])}"
            )
        return torch.from_numpy(t.dequantize())

    state = {"tok_emb.weight": get("token_embd.weight", "tok_emb.weight")}
    for i in range(config.n_layers):
        for ours, theirs in _LAYER_NAMES.items():
            w = get(f"blk.{i}.{theirs}", f"blocks.{i}.{ours}")
            if ours.startswith("self_attn.q_proj"):
                w = torch.from_numpy(_rope_unpermute(w.numpy(), config.n_heads))
            elif ours.startswith("self_attn.k_proj"):
                w = torch.from_numpy(_rope_unpermute(w.numpy(), config.n_kv_heads))
            state[f"blocks.{i}.{ours}"] = w
    state["norm_f.weight"] = get("output_norm.weight", "norm_f.weight")
    if config.tie_embeddings:
        state["lm_head.weight"] = state["tok_emb.weight"]
    else:
        state["lm_head.weight"] = get("output.weight", "lm_head.weight")
    model.load_state_dict(state, strict=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight
    return model
