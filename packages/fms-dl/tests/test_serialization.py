"""Our safetensors writer/reader against the official `safetensors.numpy`, both directions,
and every way a file can be broken."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file as st_load
from safetensors.numpy import save_file as st_save

import fms_dl
from fms_dl import nn
from fms_dl.serialization import SafetensorsError, load_file, load_file_with_metadata, save_file

DTYPES = [
    np.float64,
    np.float32,
    np.float16,
    np.int64,
    np.int32,
    np.int16,
    np.int8,
    np.uint8,
    np.bool_,
]


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {f"t_{np.dtype(d).name}": (rng.standard_normal((3, 2)) * 10).astype(d) for d in DTYPES}
    out["scalar"] = np.array(3.5)
    out["empty"] = np.zeros((0, 4), dtype=np.float32)
    out["non_contiguous"] = np.arange(12.0).reshape(3, 4).T
    return out


def _equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_official_library_reads_what_we_write(tmp_path: Path) -> None:
    tensors = _tensors()
    save_file(tensors, tmp_path / "ours.safetensors", metadata={"format": "np", "step": "3"})
    _equal(st_load(str(tmp_path / "ours.safetensors")), tensors)


def test_we_read_what_the_official_library_writes(tmp_path: Path) -> None:
    tensors = {k: np.ascontiguousarray(v) for k, v in _tensors().items()}
    st_save(tensors, str(tmp_path / "theirs.safetensors"), metadata={"a": "b"})
    loaded, meta = load_file_with_metadata(tmp_path / "theirs.safetensors")
    _equal(loaded, tensors)
    assert meta == {"a": "b"}


def test_module_round_trip_and_torch_state_dict_names(tmp_path: Path) -> None:
    """save_model / load_model restore every parameter and buffer exactly."""
    fms_dl.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    model(fms_dl.randn(4, 1, 4, 4))  # moves the BatchNorm running statistics
    nn.save_model(model, tmp_path / "m.safetensors")
    fms_dl.manual_seed(1)
    other = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    nn.load_model(other, tmp_path / "m.safetensors")
    _equal(other.state_dict(), model.state_dict())
    assert "1.num_batches_tracked" in st_load(str(tmp_path / "m.safetensors"))


def _write_raw(path: Path, header: Any, data: bytes, length: int | None = None) -> None:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("short", "too short"),
        ("header_too_long", "exceeds the file size"),
        ("bad_json", "not valid UTF-8 JSON"),
        ("bad_dtype", "invalid header entry"),
        ("wrong_size", "needs 24 bytes"),
        ("truncated_data", "truncated"),
        ("gap", "gap"),
        ("trailing", "cover 24 bytes"),
        ("not_object", "JSON object"),
        # found by test_fuzz_serialization.py: int64 products wrapped, huge dims overflowed,
        # deep nesting escaped as RecursionError, float dims were truncated silently
        ("product_wraps", "needs 0 bytes|needs 147573952589676412928 bytes"),
        ("dim_past_int64", "each below 2\\*\\*63"),
        ("deep_nesting", "not valid UTF-8 JSON"),
        ("float_dim", "invalid header entry"),
        ("list_metadata", "__metadata__"),
        ("empty_with_huge_dim", "below 2\\*\\*63"),
    ],
)
def test_corrupt_files_give_clear_errors(tmp_path: Path, case: str, match: str) -> None:
    p = tmp_path / "bad.safetensors"
    good = {"x": {"dtype": "F64", "shape": [3], "data_offsets": [0, 24]}}
    data = np.arange(3.0).tobytes()
    if case == "short":
        p.write_bytes(b"\x01\x02")
    elif case == "header_too_long":
        _write_raw(p, good, data, length=10_000)
    elif case == "bad_json":
        _write_raw(p, b"{not json", data)
    elif case == "bad_dtype":
        _write_raw(p, {"x": {"dtype": "F128", "shape": [3], "data_offsets": [0, 24]}}, data)
    elif case == "wrong_size":
        _write_raw(p, {"x": {"dtype": "F64", "shape": [3], "data_offsets": [0, 16]}}, data)
    elif case == "truncated_data":
        _write_raw(p, good, data[:20])
    elif case == "gap":
        _write_raw(p, {"x": {"dtype": "F64", "shape": [2], "data_offsets": [8, 24]}}, data)
    elif case == "trailing":
        _write_raw(p, good, data + b"\x00" * 8)
    elif case == "not_object":
        _write_raw(p, [1, 2], data)
    elif case == "product_wraps":  # 2**32 * 2**32 is 0 in int64
        _write_raw(
            p,
            {
                "x": {"dtype": "F64", "shape": [1 << 32, 1 << 32], "data_offsets": [0, 0]},
                "y": good["x"],
            },
            data,
        )
    elif case == "dim_past_int64":
        _write_raw(p, {"x": {"dtype": "F64", "shape": [1 << 64], "data_offsets": [0, 24]}}, data)
    elif case == "deep_nesting":
        _write_raw(p, b"[" * 100_000 + b"]" * 100_000, data)
    elif case == "float_dim":
        _write_raw(p, {"x": {"dtype": "F64", "shape": [3.0], "data_offsets": [0, 24]}}, data)
    elif case == "empty_with_huge_dim":  # 0 bytes, but numpy cannot make the shape
        _write_raw(
            p,
            {"x": {"dtype": "F64", "shape": [0, 1 << 63], "data_offsets": [0, 0]}, "y": good["x"]},
            data,
        )
    elif case == "list_metadata":
        _write_raw(p, {"__metadata__": [], **good}, data)
    with pytest.raises(SafetensorsError, match=match):
        load_file(p)


def test_truncating_a_real_file_anywhere_is_detected(tmp_path: Path) -> None:
    p = tmp_path / "w.safetensors"
    save_file({"a": np.ones((4, 4)), "b": np.zeros(3, dtype=np.int64)}, p)
    raw = p.read_bytes()
    for cut in (0, 5, 8, 20, len(raw) // 2, len(raw) - 1):
        (tmp_path / "cut").write_bytes(raw[:cut])
        with pytest.raises(SafetensorsError):
            load_file(tmp_path / "cut")


def test_write_is_atomic_when_it_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure mid-write leaves the previous file intact and no temporary file behind."""
    p = tmp_path / "w.safetensors"
    save_file({"a": np.ones(3)}, p)
    before = p.read_bytes()

    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        save_file({"a": np.zeros(1000)}, p)
    monkeypatch.undo()
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["w.safetensors"]


def test_save_rejects_bad_values(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unsupported dtype"):
        save_file({"a": np.array(["x"])}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="numpy array or Tensor"):
        save_file({"a": [1, 2]}, tmp_path / "x.safetensors")  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="metadata"):
        save_file({"a": np.ones(1)}, tmp_path / "x.safetensors", metadata={"a": 1})  # type: ignore[dict-item]
    assert not any(tmp_path.iterdir())
