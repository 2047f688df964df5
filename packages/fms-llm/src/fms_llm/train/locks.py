"""Advisory file locks: one run per run directory, one writer per data-cache entry.

Two runs started into the same `train.out_dir` would interleave their checkpoints and logs and
overwrite each other's model; two runs sharing a cold data cache would both train the tokenizer
and both write the shards, and the second to finish would find the first's directory in its way.
Both are prevented with an operating-system lock on a file:

- `flock` on POSIX, `msvcrt.locking` on Windows: the lock belongs to the open file, so it is
  released when the process ends however it ends (a `kill -9` leaves no stale lock to delete by
  hand, unlike a lock made of a file that merely exists);
- the lock file holds the holder's process id, for the error message only.

[RunDirLock][fms_llm.train.locks.RunDirLock] refuses at once (a second run into a busy directory
is a mistake to report); [FileLock][fms_llm.train.locks.FileLock]`(blocking=True)` waits (the
second run then finds the cache filled by the first, and reads it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import TracebackType

from fms_llm.train.config import ConfigError

__all__ = ["FileLock", "LockedError", "RunDirLock"]


class LockedError(ConfigError):
    """The lock is held by another process (the message names the file and that process).

    A [ConfigError][fms_llm.train.config.ConfigError] (so a `ValueError`, which the CLI reports
    as a one-line error): the fix is a setting, another `train.out_dir`."""


def _try_lock(fd: int, blocking: bool) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        mode = msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK
        try:
            msvcrt.locking(fd, mode, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


class FileLock:
    """An exclusive lock on `path` (created if missing), as a context manager.

    Args:
        path: the lock file.
        blocking: wait for the lock (`True`) or raise [LockedError][fms_llm.train.locks.LockedError]
            at once if another process holds it (`False`).
    """

    def __init__(self, path: str | Path, *, blocking: bool = True) -> None:
        self.path = Path(path)
        self.blocking = blocking
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (waiting if `blocking`) and write this process's id into the file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd, self.blocking):
            try:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise LockedError(f"{self.path} is locked by another process (pid {holder})")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (closing the file releases it); the file itself stays."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class RunDirLock(FileLock):
    """The lock of a run directory, `out_dir/.lock`, taken without waiting: a second run into
    the same directory raises [LockedError][fms_llm.train.locks.LockedError] before it writes
    anything."""

    def __init__(self, out_dir: str | Path) -> None:
        super().__init__(Path(out_dir) / ".lock", blocking=False)

    def acquire(self) -> None:
        try:
            super().acquire()
        except LockedError as exc:
            raise LockedError(
                f"train.out_dir={str(self.path.parent)!r} is in use by another run ({exc}); "
                "wait for it to finish or choose another --out-dir"
            ) from None
