r"""Starting the processes of a distributed run and joining them into one process group.

There are two ways in, and both end in the same `torch.distributed` process group:

* **torchrun** (the way to train): `torchrun --nproc-per-node N -m fms_llm.cli train ...`
  starts $N$ copies of the program and tells each who it is through environment variables:
  `RANK` (its index among all processes, $0..W-1$), `WORLD_SIZE` ($W$), `LOCAL_RANK` (its
  index on this machine, which picks its GPU) and `MASTER_ADDR`/`MASTER_PORT` (where rank 0
  keeps the rendezvous store). [init_distributed][fms_llm.distributed.launch.init_distributed]
  reads them and joins (`init_method="env://"`); on several machines the same command runs on
  each with `--nnodes`, `--node-rank` and a shared `--rdzv-endpoint` (see the distributed
  training chapter).
* **spawn** (tests, notebooks, experiments): [spawn][fms_llm.distributed.launch.spawn] starts
  $W$ local processes itself, joins them through a file store in a temporary directory (no port
  to collide with) and returns what each rank's function returned.

The backend follows the device: NCCL on CUDA (one GPU a process, `cuda:LOCAL_RANK`), gloo on
the CPU. Every collective is bounded by the group's timeout, so a rank whose peer died raises
instead of waiting for ever.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from fms_dl.torch import resolve_device

__all__ = [
    "DistEnv",
    "DistributedError",
    "backend_for",
    "barrier",
    "init_distributed",
    "launched_by_torchrun",
    "shutdown",
    "spawn",
]

DEFAULT_TIMEOUT_S = 300.0
"""Seconds a collective may wait for its peers before it raises (the process group's timeout)."""


class DistributedError(ValueError):
    """A distributed run that cannot start (bad environment, device or world size)."""


@dataclass(frozen=True)
class DistEnv:
    """Who this process is in a distributed run.

    Attributes:
        rank: Index of this process among all, $0..W-1$.
        world_size: Number of processes $W$ (1: not distributed).
        local_rank: Index on this machine (which GPU it drives).
        backend: `"nccl"` or `"gloo"` (`None` without a process group).
        device: The device this process trains on.
        owns_group: Whether [init_distributed][fms_llm.distributed.launch.init_distributed]
            created the process group (and [shutdown][fms_llm.distributed.launch.shutdown]
            should destroy it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes logs, checkpoints and the final model."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group is running."""
        return self.backend is not None

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Run the body on rank 0 first, then on the other ranks (after a barrier).

        For work that fills a cache every rank then reads (tokenising a corpus): rank 0 writes
        it once, the others find it ready, and no two processes write the same file.
        """
        if self.is_main:
            yield
            barrier(self)
        else:
            barrier(self)
            yield


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables (`RANK`, `WORLD_SIZE`) are set."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def _env_int(name: str) -> int:
    text = os.environ.get(name, "")
    try:
        value = int(text)
    except ValueError:
        raise DistributedError(
            f"environment variable {name}={text!r} is not an integer; start the run with torchrun"
        ) from None
    return value


def _device_for_rank(requested: str | None, local_rank: int, world_size: int) -> torch.device:
    """The device of `local_rank`: the requested one, with CUDA's index set to the local rank."""
    try:
        device = resolve_device(requested)
    except ValueError as exc:
        raise DistributedError(f"train.device: {exc}") from exc
    if device.type != "cuda":
        return device
    if device.index is not None and world_size > 1:
        raise DistributedError(
            f"train.device={requested!r} names one GPU, but {world_size} processes each drive "
            "their own (cuda:LOCAL_RANK); pass device 'cuda'"
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DistributedError(
            f"LOCAL_RANK={local_rank} needs GPU cuda:{local_rank}, but this machine has {count}; "
            f"start at most {count} processes per node (--nproc-per-node)"
        )
    return torch.device("cuda", local_rank)


def init_distributed(device: str | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistEnv:
    """Join the process group described by torchrun's environment (or stay one process).

    Without torchrun's variables (and no group already running) this is a one-process run:
    `DistEnv(world_size=1)` on `device`. Under torchrun it initialises the group with the backend
    of the device (NCCL on CUDA, gloo on the CPU) and, on CUDA, selects `cuda:LOCAL_RANK`. If a
    group is already initialised (by [spawn][fms_llm.distributed.launch.spawn] or the caller),
    it is used as it is.

    Args:
        device: `train.device`: `None` picks CUDA when present, else the CPU.
        timeout_s: How long any collective may wait for its peers.

    Raises:
        DistributedError: malformed torchrun variables, a device that is not here, more
            processes on a node than GPUs.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        dev = _device_for_rank(device, local, world)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        return DistEnv(rank, world, local, dist.get_backend(), dev, owns_group=False)
    if not launched_by_torchrun():
        try:
            return DistEnv(device=resolve_device(device))
        except ValueError as exc:
            raise DistributedError(f"train.device: {exc}") from exc
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    local = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else rank
    if not 0 <= rank < world:
        raise DistributedError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    dev = _device_for_rank(device, local, world)
    backend = backend_for(dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    kwargs: dict[str, Any] = {"device_id": dev} if dev.type == "cuda" else {}
    dist.init_process_group(
        backend, init_method="env://", timeout=timedelta(seconds=timeout_s), **kwargs
    )
    return DistEnv(rank, world, local, backend, dev, owns_group=True)


def barrier(env: DistEnv) -> None:
    """Wait until every rank gets here (a no-op in a one-process run)."""
    if env.distributed:
        if env.backend == "nccl":
            dist.barrier(device_ids=[env.device.index or 0])
        else:
            dist.barrier()


def shutdown(env: DistEnv) -> None:
    """Destroy the process group if [init_distributed][fms_llm.distributed.launch.init_distributed]
    created it."""
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------------
# spawn: W local processes without torchrun
# --------------------------------------------------------------------------------------------------


def _worker(
    rank: int,
    world_size: int,
    store: str,
    backend: str,
    timeout_s: float,
    threads: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    results: Any,
) -> None:
    try:
        torch.set_num_threads(threads)
        os.environ["LOCAL_RANK"] = str(rank)
        dist.init_process_group(
            backend,
            init_method=f"file://{store}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
        try:
            env = init_distributed("cuda" if backend == "nccl" else "cpu", timeout_s=timeout_s)
            out = fn(env, *args)
        finally:
            dist.destroy_process_group()
        results.put((rank, True, out))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))


def spawn(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    backend: str = "gloo",
    timeout_s: float = 120.0,
    threads: int = 1,
    start_method: str = "spawn",
) -> list[Any]:
    """Run `fn(env, *args)` on `world_size` local processes joined in one process group.

    Each process gets its [DistEnv][fms_llm.distributed.launch.DistEnv] as first argument;
    the return values (which must pickle) come back in rank order. The processes join through
    a file store in a fresh temporary directory, use `threads` intra-op threads each, and are
    all stopped if any of them fails or the whole run exceeds `timeout_s` (also the timeout of
    every collective), so nothing is left running.

    `fn` must be importable by the children (a module-level function) with
    `start_method="spawn"`; `"fork"` starts faster (the parent's imports are inherited) but must
    not be used once the parent has started CUDA or threads of its own.

    Raises:
        DistributedError: `world_size < 1` or an unknown backend.
        RuntimeError: a rank raised (its traceback is in the message) or the run timed out.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise DistributedError(f"spawn: world_size must be an int >= 1, got {world_size!r}")
    if backend not in ("gloo", "nccl"):
        raise DistributedError(f"spawn: backend must be 'gloo' or 'nccl', got {backend!r}")
    ctx = mp.get_context(start_method)
    results = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="fms-dist-") as tmp:
        store = os.path.join(tmp, "store")
        procs = [
            ctx.Process(  # type: ignore[attr-defined]
                target=_worker,
                args=(r, world_size, store, backend, timeout_s, threads, fn, args, results),
                daemon=True,
            )
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
        outputs: dict[int, Any] = {}
        deadline = time.monotonic() + timeout_s
        try:
            while len(outputs) < world_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(
                        f"spawn: {world_size - len(outputs)} of {world_size} ranks did not finish "
                        f"within {timeout_s:.0f} s"
                    )
                try:
                    rank, ok, value = results.get(timeout=min(left, 1.0))
                except queue.Empty:
                    dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
                    if dead and not any(r in outputs for r in dead):
                        time.sleep(0.5)  # a rank's last message may still be in the pipe
                        if results.empty():
                            raise RuntimeError(
                                f"spawn: rank {dead[0]} died with exit code "
                                f"{procs[dead[0]].exitcode} before reporting"
                            ) from None
                    continue
                if not ok:
                    raise RuntimeError(f"spawn: rank {rank} failed:\n{value}")
                outputs[rank] = value
            for p in procs:
                p.join(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join(timeout=5)
            results.close()
    return [outputs[r] for r in range(world_size)]
