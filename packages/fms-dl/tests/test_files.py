"""`fms_dl.files`: a write replaces the file whole or not at all, with the usual file mode."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fms_dl.files import atomic_write, atomic_write_bytes, atomic_write_text
from fms_dl.serialization import load_file, save_file


def _leftovers(directory: Path, keep: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != keep)


def test_the_new_content_replaces_the_old_whole(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write_text(target, "old")
    with atomic_write(target) as f:
        f.write(b"new, ")
        assert target.read_text() == "old"  # readers see the old file until the block ends
        f.write("écrit".encode())
    assert target.read_text(encoding="utf-8") == "new, écrit"
    assert _leftovers(tmp_path, "state.json") == []


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failure_inside_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, error: BaseException
) -> None:
    target = tmp_path / "model.bin"
    atomic_write_bytes(target, b"old")

    def interrupted_write() -> None:
        with atomic_write(target) as f:
            f.write(b"half of the new")
            raise error

    with pytest.raises(type(error)):
        interrupted_write()
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path, "model.bin") == []


def test_files_get_the_usual_mode_not_mkstemps_private_one(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a", b"x")
        atomic_write_bytes(tmp_path / "b", b"x", mode=0o600)
        save_file({"w": np.zeros(2)}, tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644
    assert list(load_file(tmp_path / "w.safetensors")) == ["w"]


def test_a_missing_directory_is_an_error_that_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "no" / "such" / "file.txt", "x")
    assert list(tmp_path.iterdir()) == []
