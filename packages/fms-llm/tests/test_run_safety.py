"""Runs that share a directory or a cache: one run per run directory (a lock, released even by
SIGKILL), concurrent runs on a cold data cache (one fills it, the others read it), a resume
that logs each step once, and the run's JSON files written atomically."""

from __future__ import annotations

import importlib
import json
import multiprocessing as mp
import os
import shutil
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fms_llm.train import load_config, prepare_data, pretrain
from fms_llm.train.locks import FileLock, LockedError, RunDirLock

Overrides = Callable[..., list[str]]
pretrain_module = importlib.import_module("fms_llm.train.pretrain")  # the function shadows it


def _hold_lock(out_dir: Path, ready: Any, done: Any) -> None:
    lock = RunDirLock(out_dir)
    lock.acquire()
    ready.set()
    done.wait(60)
    os._exit(0)


def test_a_second_run_into_a_busy_directory_is_refused(
    tmp_path: Path, data_cache: Path, overrides: Overrides
) -> None:
    """While another process holds the run directory, `pretrain` refuses before writing
    anything, naming the directory and the process; once that process is killed (SIGKILL: no
    clean-up ran) the lock is gone and the run goes ahead."""
    out = tmp_path / "run"
    ctx = mp.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(out, ready, done))
    holder.start()
    assert ready.wait(60)
    config = load_config("tiny", overrides(out, data_cache))
    with pytest.raises(
        LockedError, match=rf"train.out_dir=.*is in use by another run.*pid {holder.pid}"
    ):
        pretrain(config)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written
    assert holder.pid is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    result = pretrain(config)
    assert (result.out_dir / "summary.json").is_file()


def test_a_blocking_lock_waits_and_a_non_blocking_one_refuses(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with FileLock(path), pytest.raises(LockedError, match=f"pid {os.getpid()}"):
        FileLock(path, blocking=False).acquire()  # another open file: flock conflicts
    with FileLock(path, blocking=False):  # released on exit
        pass


def _prepare_in_child(config_args: list[str], barrier: Any, out: Path) -> None:
    try:
        barrier.wait(60)
        data = prepare_data(load_config("tiny", config_args), progress=False)
        out.write_text(json.dumps([data.shards.n_tokens("train"), data.tokenizer.vocab_size]))
    except BaseException as exc:
        out.write_text(json.dumps({"error": repr(exc)}))
        os._exit(1)
    os._exit(0)


def test_concurrent_runs_share_a_cold_data_cache(tmp_path: Path, overrides: Overrides) -> None:
    """Two processes start on the same empty cache at the same moment: both succeed and read
    the same tokenizer and shards (before the cache lock, the second crashed on the first's
    shard directory or read a half-written tokenizer)."""
    cache = tmp_path / "cold-cache"
    args = overrides(tmp_path / "unused", cache, **{"data.synthetic_docs": 400})
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(2)
    outs = [tmp_path / f"child-{i}.json" for i in range(2)]
    children = [ctx.Process(target=_prepare_in_child, args=(args, barrier, o)) for o in outs]
    for c in children:
        c.start()
    for c in children:
        c.join(300)
    results = [json.loads(o.read_text()) for o in outs]
    assert [c.exitcode for c in children] == [0, 0], results
    assert results[0] == results[1]
    (entry,) = (cache / "data").glob("*/shards")
    assert (entry / "meta.json").is_file()


def test_resume_logs_each_step_once(tmp_path: Path, data_cache: Path, overrides: Overrides) -> None:
    """A run that logged past its last checkpoint and was then killed: the resumed run drops
    the records after the checkpoint (and a torn last line) and logs those steps once."""
    out = tmp_path / "run"
    extra = {"train.max_steps": 12, "train.checkpoint_every": 6, "train.log_every": 3,
             "train.eval_every": 6}  # fmt: skip
    config = load_config("tiny", overrides(out, data_cache, **extra))
    pretrain(config)
    # as if killed after logging step 12 but before its checkpoint: only step 6 remains
    shutil.rmtree(out / "checkpoints" / "step-00000012")
    (out / "checkpoints" / "latest").write_text("step-00000006\n")
    shutil.rmtree(out / "model")
    with open(out / "log.jsonl", "a") as f:
        f.write('{"event": "train", "step": 13, "lo')  # a torn line
    pretrain(config, resume=True)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    counts = Counter((r["event"], r["step"]) for r in records)
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1]
    assert [r["step"] for r in records if r["event"] == "train"] == [3, 6, 9, 12]
    assert [r["step"] for r in records if r["event"] == "eval"] == [6, 12]


def test_run_files_are_written_atomically(
    tmp_path: Path, data_cache: Path, overrides: Overrides, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run.json and summary.json go through the temp-file, fsync, rename writer (a run killed
    while writing leaves the old file or the new one, never half of one)."""
    written: list[str] = []
    real = pretrain_module.atomic_write_text

    def recording(path: str | os.PathLike[str], text: str) -> None:
        written.append(Path(path).name)
        real(path, text)

    monkeypatch.setattr(pretrain_module, "atomic_write_text", recording)
    result = pretrain(load_config("tiny", overrides(tmp_path / "run", data_cache)))
    assert {"run.json", "summary.json"} <= set(written)
    assert json.loads((result.out_dir / "summary.json").read_text())["parameters"] > 0
    assert not list(result.out_dir.glob("*.tmp"))
