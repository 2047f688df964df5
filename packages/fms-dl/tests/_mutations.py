"""Mutation helpers for the loader fuzz suites of fms-dl.

`test_fuzz_serialization.py` and `torch/test_fuzz_checkpoint.py` import this file as
`fms_dl_test_mutations`, the name `tests/conftest.py` registers it under.

Each helper takes hypothesis's `st.DataObject` and a valid input and returns a hostile variant:

- `mutate_bytes`: truncation, bit flips, inserted bytes, non-UTF-8 garbage;
- `mutate_safetensors`: a rewritten header (length field past the end, 0 or 2**64 - 1;
  out-of-range, reversed and overlapping `data_offsets`; a dtype whose size disagrees with the
  byte count; shapes that are negative, enormous, or whose product overflows 64 bits; wrong JSON
  types; non-string metadata; invalid or non-UTF-8 JSON), with the byte buffer kept;
- `mutate_json`: one node of a JSON document replaced by a value of another type or range,
  deleted, or a key added.

The budget is `EXAMPLES` (the env var `FMS_FUZZ_EXAMPLES`, 300 by default; `nox -s fuzz` sets
2,000), and `alarm` turns a hang into a failure. Nothing here imports fms_dl: the module is the
recipe, meant to be copied by another package's suite (tests cannot import across packages).
"""

from __future__ import annotations

import json
import os
import signal
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("FMS_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

HOSTILE_INTS = [
    0,
    1,
    7,
    8,
    -1,
    -(1 << 63),
    (1 << 31),
    (1 << 32) + 1,
    (1 << 62),
    (1 << 63) - 1,
    1 << 63,
    (1 << 64) - 1,
    1 << 64,
    1 << 100,
]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.sampled_from(HOSTILE_INTS)
    | st.integers(-(1 << 70), 1 << 70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
DTYPE_NAMES = [
    "F64",
    "F32",
    "F16",
    "BF16",
    "I64",
    "I32",
    "I16",
    "I8",
    "U64",
    "U32",
    "U16",
    "U8",
    "BOOL",
    "F8_E4M3",
    "C64",
    "",
    "f32",
    "F128",
]


@contextmanager
def alarm(seconds: int) -> Iterator[None]:
    """Fail the example (instead of hanging the suite) if it runs longer than `seconds`."""

    def expire(signum: int, frame: Any) -> None:
        raise AssertionError(f"the example ran past {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def mutate_bytes(data: st.DataObject, raw: bytes, protect: int = 0) -> bytes:
    """Truncate, flip 1-8 bits, insert bytes or insert non-UTF-8 garbage (after byte `protect`)."""
    op = data.draw(st.sampled_from(["truncate", "flip", "insert", "garbage"]))
    if op == "truncate" or not raw:
        return raw[: data.draw(st.integers(0, max(len(raw) - 1, 0)))]
    buf = bytearray(raw)
    if op == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            at = data.draw(st.integers(min(protect, len(buf) - 1), len(buf) - 1))
            buf[at] ^= 1 << data.draw(st.integers(0, 7))
        return bytes(buf)
    at = data.draw(st.integers(min(protect, len(buf)), len(buf)))
    extra = data.draw(st.binary(min_size=1, max_size=16))
    if op == "garbage":
        extra = b"\xff\xfe" + extra
    return bytes(buf[:at]) + extra + bytes(buf[at:])


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:64]):
            out += _paths(v, (*prefix, i))
    return out


def mutate_json(data: st.DataObject, doc: Any) -> Any:
    """Replace, delete or add one node anywhere in `doc` (which is not modified)."""
    doc = json.loads(json.dumps(doc))
    path = data.draw(st.sampled_from(_paths(doc)))
    if not path:
        return data.draw(JSON_VALUES)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    op = data.draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    if op == "replace":
        parent[path[-1]] = data.draw(JSON_VALUES)
    elif op == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(max_size=10))] = data.draw(JSON_VALUES)
    else:
        parent.insert(path[-1], data.draw(JSON_VALUES))
    return doc


def split_safetensors(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """A valid safetensors file as (header JSON, byte buffer)."""
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def join_safetensors(header: Any, buffer: bytes, length: int | None = None) -> bytes:
    """Header JSON + buffer as a file; `length` overrides the 8-byte header-length field."""
    encoded = json.dumps(header).encode()
    n = len(encoded) if length is None else length
    return struct.pack("<Q", n % (1 << 64)) + encoded + buffer


def mutate_safetensors(data: st.DataObject, raw: bytes) -> bytes:
    """One hostile rewrite of a valid safetensors file's header (the buffer is kept)."""
    header, buffer = split_safetensors(raw)
    names = [k for k in header if k != "__metadata__"]
    kind = data.draw(
        st.sampled_from(
            ["length", "offsets", "dtype", "shape", "entry", "metadata", "json", "text", "bytes"]
        )
    )
    if kind == "bytes" or not names:
        return mutate_bytes(data, raw)
    if kind == "length":
        encoded = len(json.dumps(header).encode())
        n = data.draw(
            st.sampled_from(
                [
                    0,
                    1,
                    2,
                    encoded - 1,
                    encoded + 1,
                    encoded + len(buffer) + 1,
                    100 * 1024 * 1024 + 1,
                    (1 << 63),
                    (1 << 64) - 1,
                ]
            )
        )
        return join_safetensors(header, buffer, length=n)
    if kind == "text":  # the JSON text itself: truncated, non-UTF-8, not an object
        encoded = json.dumps(header).encode()
        text = data.draw(
            st.sampled_from(
                [
                    encoded[: len(encoded) // 2],
                    b"\xff" + encoded[1:],
                    b"[]",
                    b"null",
                    b"{" * 5000,
                    b"[" * 100000 + b"]" * 100000,
                    encoded.replace(b'"', b"'", 2),
                ]
            )
        )
        return struct.pack("<Q", len(text)) + text + buffer
    if kind == "json":
        return join_safetensors(mutate_json(data, header), buffer)
    header = json.loads(json.dumps(header))
    name = data.draw(st.sampled_from(names))
    entry = header[name]
    if kind == "offsets":
        size = len(buffer)
        begin, end = entry["data_offsets"]
        other = header[data.draw(st.sampled_from(names))]["data_offsets"]
        entry["data_offsets"] = data.draw(
            st.sampled_from(
                [
                    [end, begin],
                    [begin, size + 8],
                    [size, size + (end - begin)],
                    list(other),
                    [begin - 1, end - 1],
                    [begin, begin + (1 << 62)],
                    [-8, end],
                    [begin, end, 0],
                    [float(begin), float(end)],
                    [str(begin), end],
                ]
            )
        )
    elif kind == "dtype":
        entry["dtype"] = data.draw(st.sampled_from(DTYPE_NAMES) | JSON_VALUES)
    elif kind == "shape":
        entry["shape"] = data.draw(
            st.sampled_from(
                [
                    [-1],
                    [1 << 32, 1 << 32],
                    [1 << 62, 4],
                    [(1 << 64) - 1],
                    [0, 1 << 63],
                    [1 << 40],
                    [],
                    [3, -3],
                    [1.5],
                    ["2"],
                    None,
                    7,
                ]
            )
            | st.lists(st.sampled_from(HOSTILE_INTS), max_size=4)
        )
    elif kind == "entry":
        key = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        if data.draw(st.booleans()):
            del entry[key]
        else:
            header[name] = data.draw(JSON_VALUES)
    else:  # metadata
        header["__metadata__"] = data.draw(
            st.sampled_from([{"k": 1}, {"k": None}, [], "text", {"k": ["v"]}]) | JSON_VALUES
        )
    return join_safetensors(header, buffer)
