"""Mutation fuzzing of `fms_dl.torch.checkpoint.load_checkpoint` (issue 15), and all-or-nothing loads.

A step directory (model, optimizer and RNG safetensors, `state.json`, the `latest` pointer) is
saved once; each example copies it and damages one piece with `tests/_mutations.py`: raw
bytes (caught by the SHA-256), or a *consistent* corruption that rewrites the manifest's size
and hash to match (hostile safetensors headers, mutated optimizer metadata JSON, dtype and
shape changes), or a mutated manifest or pointer. The claims, for `FMS_FUZZ_EXAMPLES` examples
(300 by default, 2,000 in `nox -s fuzz`):

- the only exception is the documented `CheckpointError`;
- no hang (a 30-second alarm per example);
- a failed load leaves the model, the optimizer and every RNG exactly as they were.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

import fms_dl_test_mutations as mut  # tests/_mutations.py, registered by tests/conftest.py
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from fms_dl.torch import AdamW, CheckpointError, load_checkpoint, save_checkpoint
from fms_dl.torch import checkpoint as ck

FILES = ["model.safetensors", "optimizer.safetensors", "rng.safetensors"]


def _make(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    opt = AdamW(model.parameters(), lr=0.01)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(5, 4)).square().mean().backward()
        opt.step()
    return model, opt


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    model, opt = _make(0)
    with pytest.MonkeyPatch.context() as mp:  # a template need not be durable: skip the fsyncs
        mp.setattr(ck, "_fsync", lambda fd: None)
        save_checkpoint(root, model=model, optimizer=opt, step=2, extra={"metrics": {"loss": 1.0}})
    return root


def _snapshot(model: nn.Module, opt: torch.optim.Optimizer) -> Any:
    sd = opt.state_dict()
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        json.dumps(sd["param_groups"], default=str),
        {
            i: {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
            for i, s in sd["state"].items()
        },
        torch.get_rng_state().clone(),
        np.random.get_state(legacy=False)["state"]["key"].copy(),  # noqa: NPY002
        random.getstate(),
    )


def _assert_unchanged(before: Any, after: Any) -> None:
    (w0, g0, s0, t0, n0, p0), (w1, g1, s1, t1, n1, p1) = before, after
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "the model changed"
    assert g0 == g1, "the optimizer's param groups changed"
    assert s0.keys() == s1.keys()
    for i in s0:
        for k, v in s0[i].items():
            assert torch.equal(v, s1[i][k]) if isinstance(v, torch.Tensor) else v == s1[i][k]
    assert torch.equal(t0, t1), "torch's RNG changed"
    assert np.array_equal(n0, n1), "numpy's RNG changed"
    assert p0 == p1, "Python's RNG changed"


def _rehash(step_dir: Path, name: str) -> None:
    """Record `name`'s current size and SHA-256 in state.json: a corruption the hash cannot see."""
    state = json.loads((step_dir / "state.json").read_text())
    data = (step_dir / name).read_bytes()
    state["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (step_dir / "state.json").write_text(json.dumps(state))


def _mutate_optimizer_metadata(data: st.DataObject, raw: bytes) -> bytes:
    header, buffer = mut.split_safetensors(raw)
    meta = header["__metadata__"]
    key = data.draw(st.sampled_from(["state_dict", "param_shapes"]))
    if data.draw(st.integers(0, 4)) == 0:
        meta[key] = data.draw(st.sampled_from(["{", "[" * 50_000, "null", "\udcff", ""]))
    else:
        meta[key] = json.dumps(mut.mutate_json(data, json.loads(meta[key])))
    return mut.join_safetensors(header, buffer)


def _damage(data: st.DataObject, step_dir: Path, root: Path) -> None:
    target = data.draw(st.sampled_from([*FILES, "optimizer-metadata", "state.json", "latest"]))
    if target == "latest":
        pointer = root / "latest"
        raw = data.draw(
            st.sampled_from([b"\xff\xfe\n", b"", b"../../etc\n", b"step-12x", b"x" * 10_000])
            | st.binary(max_size=24)
        )
        pointer.write_bytes(
            raw if data.draw(st.booleans()) else mut.mutate_bytes(data, pointer.read_bytes())
        )
    elif target == "state.json":
        path = step_dir / "state.json"
        if data.draw(st.booleans()):
            path.write_text(json.dumps(mut.mutate_json(data, json.loads(path.read_text()))))
        else:
            path.write_bytes(mut.mutate_bytes(data, path.read_bytes()))
    else:
        name = "optimizer.safetensors" if target == "optimizer-metadata" else target
        path = step_dir / name
        raw = path.read_bytes()
        if target == "optimizer-metadata":
            raw = _mutate_optimizer_metadata(data, raw)
        elif data.draw(st.booleans()):
            raw = mut.mutate_safetensors(data, raw)
        else:
            raw = mut.mutate_bytes(data, raw)
        path.write_bytes(raw)
        if data.draw(st.integers(0, 3)) > 0:  # mostly consistent: get past the hash check
            _rehash(step_dir, name)


@mut.FUZZ
@given(data=st.data())
@pytest.mark.fuzz
def test_fuzz_load_checkpoint(
    template: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """A damaged checkpoint: CheckpointError with everything untouched, or a clean load."""
    root = tmp_path_factory.mktemp("fuzz", numbered=True) / "run"
    shutil.copytree(template, root)
    _damage(data, root / "step-00000002", root)
    model, opt = _make(1)
    before = _snapshot(model, opt)
    with mut.alarm(30):
        try:
            load_checkpoint(root, model=model, optimizer=opt)
        except CheckpointError:
            _assert_unchanged(before, _snapshot(model, opt))
            return
    opt.zero_grad()  # what loads can train
    model(torch.randn(5, 4)).square().mean().backward()
    opt.step()


# ---------------------------------------------------------------- targeted: each piece corrupt
def _optimizer_meta(step_dir: Path, edit: Any) -> None:
    path = step_dir / "optimizer.safetensors"
    header, buffer = mut.split_safetensors(path.read_bytes())
    meta = header["__metadata__"]
    sd = json.loads(meta["state_dict"])
    edit(sd, meta)
    meta["state_dict"] = json.dumps(sd)
    path.write_bytes(mut.join_safetensors(header, buffer))
    _rehash(step_dir, "optimizer.safetensors")


def _state_items(sd: Any) -> Any:
    return dict(sd["__dict__"])


def _drop_moment(sd: Any, meta: Any) -> None:
    """Remove parameter 0's second moment from the state (a bit flip in its name does this)."""
    first = _state_items(sd)["state"]["__dict__"][0][1]
    first["__dict__"] = [kv for kv in first["__dict__"] if kv[0] != "exp_avg_sq"]


CORRUPTIONS = {
    # the model file: a weight of another dtype (consistent hash), or a missing weight
    "model dtype": lambda d: _retype(d, "model.safetensors", "0.weight", "F64"),
    "model key": lambda d: _rename(d, "model.safetensors", "0.bias", "0.beta"),
    # the optimizer: a moment of the wrong shape, a hyper-parameter of the wrong type, garbage
    "optimizer moment shape": lambda d: _reshape(
        d, "optimizer.safetensors", "optim.state.0.exp_avg"
    ),
    "optimizer lr type": lambda d: _optimizer_meta(
        d,
        lambda sd, meta: _state_items(sd)["param_groups"][0]["__dict__"].__setitem__(
            0, ["lr", "fast"]
        ),
    ),
    "optimizer missing moment": lambda d: _optimizer_meta(d, _drop_moment),
    "optimizer param_shapes": lambda d: _optimizer_meta(
        d, lambda sd, meta: meta.__setitem__("param_shapes", "[[3, 4]]")
    ),
    # the RNG file: torch's state cut short (a valid safetensors file, a state torch refuses)
    "rng torch state": lambda d: _reshape(d, "rng.safetensors", "torch"),
    # the manifest: wrong JSON types
    "state.json step": lambda d: _manifest(d, lambda s: s.__setitem__("step", "2")),
    "state.json files": lambda d: _manifest(
        d, lambda s: s["files"].__setitem__("model.safetensors", [1])
    ),
    "state.json extra": lambda d: _manifest(d, lambda s: s.__setitem__("extra", [])),
}


def _manifest(step_dir: Path, edit: Any) -> None:
    state = json.loads((step_dir / "state.json").read_text())
    edit(state)
    (step_dir / "state.json").write_text(json.dumps(state))


def _retype(step_dir: Path, name: str, key: str, dtype: str) -> None:
    path = step_dir / name
    from safetensors.torch import load, save

    header, _ = mut.split_safetensors(path.read_bytes())

    loaded = load(path.read_bytes())
    loaded[key] = loaded[key].to({"F64": torch.float64}[dtype])
    path.write_bytes(save(loaded, metadata=header.get("__metadata__")))
    _rehash(step_dir, name)


def _rename(step_dir: Path, name: str, key: str, new: str) -> None:
    from safetensors.torch import load, save

    path = step_dir / name
    header, _ = mut.split_safetensors(path.read_bytes())
    loaded = load(path.read_bytes())
    loaded[new] = loaded.pop(key)
    path.write_bytes(save(loaded, metadata=header.get("__metadata__")))
    _rehash(step_dir, name)


def _reshape(step_dir: Path, name: str, key: str) -> None:
    from safetensors.torch import load, save

    path = step_dir / name
    header, _ = mut.split_safetensors(path.read_bytes())
    loaded = load(path.read_bytes())
    loaded[key] = loaded[key].reshape(-1)[:-1].clone()
    path.write_bytes(save(loaded, metadata=header.get("__metadata__")))
    _rehash(step_dir, name)


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_failed_load_leaves_model_optimizer_and_rng_untouched(
    template: Path, tmp_path: Path, corruption: str
) -> None:
    root = tmp_path / "run"
    shutil.copytree(template, root)
    CORRUPTIONS[corruption](root / "step-00000002")
    model, opt = _make(1)
    before = _snapshot(model, opt)
    with pytest.raises(CheckpointError):
        load_checkpoint(root, model=model, optimizer=opt)
    _assert_unchanged(before, _snapshot(model, opt))


@pytest.mark.parametrize(
    "pointer", [b"\xff\xfestep-00000002\n", b"garbage\n", b"../step-00000002", b"s" * 5000]
)
def test_a_non_utf8_or_garbage_latest_pointer_is_a_clean_error(
    template: Path, tmp_path: Path, pointer: bytes
) -> None:
    root = tmp_path / "run"
    shutil.copytree(template, root)
    (root / "latest").write_bytes(pointer)
    model, opt = _make(1)
    with pytest.raises(CheckpointError, match="latest"):
        load_checkpoint(root, model=model, optimizer=opt)


def test_a_pointer_to_a_missing_step_still_falls_back_to_the_newest(
    template: Path, tmp_path: Path
) -> None:
    root = tmp_path / "run"
    shutil.copytree(template, root)
    (root / "latest").write_bytes(b"step-00000099\n")
    model, opt = _make(1)
    assert load_checkpoint(root, model=model, optimizer=opt)["step"] == 2


def test_the_undamaged_template_loads(template: Path) -> None:
    model, opt = _make(1)
    assert load_checkpoint(template, model=model, optimizer=opt)["step"] == 2
    ref, _ = _make(0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), ref.state_dict().values(), strict=True)
    )
