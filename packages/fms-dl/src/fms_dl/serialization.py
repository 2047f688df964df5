"""Safetensors, written and read from scratch in numpy (no pickle, no third-party code).

The [safetensors](https://github.com/huggingface/safetensors) format is

1. 8 bytes: `N`, the header length, an unsigned little-endian 64-bit integer;
2. `N` bytes: a UTF-8 JSON object mapping each tensor name to
   `{"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}` (offsets relative to the
   byte buffer), plus an optional `"__metadata__"` map of strings to strings; padded with spaces
   so that the buffer starts 8-byte aligned;
3. the byte buffer: each tensor's elements, C-contiguous and little-endian, packed without gaps.

Writes are atomic ([fms_dl.files.atomic_write][]): the bytes go to a temporary file in the same
directory, which is flushed, `fsync`ed and then renamed over the target, so a crash leaves
either the old file or the new one, never half of one. Reads validate everything
(sizes, JSON, dtypes, offsets that tile the buffer exactly) and raise `SafetensorsError` naming
the file and what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fms_dl.engine import Array, Tensor
from fms_dl.files import atomic_write

__all__ = ["SafetensorsError", "load_file", "load_file_with_metadata", "save_file"]

_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAMES = {(dt.kind, dt.itemsize): name for name, dt in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A safetensors file is truncated, corrupt or holds something we cannot represent."""


def _to_array(name: str, value: Any) -> Array:
    arr = value.data if isinstance(value, Tensor) else value
    if not isinstance(arr, np.ndarray):
        raise TypeError(
            f"save_file: tensor {name!r} must be a numpy array or Tensor, got {type(value).__name__}"
        )
    if (arr.dtype.kind, arr.dtype.itemsize) not in _NAMES:
        raise TypeError(f"save_file: tensor {name!r} has unsupported dtype {arr.dtype}")
    return arr


def _serialize(
    tensors: Mapping[str, Any], metadata: Mapping[str, str] | None
) -> tuple[bytes, list[Array]]:
    header: dict[str, Any] = {}
    if metadata is not None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("save_file: metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    arrays = []
    offset = 0
    for name in sorted(tensors):
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"save_file: invalid tensor name {name!r}")
        arr = _to_array(name, tensors[name])
        dtype_name = _NAMES[(arr.dtype.kind, arr.dtype.itemsize)]
        arr = np.asarray(arr, dtype=_DTYPES[dtype_name], order="C")
        header[name] = {
            "dtype": dtype_name,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
        arrays.append(arr)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return raw, arrays


def save_file(
    tensors: Mapping[str, Tensor | Array],
    filename: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write `tensors` to `filename` in the safetensors format, atomically.

    Args:
        tensors: name to numpy array or `Tensor` (any dtype listed in the format; float64 stays float64).
        filename: destination path; its directory must exist.
        metadata: optional string-to-string map stored under `"__metadata__"`.

    Raises:
        TypeError: for a value that is not an array or has an unsupported dtype.
        OSError: if the file cannot be written (the destination is then untouched).
    """
    header, arrays = _serialize(tensors, metadata)
    with atomic_write(filename) as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for arr in arrays:
            f.write(arr.reshape(-1).data if arr.size else b"")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse(buf: bytes, where: str) -> tuple[dict[str, Array], dict[str, str]]:
    if len(buf) < 8:
        raise SafetensorsError(
            f"{where}: file is {len(buf)} bytes, too short for the 8-byte header length (truncated?)"
        )
    (n,) = struct.unpack("<Q", buf[:8])
    if n > _MAX_HEADER or 8 + n > len(buf):
        raise SafetensorsError(
            f"{where}: header length {n} exceeds the file size {len(buf)} bytes (truncated or corrupt)"
        )
    try:
        header = json.loads(buf[8 : 8 + n].decode("utf-8"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError, JSONDecodeError, nesting
        raise SafetensorsError(f"{where}: header is not valid UTF-8 JSON ({e!r:.200})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(
            f"{where}: header must be a JSON object, got {type(header).__name__}"
        )
    data = memoryview(buf)[8 + n :]
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError(f"{where}: __metadata__ must map strings to strings")
    out: dict[str, Array] = {}
    spans = []
    for name, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(info["shape"])
            begin, end = info["data_offsets"]
            if not all(_is_int(v) for v in (*shape, begin, end)):
                raise TypeError("shape and data_offsets must hold integers")
        except (KeyError, TypeError, ValueError) as e:
            raise SafetensorsError(
                f"{where}: tensor {name!r} has an invalid header entry {info!r:.200} ({e!r})"
            ) from None
        if any(s < 0 for s in shape):
            raise SafetensorsError(
                f"{where}: tensor {name!r} has a negative dimension in shape {shape}"
            )
        if len(shape) > 32 or any(s >= 1 << 63 for s in shape):  # numpy's limits (an empty
            raise SafetensorsError(  # tensor's other dims are free to be absurd)
                f"{where}: tensor {name!r} has shape {shape!s:.200}: at most 32 dims, each "
                "below 2**63"
            )
        # Python integers: a product of hostile dimensions cannot overflow (int64 would wrap
        # [2**32, 2**32] to 0 bytes). Nothing is allocated until it equals the span's length.
        expected = math.prod(shape) * dtype.itemsize
        if not 0 <= begin <= end or end - begin != expected:
            raise SafetensorsError(
                f"{where}: tensor {name!r} with dtype {info['dtype']} and shape {shape} needs "
                f"{expected} bytes but data_offsets are [{begin}, {end}]"
            )
        if end > len(data):
            raise SafetensorsError(
                f"{where}: tensor {name!r} ends at byte {end} but the data buffer has only "
                f"{len(data)} bytes (truncated file)"
            )
        spans.append((begin, end))
        try:
            arr = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape)
        except ValueError as e:  # a shape numpy cannot represent, even with no elements
            raise SafetensorsError(
                f"{where}: tensor {name!r} has shape {shape!s:.200} ({e})"
            ) from None
        out[name] = arr.astype(dtype.newbyteorder("="), copy=True)
    spans.sort()
    pos = 0
    for begin, end in spans:
        if begin != pos:
            raise SafetensorsError(f"{where}: data_offsets overlap or leave a gap at byte {pos}")
        pos = end
    if pos != len(data):
        raise SafetensorsError(
            f"{where}: the tensors cover {pos} bytes but the data buffer has {len(data)} (corrupt)"
        )
    return out, metadata


def load_file(filename: str | os.PathLike[str]) -> dict[str, Array]:
    """Read a safetensors file into a dict of (writable, native-endian) numpy arrays.

    Every hostile input is a `SafetensorsError` (the loader's one error class for a bad file;
    the fuzz suite `tests/test_fuzz_serialization.py` holds it to that). Shapes are checked
    against the byte spans with exact integer arithmetic before any array is made, so nothing
    larger than the file is ever allocated. Values are returned as stored: NaN and infinities
    are valid floats and load as such.

    Raises:
        SafetensorsError: if the file is truncated, the header length runs past the end, the
            header is not UTF-8 JSON of the right shape (an object of `{"dtype", "shape",
            "data_offsets"}` entries with integer shapes and offsets, string metadata), a dtype
            is unknown, a shape disagrees with its byte count, or the offsets do not tile the
            data buffer exactly.
        FileNotFoundError: if there is no such file.
    """
    return load_file_with_metadata(filename)[0]


def load_file_with_metadata(
    filename: str | os.PathLike[str],
) -> tuple[dict[str, Array], dict[str, str]]:
    """Like `load_file`, also returning the `__metadata__` map."""
    buf = Path(filename).read_bytes()
    return _parse(buf, f"load_file({str(filename)!r})")
