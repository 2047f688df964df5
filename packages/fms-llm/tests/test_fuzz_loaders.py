"""Mutation fuzzing of fms-llm's two loaders (issue 15): `tokenizer.json` and the model directory.

Each example takes a valid file, mutates it (truncation, bit flips, inserted or non-UTF-8 bytes,
invalid JSON, a JSON node replaced by a value of another type or range, deleted keys,
catastrophically backtracking patterns, huge merges lists; for safetensors, header lengths past
the end or huge, out-of-range and overlapping offsets, dtype/shape against byte-count mismatches,
overflowing shapes), and loads it. The claims:

- the only exception is the loader's documented one (`TokenizerFileError` from
  `BPETokenizer.load`, `ModelFileError` from `load_pretrained`; a loaded tokenizer's `encode` may
  raise `PatternTimeoutError`), never a `KeyError`, `TypeError`, `MemoryError`, ...;
- no hang: every example runs under a 30-second alarm (hostile patterns get a 0.05 s budget);
- no allocation beyond the file's size: a model that loads holds at most twice the weights file
  (float16 read as float32) plus the 64 MiB allowance for tables it does not store;
- what loads works: a tokenizer gives back any text it encodes.

The size is `FMS_FUZZ_EXAMPLES` examples per loader (300 in the default run, 2,000 in
`nox -s fuzz`).
"""

from __future__ import annotations

import json
import os
import signal
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fms_llm.models import GPT, GPTConfig, Llama, LlamaConfig, ModelFileError, load_pretrained
from fms_llm.tokenizer import BPETokenizer
from fms_llm.tokenizer.bpe import PatternTimeoutError
from fms_llm.tokenizer.formats import TokenizerFileError

EXAMPLES = int(os.environ.get("FMS_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
pytestmark = pytest.mark.fuzz

HOSTILE_PATTERNS = [r"(a|aa)+c", r"(a|a?)+$", r"(\w|\w\w)+!", r"((a|aa)+)+\d", "(", r"\p{Nope}"]
TEXTS = ["a" * 40, "hello <|endoftext|> world, 12345!\n\ttabs", "ünïcödé 😀 text"]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 70), 1 << 70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


@contextmanager
def _alarm(seconds: int) -> Iterator[None]:
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


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:64]):
            out += _paths(v, (*prefix, i))
    return out


def _mutate_json(data: st.DataObject, doc: Any) -> Any:
    """Replace, delete or add one node anywhere in `doc` (a copy)."""
    doc = json.loads(json.dumps(doc))
    path = data.draw(st.sampled_from(_paths(doc)))
    if not path:
        return data.draw(JSON_VALUES)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    op = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if op == "replace":
        parent[path[-1]] = data.draw(JSON_VALUES)
    elif op == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(max_size=10))] = data.draw(JSON_VALUES)
    else:
        parent.insert(path[-1], data.draw(JSON_VALUES))
    return doc


def _mutate_bytes(data: st.DataObject, raw: bytes, protect: int = 0) -> bytes:
    """Truncate, flip bits, insert bytes or write non-UTF-8 garbage (after byte `protect`)."""
    op = data.draw(st.sampled_from(["truncate", "flip", "insert", "garbage"]))
    if op == "truncate":
        return raw[: data.draw(st.integers(0, max(len(raw) - 1, 0)))]
    buf = bytearray(raw)
    if op == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            at = data.draw(st.integers(protect, len(buf) - 1))
            buf[at] ^= 1 << data.draw(st.integers(0, 7))
        return bytes(buf)
    at = data.draw(st.integers(protect, len(buf)))
    extra = data.draw(st.binary(min_size=1, max_size=16))
    if op == "garbage":
        extra = b"\xff\xfe" + extra
    return bytes(buf[:at]) + extra + bytes(buf[at:])


# ---------------------------------------------------------------------- tokenizer.json
@pytest.fixture(scope="module")
def tokenizer_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tok = BPETokenizer.train(
        ["the cat sat on the mat, the dog ran."] * 8, 290, ["<|endoftext|>"], progress=False
    )
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(path)
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def _tokenizer_mutation(data: st.DataObject, doc: dict[str, Any]) -> bytes:
    kind = data.draw(st.sampled_from(["bytes", "json", "json", "pattern", "merges", "specials"]))
    if kind == "bytes":
        return _mutate_bytes(data, json.dumps(doc).encode())
    doc = json.loads(json.dumps(doc))
    if kind == "json":
        doc = _mutate_json(data, doc)
    elif kind == "pattern":
        split = doc["pre_tokenizer"]["pretokenizers"][0]
        split["pattern"] = {
            "Regex": data.draw(st.sampled_from(HOSTILE_PATTERNS) | st.text(max_size=12))
        }
    elif kind == "merges":
        times = data.draw(st.sampled_from([2, 50, 5000]))
        doc["model"]["merges"] = doc["model"]["merges"] * times
    else:
        doc["added_tokens"].append(
            {"id": data.draw(st.integers(-5, 1 << 40)), "content": data.draw(st.text(max_size=6))}
        )
    return json.dumps(doc).encode()


@FUZZ
@given(data=st.data())
def test_fuzz_tokenizer_json(
    tokenizer_doc: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Mutated tokenizer.json: TokenizerFileError or a tokenizer that round-trips; no hang."""
    raw = _tokenizer_mutation(data, tokenizer_doc)
    path = tmp_path_factory.mktemp("fuzz", numbered=True) / "tokenizer.json"
    path.write_bytes(raw)
    with _alarm(30):
        try:
            tok = BPETokenizer.load(path, pattern_timeout=0.05)
        except TokenizerFileError:
            return
        for text in [*TEXTS, data.draw(st.text(max_size=40))]:
            try:
                ids = tok.encode(text, allowed_special="all")
            except PatternTimeoutError:
                continue
            assert tok.decode(ids) == text


# ---------------------------------------------------------------------- model directory
@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("models")
    models = {
        "gpt2": GPT(GPTConfig(vocab_size=64, n_layers=1, d_model=16, n_heads=2, max_seq_len=16)),
        "llama": Llama(
            LlamaConfig(
                vocab_size=64,
                n_layers=1,
                d_model=16,
                n_heads=2,
                n_kv_heads=1,
                d_ff=24,
                max_seq_len=16,
            )
        ),
    }
    out = {}
    for name, model in models.items():
        directory = model.save_pretrained(root / name)
        out[name] = {f: (directory / f).read_bytes() for f in ("config.json", "model.safetensors")}
    return out


def _header(raw: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _with_header(header: Any, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def _safetensors_mutation(data: st.DataObject, raw: bytes) -> bytes:
    header, body = _header(raw)
    kind = data.draw(
        st.sampled_from(["bytes", "length", "json", "shape", "dtype", "offsets", "overlap"])
    )
    if kind == "bytes":
        return _mutate_bytes(data, raw)
    if kind == "length":
        n = data.draw(
            st.sampled_from([0, 1, len(raw), 1 << 62, (1 << 64) - 1]) | st.integers(0, len(raw))
        )
        return struct.pack("<Q", n) + raw[8:]
    if kind == "json":
        return _with_header(_mutate_json(data, header), body)
    names = sorted(k for k in header if k != "__metadata__")
    entry = header[data.draw(st.sampled_from(names))]
    if kind == "shape":
        big = st.sampled_from([0, 1, 1 << 31, 1 << 62, 1 << 64]) | st.integers(0, 64)
        entry["shape"] = data.draw(st.lists(big, max_size=4))
    elif kind == "dtype":
        entry["dtype"] = data.draw(
            st.sampled_from(["F16", "BF16", "F64", "I64", "U8", "BOOL", "F4", ""])
        )
    elif kind == "offsets":
        ints = st.integers(-(1 << 20), 1 << 20) | st.sampled_from(
            [1 << 63, len(body), len(body) + 1]
        )
        entry["data_offsets"] = data.draw(st.lists(ints, min_size=0, max_size=3))
    else:
        other = header[data.draw(st.sampled_from(names))]
        entry["data_offsets"] = list(other["data_offsets"])
    return _with_header(header, body)


@FUZZ
@given(data=st.data())
def test_fuzz_model_directory(
    model_dirs: dict[str, dict[str, bytes]],
    tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject,
) -> None:
    """Mutated config.json or model.safetensors: ModelFileError or a model no larger than the file."""
    files = dict(model_dirs[data.draw(st.sampled_from(sorted(model_dirs)))])
    target = data.draw(st.sampled_from(["config.json", "model.safetensors", "model.safetensors"]))
    if target == "config.json":
        if data.draw(st.booleans()):
            files[target] = _mutate_bytes(data, files[target])
        else:
            doc = _mutate_json(data, json.loads(files[target]))
            files[target] = json.dumps(doc).encode()
    else:
        files[target] = _safetensors_mutation(data, files[target])
    directory = tmp_path_factory.mktemp("fuzz", numbered=True)
    for name, raw in files.items():
        (directory / name).write_bytes(raw)
    with _alarm(30):
        try:
            model = load_pretrained(directory)
        except ModelFileError:
            return
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    assert held <= 2 * len(files["model.safetensors"]) + (64 << 20)
    with torch.no_grad():
        assert torch.isfinite(model(torch.zeros(1, 2, dtype=torch.long))).all()
