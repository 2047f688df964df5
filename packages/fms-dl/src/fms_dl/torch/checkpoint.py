"""Atomic, verified checkpoints in safetensors: model, optimiser, RNG states and a JSON manifest.

A run directory looks like this:

```text
run/
  latest                      # one line: "step-00000200" (replaced atomically)
  step-00000100/
    model.safetensors         # model.state_dict() (tied weights stored once)
    optimizer.safetensors     # optimizer state tensors; param groups and scalars as JSON metadata
    rng.safetensors           # every RNG state as uint8 tensors (fms_dl.torch.seed); a
                              # distributed run stores rank r's under "rank{r}/" (rank 0 bare)
    state.json                # step, extra, format version, size and sha256 of every file
  step-00000200/
    ...
```

**Never pickle.** `torch.save`/`torch.load` run arbitrary code from the file; safetensors holds
only tensors and a JSON header. Everything that is not a tensor (step counts, hyper-parameters of
each parameter group) is JSON.

**Atomic.** A step directory is first written as a hidden temporary sibling; every file is
fsynced, then the directory itself, then it is renamed into place and the parent is fsynced. A
crash at any point leaves either the old state or the new one, never a half-written checkpoint
that looks complete: a step directory exists only once all its files are durable. The `latest`
pointer is then replaced the same way (write a temporary file, fsync, `os.replace`, fsync the
parent). Stale temporaries from a crashed writer are removed by the next save.

**Verified.** `state.json` records the size and SHA-256 of each file; loading checks them before
touching the model, then checks keys and shapes strictly, and only then copies anything, so a
failed load leaves the model, optimiser and RNG as they were.

**Distributed runs** save *consolidated* state: `save_checkpoint` also takes a model state dict
and an optimiser state dict (gathered from the shards by the caller, e.g.
[fms_llm.distributed][]) instead of the live objects, and the RNG states of every rank. The
files are then exactly those of a one-process run, so a run resumes at any world size.
[read_checkpoint][fms_dl.torch.checkpoint.read_checkpoint] verifies and decodes a checkpoint
without a model to load it into; its
[check_model][fms_dl.torch.checkpoint.CheckpointContents.check_model] and
[check_optimizer][fms_dl.torch.checkpoint.CheckpointContents.check_optimizer] match it against
the *global* shapes of a sharded model before any shard is touched.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor, nn

from fms_dl.torch.seed import _parsed_rng_state, capture_rng_state, restore_rng_state

__all__ = [
    "CheckpointContents",
    "CheckpointError",
    "latest_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]

FORMAT = "fms-dl-checkpoint"
FORMAT_VERSION = 1
_MODEL = "model.safetensors"
_OPTIM = "optimizer.safetensors"
_RNG = "rng.safetensors"
_STATE = "state.json"
_LATEST = "latest"
_TMP_PREFIX = ".tmp-"
_STEP_DIR = re.compile(r"step-[0-9]+")
_MAX_POINTER = 4096  # bytes: a `latest` pointer holds one step directory name


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt or does not match the model/optimiser.

    The one error class of reading a checkpoint: every malformed input (a truncated or
    bit-flipped file, a manifest or pointer that is not UTF-8 JSON or holds values of the wrong
    type, a safetensors header with hostile lengths or offsets, an optimiser or RNG state of the
    wrong structure) raises it, never a bare `KeyError`/`TypeError`. The message names the file
    (and the key, where one is at fault). It subclasses `ValueError`.
    """


def _step_name(step: int) -> str:
    return f"step-{step:08d}"


def _fsync(fd: int) -> None:
    """`os.fsync`, kept as a module function so that crash tests can intercept it."""
    os.fsync(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        _fsync(fd)
    finally:
        os.close(fd)


def _write_durable(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        _fsync(f.fileno())


# ---------------------------------------------------------------------------------------------
# Flattening: model and optimiser state <-> {key: tensor} + JSON
# ---------------------------------------------------------------------------------------------


def _model_tensors(
    state: Mapping[str, Any],
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """A model state dict with tied tensors stored once: (tensors, {alias: stored key})."""
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    storages: set[int] = set()
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise TypeError(
                f"save_checkpoint: model.state_dict()[{key!r}] is a {type(value).__name__}; "
                "only tensors can be stored in safetensors"
            )
        t = value.detach()
        ident = (
            t.untyped_storage().data_ptr(),
            t.storage_offset(),
            tuple(t.shape),
            tuple(t.stride()),
            t.dtype,
        )
        if t.numel() > 0 and ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        ptr = t.untyped_storage().data_ptr()
        # a view sharing storage with an already stored tensor must be copied for safetensors
        shared = ptr in storages and t.numel() > 0
        tensors[key] = (t.contiguous().clone() if shared else t.contiguous()).cpu()
        storages.add(ptr)
    return tensors, aliases


def _encode(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """JSON-able copy of `obj`, with every tensor moved to `tensors[<path>]` and tuples tagged."""
    if isinstance(obj, Tensor):
        t = obj.detach().contiguous().cpu()
        ptr = t.untyped_storage().data_ptr()
        if t.numel() > 0 and any(
            v.untyped_storage().data_ptr() == ptr for v in tensors.values() if v.numel() > 0
        ):
            t = t.clone()  # safetensors refuses tensors that share memory
        tensors[prefix] = t
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        if not all(isinstance(k, str | int) for k in obj):
            raise TypeError(f"save_checkpoint: optimizer state at {prefix!r} has non-str/int keys")
        items = [[k, _encode(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]
        return {"__dict__": items}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(
        f"save_checkpoint: optimizer state at {prefix!r} holds a {type(obj).__name__}, "
        "which is neither a tensor nor JSON-serialisable"
    )


def _decode(obj: Any, tensors: dict[str, Tensor], file: Path) -> Any:
    """Invert `_encode`; any structure `_encode` cannot have written is a `CheckpointError`."""
    if isinstance(obj, list):
        return [_decode(v, tensors, file) for v in obj]
    if isinstance(obj, dict):
        if len(obj) != 1:
            raise CheckpointError(
                f"{file}: unexpected JSON object {sorted(obj)} in optimizer metadata"
            )
        ((tag, value),) = obj.items()
        if tag == "__tensor__":
            if not isinstance(value, str) or value not in tensors:
                raise CheckpointError(f"{file}: optimizer tensor {value!r} is missing")
            return tensors[value]
        if tag == "__tuple__" and isinstance(value, list):
            return tuple(_decode(v, tensors, file) for v in value)
        if tag == "__dict__" and isinstance(value, list):
            out = {}
            for item in value:
                if not (
                    isinstance(item, list) and len(item) == 2 and isinstance(item[0], str | int)
                ):
                    raise CheckpointError(
                        f"{file}: optimizer metadata has a malformed dict item {item!r:.80}"
                    )
                out[item[0]] = _decode(item[1], tensors, file)
            return out
        raise CheckpointError(f"{file}: unexpected JSON object {sorted(obj)} in optimizer metadata")
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise CheckpointError(f"{file}: unexpected {type(obj).__name__} in optimizer metadata")


def _safetensors_bytes(tensors: dict[str, Tensor], metadata: dict[str, str]) -> bytes:
    return bytes(safetensors.torch.save(tensors, metadata=metadata))


def _read_safetensors(path: Path, data: bytes) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Parse a safetensors blob: (tensors, header metadata); any failure is a CheckpointError."""
    try:
        (n,) = struct.unpack("<Q", data[:8])
        if n > len(data) - 8:
            raise ValueError(f"header length {n} runs past the end of the {len(data)}-byte file")
        header = json.loads(data[8 : 8 + n])
        metadata = header.get("__metadata__", {}) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise ValueError("__metadata__ must map strings to strings")
        tensors = safetensors.torch.load(data)
    except Exception as exc:  # struct, JSON, and the safetensors parser's own errors
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    return dict(tensors), dict(metadata)


def _json_meta(file: Path, meta: Mapping[str, str], key: str, default: str) -> Any:
    """`json.loads(meta[key])` (or of `default`), a `CheckpointError` if it is not JSON."""
    try:
        return json.loads(meta.get(key, default))
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{file}: metadata {key!r} is not valid JSON ({exc})") from None


# ---------------------------------------------------------------------------------------------
# Save
# ---------------------------------------------------------------------------------------------


def _rank_prefix(rank: int) -> str:
    """Key prefix of rank `rank`'s RNG states in `rng.safetensors` (rank 0's keys are bare)."""
    return "" if rank == 0 else f"rank{rank}/"


def save_checkpoint(
    directory: str | Path,
    *,
    model: nn.Module | Mapping[str, Tensor],
    optimizer: torch.optim.Optimizer | Mapping[str, Any] | None = None,
    step: int,
    extra: dict[str, Any] | None = None,
    rng: bool | Sequence[Mapping[str, Tensor]] = True,
    keep_last: int | None = None,
    param_shapes: Sequence[Sequence[int]] | None = None,
) -> Path:
    """Write `directory/step-{step:08d}/` atomically and point `directory/latest` at it.

    Args:
        directory: The run directory (created if needed).
        model: A module, whose `state_dict()` goes to `model.safetensors`, or a state dict
            itself (a distributed run's consolidated weights). Tied parameters are stored once.
        optimizer: An optimiser, whose `state_dict()` goes to `optimizer.safetensors`: every
            tensor under a key such as `optim.state.3.exp_avg`, everything else (param groups,
            integer step counts) as JSON in the file's metadata, with the shape of every
            parameter (checked on load). Or an optimiser state dict itself, with
            `param_shapes`.
        step: The number of optimiser steps completed (>= 0).
        extra: JSON-serialisable data stored in `state.json` and returned by `load_checkpoint`.
        rng: `True`: save this process's RNG states
            ([capture_rng_state][fms_dl.torch.seed.capture_rng_state]); `False`: none; a
            sequence: the states of every rank of a distributed run, rank 0 first.
        keep_last: If set, delete all but the newest `keep_last` step directories afterwards.
        param_shapes: The (global) shape of every parameter of the optimiser, in the order of
            its parameter groups; required when `optimizer` is a state dict.

    Returns:
        The step directory.

    Raises:
        TypeError: a state entry is neither a tensor nor JSON-serialisable.
        ValueError: `step` or `keep_last` is invalid, or an optimiser state dict without
            `param_shapes`.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"save_checkpoint: step must be an int >= 0, got {step!r}")
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"save_checkpoint: keep_last must be >= 1 or None, got {keep_last!r}")
    if isinstance(optimizer, Mapping) and param_shapes is None:
        raise ValueError(
            "save_checkpoint: optimizer is a state dict, so param_shapes (the shape of every "
            "parameter, in group order) is required"
        )
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    try:
        extra_json = json.dumps(extra or {})
    except TypeError as exc:
        raise TypeError(f"save_checkpoint: extra must be JSON-serialisable ({exc})") from exc

    # Build every blob in memory first: a serialisation error then writes nothing at all.
    tensors, aliases = _model_tensors(model.state_dict() if isinstance(model, nn.Module) else model)
    blobs = {_MODEL: _safetensors_bytes(tensors, {"aliases": json.dumps(aliases)})}
    if optimizer is not None:
        opt_tensors: dict[str, Tensor] = {}
        if isinstance(optimizer, torch.optim.Optimizer):
            sd: Mapping[str, Any] = optimizer.state_dict()
            shapes = [list(p.shape) for g in optimizer.param_groups for p in g["params"]]
        else:
            assert param_shapes is not None  # checked above
            sd, shapes = optimizer, [list(s) for s in param_shapes]
        meta = _encode(dict(sd), "optim", opt_tensors)
        opt_meta = {"state_dict": json.dumps(meta), "param_shapes": json.dumps(shapes)}
        blobs[_OPTIM] = _safetensors_bytes(opt_tensors, opt_meta)
    rng_ranks = 0
    if rng is True:
        blobs[_RNG], rng_ranks = _safetensors_bytes(capture_rng_state(), {}), 1
    elif not isinstance(rng, bool):
        states = {
            _rank_prefix(r) + k: v.detach().cpu().contiguous()
            for r, state in enumerate(rng)
            for k, v in state.items()
        }
        blobs[_RNG], rng_ranks = _safetensors_bytes(states, {}), len(rng)

    for stale in root.glob(f"{_TMP_PREFIX}*"):  # left behind by a writer that crashed
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)

    final = root / _step_name(step)
    tmp = root / f"{_TMP_PREFIX}{_step_name(step)}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        files = {}
        for name, data in blobs.items():
            _write_durable(tmp / name, data)
            files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        state = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "step": step,
            "extra": json.loads(extra_json),
            "rng_ranks": rng_ranks,
            "files": files,
            "torch_version": torch.__version__,
        }
        _write_durable(tmp / _STATE, json.dumps(state, indent=1).encode())
        _fsync_dir(tmp)
        if final.exists():  # re-saving a step: move the old copy aside, then drop it
            old = root / f"{_TMP_PREFIX}old-{_step_name(step)}-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    pointer = root / f"{_TMP_PREFIX}latest-{uuid.uuid4().hex[:8]}"
    try:
        _write_durable(pointer, (final.name + "\n").encode())
        os.replace(pointer, root / _LATEST)
        _fsync_dir(root)
    except BaseException:
        pointer.unlink(missing_ok=True)
        raise

    if keep_last is not None:
        for old_dir in _step_dirs(root)[:-keep_last]:
            if old_dir != final:
                shutil.rmtree(old_dir, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------------------------
# Find and load
# ---------------------------------------------------------------------------------------------


def _step_dirs(root: Path) -> list[Path]:
    """Complete step directories (they exist only after their atomic rename), oldest first."""
    found = []
    for p in root.glob("step-*"):
        suffix = p.name[5:]
        if p.is_dir() and suffix.isdigit():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest checkpoint of a run directory, or `None` if it holds none.

    The `latest` pointer is authoritative. If it is absent or names a directory that does not
    exist (a crash between the directory rename and the pointer update, or manual deletion),
    the highest-numbered complete `step-*` directory is returned instead.

    Raises:
        CheckpointError: the pointer exists but is not a step directory's name: not UTF-8,
            longer than a name can be, or anything but `step-<digits>` (a corrupt pointer
            is reported, not silently replaced by a guess).
    """
    root = Path(directory)
    if not root.is_dir():
        return None
    pointer = root / _LATEST
    if pointer.is_file():
        try:
            with open(pointer, "rb") as f:
                raw = f.read(_MAX_POINTER + 1)
            name = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"{pointer}: the pointer is not UTF-8 text ({exc})") from None
        except OSError as exc:
            raise CheckpointError(f"{pointer}: unreadable pointer ({exc})") from None
        if len(raw) > _MAX_POINTER or not _STEP_DIR.fullmatch(name):
            raise CheckpointError(
                f"{pointer}: expected one line 'step-<digits>', got {raw[:60]!r}"
                + (" (truncated)" if len(raw) > 60 else "")
            )
        if (root / name).is_dir():
            return root / name
    dirs = _step_dirs(root)
    return dirs[-1] if dirs else None


def _read_verified(step_dir: Path, name: str, files: dict[str, Any]) -> bytes:
    path = step_dir / name
    if name not in files:
        raise CheckpointError(f"{step_dir / _STATE}: no entry for {name}")
    if not path.is_file():
        raise CheckpointError(f"{path}: file is missing")
    expected = files[name]
    size = path.stat().st_size
    if size != expected["size"]:  # before reading: a file is never read past its recorded size
        raise CheckpointError(
            f"{path}: size {size} bytes, expected {expected['size']} (truncated or replaced)"
        )
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected["sha256"]:
        raise CheckpointError(
            f"{path}: sha256 {digest} does not match {expected['sha256']} (corrupt)"
        )
    return data


def _is_count(value: Any) -> bool:
    """An int >= 0 that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _manifest(step_dir: Path) -> dict[str, Any]:
    """`state.json`, read and checked field by field (types and ranges)."""
    state_path = step_dir / _STATE
    try:
        state = json.loads(state_path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: UTF-8 and JSON errors
        raise CheckpointError(f"{state_path}: unreadable manifest ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{state_path}: not an {FORMAT} manifest")
    if state.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{state_path}: format version {state.get('version')!r}, this code reads {FORMAT_VERSION}"
        )
    files = state.get("files")
    if not isinstance(files, dict):
        raise CheckpointError(f"{state_path}: 'files' must be an object, got {files!r:.60}")
    for name, entry in files.items():
        ok = (
            isinstance(entry, dict)
            and _is_count(entry.get("size"))
            and isinstance(entry.get("sha256"), str)
            and re.fullmatch("[0-9a-f]{64}", entry["sha256"]) is not None
        )
        if not ok:
            raise CheckpointError(
                f"{state_path}: files[{name!r}] must be {{'size': int >= 0, 'sha256': 64 hex "
                f"digits}}, got {entry!r:.80}"
            )
    if not _is_count(state.get("step")):
        raise CheckpointError(
            f"{state_path}: 'step' must be an int >= 0, got {state.get('step')!r:.40}"
        )
    state.setdefault("extra", {})
    if not isinstance(state["extra"], dict):
        raise CheckpointError(
            f"{state_path}: 'extra' must be an object, got {state['extra']!r:.40}"
        )
    state.setdefault("rng_ranks", 1 if _RNG in files else 0)
    if not _is_count(state["rng_ranks"]):
        raise CheckpointError(
            f"{state_path}: 'rng_ranks' must be an int >= 0, got {state['rng_ranks']!r:.40}"
        )
    return state


def _resolve(path: Path) -> Path:
    if (path / _STATE).is_file():
        return path
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is not None:
            return found
        raise CheckpointError(
            f"{path}: no checkpoint found (no state.json and no step-* directory)"
        )
    raise CheckpointError(f"{path}: checkpoint directory does not exist")


def _resolve_aliases(
    file: Path, tensors: dict[str, Tensor], aliases: dict[str, str]
) -> dict[str, Tensor]:
    for alias, target in aliases.items():
        if target not in tensors:
            raise CheckpointError(f"{file}: tied key {alias!r} refers to missing key {target!r}")
        tensors[alias] = tensors[target]
    return tensors


def _check_model(
    file: Path,
    expected: Mapping[str, Sequence[int]],
    tensors: dict[str, Tensor],
    dtypes: Mapping[str, torch.dtype] | None = None,
) -> dict[str, Tensor]:
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{file}: keys do not match the model: missing {missing}, unexpected {unexpected}"
        )
    wrong = [
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(v)}"
        for k, v in expected.items()
        if tuple(tensors[k].shape) != tuple(v)
    ]
    if wrong:
        raise CheckpointError(f"{file}: shape mismatch for {'; '.join(wrong)}")
    wrong = [
        f"{k}: checkpoint {tensors[k].dtype} vs model {dt}"
        for k, dt in (dtypes or {}).items()
        if tensors[k].dtype != dt
    ]
    if wrong:  # load_state_dict would cast silently (and lose precision, or bits of an int)
        raise CheckpointError(f"{file}: dtype mismatch for {'; '.join(wrong)}")
    return tensors


# State tensors that every optimiser here and in `torch.optim` keeps with its parameter's shape
# (moments, momentum buffers, accumulators); others (Adafactor's factored rows and columns) are
# not shape-checked.
_PARAM_SHAPED = frozenset(
    {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "grad_avg",
     "sum", "acc_delta", "ax", "prev", "exp_inf"}
)  # fmt: skip


def _required_state(optimizer: torch.optim.Optimizer, group: Mapping[str, Any]) -> set[str]:
    """The state keys that `optimizer.step` reads for every parameter that has state, for the
    optimisers whose layout is known (ours and torch's SGD/Adam/AdamW); empty for others."""
    from fms_dl.torch.optim import SGD, AdamW, Lion

    if isinstance(optimizer, AdamW | torch.optim.AdamW | torch.optim.Adam):
        return {"step", "exp_avg", "exp_avg_sq"} | (
            {"max_exp_avg_sq"} if group.get("amsgrad") else set()
        )
    if isinstance(optimizer, Lion):
        return {"exp_avg"}
    if isinstance(optimizer, SGD | torch.optim.SGD) and group.get("momentum", 0) != 0:
        return {"momentum_buffer"}
    return set()


def _same_kind(saved: Any, live: Any) -> bool:
    """Whether a saved hyper-parameter can stand in for the live one (JSON has lost tuples)."""
    if isinstance(live, bool) or live is None:
        return isinstance(saved, bool) or saved is None
    if isinstance(live, int | float):
        return isinstance(saved, int | float) and not isinstance(saved, bool)
    if isinstance(live, Tensor):  # a tensor lr (capturable optimisers)
        return isinstance(saved, Tensor | int | float) and not isinstance(saved, bool)
    if isinstance(live, str):
        return isinstance(saved, str)
    if isinstance(live, tuple | list):
        return (
            isinstance(saved, tuple | list)
            and len(saved) == len(live)
            and all(_same_kind(a, b) for a, b in zip(saved, live, strict=True))
        )
    return True  # anything else: trust torch's own load_state_dict


def _check_optimizer(
    file: Path,
    optimizer: torch.optim.Optimizer,
    sd: Any,
    shapes: Any,
    live_shapes: Sequence[Sequence[int]] | None,
) -> dict[str, Any]:
    """Check a decoded optimiser state dict completely against `optimizer`, changing nothing.

    Structure (`state` and `param_groups`), group and parameter counts, every hyper-parameter
    of the live groups present with a value of the same kind, parameter indices known and each
    used once, the saved parameter shapes, the state keys `step` reads (for the optimisers whose
    layout is known), the shape and dtype kind of every moment and a finite step count. Returns a fresh dict ready for
    `optimizer.load_state_dict`.
    """
    if not isinstance(sd, dict) or not isinstance(sd.get("state"), dict):
        raise CheckpointError(f"{file}: metadata is not an optimizer state_dict")
    saved = sd.get("param_groups")
    if not isinstance(saved, list) or not all(
        isinstance(g, dict) and isinstance(g.get("params"), list) for g in saved
    ):
        raise CheckpointError(f"{file}: param_groups must be a list of groups with 'params' lists")
    groups = optimizer.param_groups
    if len(saved) != len(groups):
        raise CheckpointError(
            f"{file}: {len(saved)} parameter groups saved, the optimizer has {len(groups)}"
        )
    n_params = sum(len(g["params"]) for g in groups)
    if live_shapes is None:
        live_shapes = [tuple(p.shape) for g in groups for p in g["params"]]
    index_to_shape: dict[int, tuple[int, ...]] = {}
    index_to_required: dict[int, set[str]] = {}
    live_iter = iter(live_shapes)
    new_groups = []
    for i, (g_saved, g_now) in enumerate(zip(saved, groups, strict=True)):
        if len(g_saved["params"]) != len(g_now["params"]):
            raise CheckpointError(
                f"{file}: parameter group {i} has {len(g_saved['params'])} parameters saved, "
                f"{len(g_now['params'])} in the optimizer"
            )
        for idx in g_saved["params"]:
            if not _is_count(idx) or idx in index_to_shape:
                raise CheckpointError(
                    f"{file}: parameter group {i} lists {idx!r:.40}, not a new index >= 0"
                )
            index_to_shape[idx] = tuple(next(live_iter))
            index_to_required[idx] = _required_state(optimizer, g_now)
        group = dict(g_saved)
        for key, value in g_now.items():
            if key in ("params", "param_names"):
                continue
            if key not in group:
                raise CheckpointError(f"{file}: parameter group {i} has no {key!r}")
            if not _same_kind(group[key], value):
                raise CheckpointError(
                    f"{file}: parameter group {i} {key!r} is {group[key]!r:.40}, "
                    f"expected a value like {value!r:.40}"
                )
            if isinstance(value, tuple) and isinstance(group[key], list):
                group[key] = tuple(group[key])  # JSON turns tuples into lists
        new_groups.append(group)
    if shapes is not None:
        if not (
            isinstance(shapes, list)
            and len(shapes) == n_params
            and all(isinstance(sh, list) and all(_is_count(d) for d in sh) for sh in shapes)
        ):
            raise CheckpointError(
                f"{file}: param_shapes must list the shape of each of the {n_params} parameters"
            )
        for i, (saved_shape, live) in enumerate(zip(shapes, live_shapes, strict=True)):
            if tuple(saved_shape) != tuple(live):
                raise CheckpointError(
                    f"{file}: optimizer parameter {i} has shape {tuple(saved_shape)} in the "
                    f"checkpoint, {tuple(live)} in the optimizer"
                )
    state: dict[int, Any] = {}
    for idx, entry in sd["state"].items():
        try:
            pidx = int(idx)
        except (TypeError, ValueError):
            pidx = -1
        if pidx not in index_to_shape:
            raise CheckpointError(f"{file}: state for unknown parameter index {idx!r:.40}")
        if not isinstance(entry, dict):
            raise CheckpointError(f"{file}: state of parameter {pidx} is not an object")
        missing = sorted(index_to_required[pidx] - set(entry))
        if missing:
            raise CheckpointError(
                f"{file}: state of parameter {pidx} lacks {missing}, which "
                f"{type(optimizer).__name__}.step needs (it has {sorted(map(str, entry))[:8]})"
            )
        for name, value in entry.items():
            if name == "step":
                ok = (isinstance(value, int | float) and not isinstance(value, bool)) or (
                    isinstance(value, Tensor) and value.numel() == 1
                )
                if not ok or not math.isfinite(float(value)) or float(value) < 0:
                    raise CheckpointError(
                        f"{file}: state {pidx}.step must be a finite count >= 0, got {value!r:.40}"
                    )
            elif name in _PARAM_SHAPED:
                if not isinstance(value, Tensor) or not value.is_floating_point():
                    raise CheckpointError(f"{file}: state {pidx}.{name} is not a float tensor")
                if tuple(value.shape) != index_to_shape[pidx]:
                    raise CheckpointError(
                        f"{file}: state {pidx}.{name} has shape {tuple(value.shape)}, its "
                        f"parameter {index_to_shape[pidx]}"
                    )
        state[pidx] = entry
    return {**sd, "state": state, "param_groups": new_groups}


@dataclass
class CheckpointContents:
    """A checkpoint read and verified by [read_checkpoint][fms_dl.torch.checkpoint.read_checkpoint],
    not yet loaded into anything.

    Attributes:
        path: The step directory.
        step: Optimiser steps completed.
        extra: The `extra` dict given to `save_checkpoint`.
        model: Every weight by state-dict key (tied keys resolved), on the CPU.
        optimizer: The optimiser state dict (`None` if not read or not saved).
        param_shapes: The shape of every optimiser parameter as saved (`None` if unknown).
        rng: The RNG states of every rank that saved them, rank 0 first (one entry for a
            one-process run; empty if not read or not saved).
    """

    path: Path
    step: int
    extra: dict[str, Any]
    model: dict[str, Tensor]
    optimizer: dict[str, Any] | None
    param_shapes: list[list[int]] | None
    rng: list[dict[str, Tensor]]

    def check_model(self, shapes: Mapping[str, Sequence[int]]) -> dict[str, Tensor]:
        """The weights, after checking that their keys and shapes are exactly `shapes`.

        Raises:
            CheckpointError: missing or unexpected keys, or a shape mismatch (named).
        """
        return _check_model(self.path / _MODEL, shapes, dict(self.model))

    def check_optimizer(
        self,
        optimizer: torch.optim.Optimizer,
        shapes: Sequence[Sequence[int]] | None = None,
    ) -> dict[str, Any]:
        """The optimiser state dict, checked against `optimizer`'s parameter groups and
        parameter shapes (`shapes`: the *global* shapes, for a sharded model; default the live
        parameters' shapes), ready for `optimizer.load_state_dict`.

        Raises:
            CheckpointError: saved without an optimiser, or groups/counts/shapes that differ.
        """
        file = self.path / _OPTIM
        if self.optimizer is None:
            raise CheckpointError(f"{file}: the optimizer state was not read (optimizer=False)")
        return _check_optimizer(file, optimizer, self.optimizer, self.param_shapes, shapes)


def read_checkpoint(
    path: str | Path, *, optimizer: bool = True, rng: bool = True
) -> CheckpointContents:
    """Read and verify a checkpoint (sizes and SHA-256 of every file) without loading it.

    Args:
        path: A step directory, or a run directory (its newest checkpoint is used).
        optimizer: Also read the optimiser state (the checkpoint must have one).
        rng: Also read the RNG states (of every rank that saved them).

    Raises:
        CheckpointError: no checkpoint, a missing/truncated/corrupt file, a manifest or
            metadata of the wrong structure, no optimiser state (with `optimizer=True`), or no
            RNG states (with `rng=True`).
    """
    step_dir = _resolve(Path(path))
    state = _manifest(step_dir)
    files, rng_ranks = state["files"], state["rng_ranks"]

    model_file = step_dir / _MODEL
    tensors, meta = _read_safetensors(model_file, _read_verified(step_dir, _MODEL, files))
    aliases = _json_meta(model_file, meta, "aliases", "{}")
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise CheckpointError(f"{model_file}: metadata 'aliases' must map keys to keys")
    tensors = _resolve_aliases(model_file, tensors, aliases)

    opt_sd, shapes = None, None
    if optimizer:
        opt_file = step_dir / _OPTIM
        if _OPTIM not in files:
            raise CheckpointError(f"{opt_file}: this checkpoint was saved without an optimizer")
        opt_tensors, meta = _read_safetensors(opt_file, _read_verified(step_dir, _OPTIM, files))
        if "state_dict" not in meta:
            raise CheckpointError(f"{opt_file}: no 'state_dict' in the metadata")
        encoded = _json_meta(opt_file, meta, "state_dict", "null")
        shapes = _json_meta(opt_file, meta, "param_shapes", "null")
        try:
            opt_sd = _decode(encoded, opt_tensors, opt_file)
        except RecursionError:
            raise CheckpointError(f"{opt_file}: optimizer metadata nested too deeply") from None

    rng_states: list[dict[str, Tensor]] = []
    if rng:
        rng_file = step_dir / _RNG
        if _RNG not in files:
            raise CheckpointError(
                f"{rng_file}: this checkpoint was saved with rng=False; pass restore_rng=False"
            )
        every, _ = _read_safetensors(rng_file, _read_verified(step_dir, _RNG, files))
        for r in range(rng_ranks):
            prefix = _rank_prefix(r)
            rng_states.append(
                {k[len(prefix) :]: v for k, v in every.items() if k.startswith(prefix)}
                if prefix
                else {k: v for k, v in every.items() if not k.startswith("rank")}
            )
    return CheckpointContents(
        path=step_dir,
        step=state["step"],
        extra=state["extra"],
        model=tensors,
        optimizer=opt_sd,
        param_shapes=shapes,
        rng=rng_states,
    )


def load_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = True,
    map_location: str | torch.device = "cpu",
    rng_rank: int = 0,
) -> dict[str, Any]:
    """Verify and load a checkpoint into `model` (and `optimizer`, and the RNGs).

    Everything is read, hash-checked and matched against the model, the optimiser and the RNGs
    before any of them is modified, so a failing load changes nothing: the manifest field by
    field; every weight's key, shape and dtype; the optimiser state's structure, its groups'
    hyper-parameters and its per-parameter tensors' shapes; each RNG state on a scratch
    generator. Values are loaded as saved (NaN and infinities included: the SHA-256 proves they
    are what was written).

    Args:
        path: A step directory, or a run directory (its newest checkpoint is used, see
            [latest_checkpoint][fms_dl.torch.checkpoint.latest_checkpoint]).
        model: Receives the weights; keys and shapes must match exactly.
        optimizer: Receives the optimiser state, if given.
        restore_rng: Restore every RNG state (needed for a bitwise-exact resume).
        map_location: Device the tensors are loaded to before being copied into the model
            (optimiser state follows its parameters' device, as in `torch.optim`).
        rng_rank: Whose RNG states to restore, for a checkpoint of a distributed run.

    Returns:
        `{"step": int, "extra": dict}`.

    Raises:
        CheckpointError: no checkpoint, a missing/truncated/corrupt file, a corrupt `latest`
            pointer, or keys/shapes/dtypes/structure that do not match; the message names the
            file and key. The model, optimiser and RNGs are then untouched.
    """
    contents = read_checkpoint(path, optimizer=optimizer is not None, rng=restore_rng)
    if restore_rng and not 0 <= rng_rank < len(contents.rng):
        raise CheckpointError(
            f"{contents.path / _RNG}: holds the RNG states of {len(contents.rng)} rank(s), "
            f"not of rank {rng_rank}"
        )
    live = model.state_dict()
    tensors = _check_model(
        contents.path / _MODEL,
        {k: tuple(v.shape) for k, v in live.items()},
        dict(contents.model),
        {k: v.dtype for k, v in live.items()},
    )
    opt_sd = contents.check_optimizer(optimizer) if optimizer is not None else None
    if restore_rng:
        try:
            _parsed_rng_state(contents.rng[rng_rank])
        except ValueError as exc:
            raise CheckpointError(f"{contents.path / _RNG}: {exc}") from None

    # All checks passed: now mutate.
    device = torch.device(map_location)
    model.load_state_dict({k: v.to(device) for k, v in tensors.items()}, strict=True)
    if optimizer is not None and opt_sd is not None:
        optimizer.load_state_dict(opt_sd)
    if restore_rng:
        restore_rng_state(contents.rng[rng_rank])
    return {"step": contents.step, "extra": contents.extra}
