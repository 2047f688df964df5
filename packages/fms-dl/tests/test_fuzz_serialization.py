"""Mutation fuzzing of the numpy safetensors reader, `fms_dl.serialization.load_file` (issue 15).

Each example takes a valid file (float32/float64/int64/bool/float16 tensors, an empty and a
0-d one, NaN and infinities, string metadata), mutates it with `_mutations.py` (raw bytes, or a
rewritten header: hostile lengths, offsets, dtypes, shapes, JSON types, invalid or non-UTF-8
JSON) and reads it back. The claims, for `FMS_FUZZ_EXAMPLES` examples (300 by default, 2,000
in `nox -s fuzz`):

- the only exception is the documented `SafetensorsError`;
- no hang (a 30-second alarm per example);
- no allocation beyond the file's size: what loads holds at most as many bytes as the file;
- what loads is exactly what the file's header describes, and every mutation that keeps the
  header and buffer valid reads back the original values (NaN included).
"""

from __future__ import annotations

from pathlib import Path

import fms_dl_test_mutations as mut  # tests/_mutations.py, registered by tests/conftest.py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fms_dl.serialization import SafetensorsError, load_file, load_file_with_metadata, save_file

pytestmark = pytest.mark.fuzz


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    rng = np.random.default_rng(0)
    tensors = {
        "weight": rng.standard_normal((3, 4)).astype(np.float32),
        "nan_inf": np.array([np.nan, np.inf, -np.inf, 0.0], dtype=np.float64),
        "ids": np.arange(5, dtype=np.int64),
        "mask": np.array([True, False, True]),
        "half": rng.standard_normal(6).astype(np.float16),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "scalar": np.array(2.5, dtype=np.float64),
    }
    path = tmp_path_factory.mktemp("st") / "valid.safetensors"
    save_file(tensors, path, metadata={"format": "np", "note": "ünï"})
    return path.read_bytes()


def test_the_unmutated_file_reads_back_with_nan_and_infinities(
    valid_file: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "f.safetensors"
    path.write_bytes(valid_file)
    tensors, meta = load_file_with_metadata(path)
    assert meta == {"format": "np", "note": "ünï"}
    np.testing.assert_array_equal(tensors["nan_inf"], [np.nan, np.inf, -np.inf, 0.0])
    assert tensors["empty"].shape == (0, 3)
    assert tensors["scalar"].shape == ()


@mut.FUZZ
@given(data=st.data())
def test_fuzz_safetensors_reader(
    valid_file: bytes, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """A mutated file: SafetensorsError, or arrays no larger than the file matching its header."""
    if data.draw(st.booleans()):
        raw = mut.mutate_safetensors(data, valid_file)
    else:
        raw = mut.mutate_bytes(data, valid_file)
    path = tmp_path_factory.mktemp("fuzz", numbered=True) / "m.safetensors"
    path.write_bytes(raw)
    with mut.alarm(30):
        try:
            tensors = load_file(path)
        except SafetensorsError:
            return
    assert sum(a.nbytes for a in tensors.values()) <= len(raw)
    header, _ = mut.split_safetensors(raw)
    assert set(tensors) == set(header) - {"__metadata__"}
    for name, arr in tensors.items():
        assert list(arr.shape) == header[name]["shape"]
