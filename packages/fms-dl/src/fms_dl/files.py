"""Files that a crash never leaves half-written: the atomic replace every layer saves through.

A write that is interrupted (a kill, a full disk, a power cut) must leave either the old file or
the new one, never a torn mix that the next run loads. The recipe, the one databases and git
use:

1. write to a temporary file *in the same directory* (the same file system, so the rename in
   step 3 is one atomic operation);
2. flush and `fsync` it, so its bytes are on disk before its name is;
3. `os.replace` it over the target (atomic on POSIX and on Windows);
4. `fsync` the directory, so the rename itself survives a power cut (POSIX; skipped where the
   platform cannot).

On any failure, an exception or `KeyboardInterrupt` included, the temporary file is removed and
the target is untouched. Files get the usual mode (`0o666` less the umask, as `open` gives),
not the private `0o600` of `tempfile.mkstemp`.

    with atomic_write("model.safetensors") as f:   # a binary file object
        f.write(header); f.write(payload)
    atomic_write_text("config.json", json.dumps(config))

Every package above this one saves through these (safetensors, tokenizer and chat-template
files, GGUF, run records, caches, sessions). Only fms-ml, below this package, keeps its own few
lines for its experiment records: a lower layer cannot import a higher one.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "fsync_dir"]


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux)."""
    with contextlib.suppress(OSError, ValueError):
        status = Path("/proc/self/status").read_text()
        found = re.search(r"^Umask:\s*([0-7]+)", status, re.M)
        if found:
            return int(found.group(1), 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (briefly process-wide)
    os.umask(mask)
    return mask


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename in `directory` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[BinaryIO]:
    """Open a temporary binary file that replaces `path` when the block ends without error.

    Args:
        path: The file to write; its directory must exist.
        mode: Permission bits of the new file (default `0o666` less the umask).

    Yields:
        The temporary file, open for binary writing.

    Raises:
        OSError: The directory is missing or not writable, or the disk is full; `path` is then
            untouched and no temporary file is left behind.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, mode: int | None = None
) -> None:
    """Write `data` to `path` atomically ([atomic_write][fms_dl.files.atomic_write])."""
    with atomic_write(path, mode=mode) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int | None = None) -> None:
    """Write `text` to `path` as UTF-8, atomically ([atomic_write][fms_dl.files.atomic_write])."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)
