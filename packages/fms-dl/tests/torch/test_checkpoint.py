"""Checkpoints: exact round trips, strict checks, corruption detection and atomicity."""

from __future__ import annotations

import json
import random

import pytest
import torch
from torch import nn

from fms_dl.torch import AdamW, CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from fms_dl.torch import checkpoint as ck


class Tied(nn.Module):
    """A tiny language-model shape: embedding tied to the output layer, plus a buffer."""

    def __init__(self, vocab: int = 11, dim: int = 6) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.norm = nn.BatchNorm1d(dim)  # has buffers (running stats, an int64 counter)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.emb(idx)))


def _trained(opt_cls=AdamW, steps: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    model = Tied()
    opt = opt_cls(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        idx = torch.randint(0, 11, (8,))
        nn.functional.cross_entropy(model(idx), idx).backward()
        opt.step()
    return model, opt


def _same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        elif isinstance(a[k], dict):
            _same_state(a[k], b[k])
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("opt_cls", [AdamW, torch.optim.AdamW, torch.optim.SGD])
def test_round_trip_is_exact_for_model_optimizer_and_rng(tmp_path, opt_cls):
    """Weights, optimiser state (ours, and torch's with tensor step counts) and RNG come back bitwise."""
    model, opt = _trained(opt_cls)
    path = save_checkpoint(tmp_path, model=model, optimizer=opt, step=3, extra={"note": [1, 2.5]})
    assert path == tmp_path / "step-00000003"
    assert sorted(p.name for p in path.iterdir()) == [
        "model.safetensors",
        "optimizer.safetensors",
        "rng.safetensors",
        "state.json",
    ]
    expected_next = torch.rand(4), random.random()

    fresh, fresh_opt = _trained(opt_cls, steps=1, seed=1)
    info = load_checkpoint(tmp_path, model=fresh, optimizer=fresh_opt)
    assert info == {"step": 3, "extra": {"note": [1, 2.5]}}
    _same_state(fresh.state_dict(), model.state_dict())
    assert fresh.head.weight is fresh.emb.weight  # tying survives
    s1, s2 = opt.state_dict(), fresh_opt.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for idx in s1["state"]:
        _same_state(s1["state"][idx], s2["state"][idx])
    assert (torch.rand(4), random.random())[1] == expected_next[1]


def test_tied_weights_are_stored_once(tmp_path):
    import safetensors.torch

    model, _ = _trained()
    path = save_checkpoint(tmp_path, model=model, step=0)
    stored = safetensors.torch.load_file(path / "model.safetensors")
    assert "emb.weight" in stored
    assert "head.weight" not in stored


def test_state_json_records_sizes_hashes_and_format(tmp_path):
    model, opt = _trained()
    path = save_checkpoint(tmp_path, model=model, optimizer=opt, step=12)
    state = json.loads((path / "state.json").read_text())
    assert state["format"] == "fms-dl-checkpoint"
    assert state["version"] == 1
    assert state["step"] == 12
    for name, entry in state["files"].items():
        assert (path / name).stat().st_size == entry["size"]
        assert len(entry["sha256"]) == 64


def test_no_pickle_anywhere(tmp_path):
    """Every file is a safetensors blob or JSON: no pickle opcodes, no torch.save zip."""
    model, opt = _trained()
    path = save_checkpoint(tmp_path, model=model, optimizer=opt, step=1)
    for f in path.iterdir():
        head = f.read_bytes()[:2]
        assert head != b"\x80\x04", f
        assert head != b"PK", f


def test_latest_pointer_and_fallback(tmp_path):
    model, _ = _trained()
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None
    for step in (2, 10, 4):
        save_checkpoint(tmp_path, model=model, step=step)
    assert (tmp_path / "latest").read_text().strip() == "step-00000004"
    assert latest_checkpoint(tmp_path) == tmp_path / "step-00000004"
    (tmp_path / "latest").unlink()  # crash between the directory rename and the pointer update
    assert latest_checkpoint(tmp_path) == tmp_path / "step-00000010"


def test_keep_last_prunes_old_checkpoints(tmp_path):
    model, _ = _trained()
    for step in range(5):
        save_checkpoint(tmp_path, model=model, step=step, keep_last=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000003", "step-00000004"]


def test_resaving_the_same_step_replaces_it(tmp_path):
    model, _ = _trained()
    save_checkpoint(tmp_path, model=model, step=5, extra={"v": 1})
    save_checkpoint(tmp_path, model=model, step=5, extra={"v": 2})
    assert load_checkpoint(tmp_path, model=model)["extra"] == {"v": 2}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


# ---------------------------------------------------------------------------------------------
# Corruption and mismatches: a clear CheckpointError naming the file/key, and nothing modified
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    model, opt = _trained()
    return save_checkpoint(tmp_path, model=model, optimizer=opt, step=3)


def _load_fresh(path, **kwargs):
    model, opt = _trained(steps=0, seed=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        load_checkpoint(path, model=model, optimizer=opt, **kwargs)
    finally:
        _same_state(model.state_dict(), before)  # a failed load modifies nothing


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "rng.safetensors"])
def test_truncated_file_is_detected(saved, name):
    data = (saved / name).read_bytes()
    (saved / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{name}: size \d+ bytes, expected \d+"):
        _load_fresh(saved)


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors"])
def test_flipped_byte_is_detected_by_sha256(saved, name):
    data = bytearray((saved / name).read_bytes())
    data[-3] ^= 0xFF
    (saved / name).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{name}: sha256 .* does not match .*corrupt"):
        _load_fresh(saved)


def test_missing_file_is_detected(saved):
    (saved / "optimizer.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"optimizer.safetensors: file is missing"):
        _load_fresh(saved)


def test_corrupt_manifest_is_detected(saved):
    (saved / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"state.json: unreadable manifest"):
        _load_fresh(saved)


def test_corrupt_but_consistent_safetensors_is_detected(saved):
    """A file rewritten with a valid manifest entry but garbage content fails to parse."""
    import hashlib

    garbage = b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}"
    (saved / "model.safetensors").write_bytes(garbage)
    state = json.loads((saved / "state.json").read_text())
    state["files"]["model.safetensors"] = {
        "size": len(garbage),
        "sha256": hashlib.sha256(garbage).hexdigest(),
    }
    (saved / "state.json").write_text(json.dumps(state))
    with pytest.raises(
        CheckpointError, match=r"model.safetensors: not a readable safetensors file"
    ):
        _load_fresh(saved)


def test_no_checkpoint_in_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load_checkpoint(tmp_path, model=nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope", model=nn.Linear(2, 2))


def test_wrong_keys_are_named(tmp_path):
    save_checkpoint(tmp_path, model=nn.Sequential(nn.Linear(2, 3)), step=0)
    other = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    with pytest.raises(CheckpointError, match=r"missing \['1.bias', '1.weight'\], unexpected \[\]"):
        load_checkpoint(tmp_path, model=other)
    smaller = nn.Sequential(nn.Linear(2, 3, bias=False))
    with pytest.raises(CheckpointError, match=r"missing \[\], unexpected \['0.bias'\]"):
        load_checkpoint(tmp_path, model=smaller)


def test_wrong_shapes_are_named(tmp_path):
    save_checkpoint(tmp_path, model=nn.Linear(2, 3), step=0)
    with pytest.raises(
        CheckpointError,
        match=r"model.safetensors: shape mismatch for weight: checkpoint \(3, 2\) vs model \(4, 2\)",
    ):
        load_checkpoint(tmp_path, model=nn.Linear(2, 4), restore_rng=False)


def test_optimizer_structure_mismatch_is_named(tmp_path):
    model = nn.Linear(2, 3)
    opt = AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path, model=model, optimizer=opt, step=1)
    two_groups = AdamW([{"params": [model.weight]}, {"params": [model.bias]}])
    with pytest.raises(
        CheckpointError,
        match=r"optimizer.safetensors: 1 parameter groups saved, the optimizer has 2",
    ):
        load_checkpoint(tmp_path, model=model, optimizer=two_groups)
    with pytest.raises(
        CheckpointError, match="parameter group 0 has 2 parameters saved, 1 in the optimizer"
    ):
        load_checkpoint(tmp_path, model=model, optimizer=AdamW([model.weight]))
    swapped = AdamW([model.bias, model.weight])
    with pytest.raises(
        CheckpointError,
        match=r"optimizer parameter 0 has shape \(3, 2\) in the checkpoint, \(3,\) in the optimizer",
    ):
        load_checkpoint(tmp_path, model=model, optimizer=swapped)


def test_saved_without_optimizer_or_rng(tmp_path):
    model = nn.Linear(2, 2)
    save_checkpoint(tmp_path, model=model, step=0, rng=False)
    with pytest.raises(CheckpointError, match="saved without an optimizer"):
        load_checkpoint(tmp_path, model=model, optimizer=AdamW(model.parameters()))
    with pytest.raises(CheckpointError, match="saved with rng=False; pass restore_rng=False"):
        load_checkpoint(tmp_path, model=model)
    assert load_checkpoint(tmp_path, model=model, restore_rng=False)["step"] == 0


# ---------------------------------------------------------------------------------------------
# Atomicity: a failed save leaves the previous checkpoint intact
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fail_at", [1, 2, 3, 5, 6])
def test_crash_during_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch, fail_at):
    """An I/O error at the n-th fsync (each file, the directory, the parent, the pointer)."""
    model, opt = _trained()
    save_checkpoint(tmp_path, model=model, optimizer=opt, step=1)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.emb.weight.add_(1.0)

    calls = {"n": 0}
    real = ck._fsync

    def failing(fd):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise OSError("disk full")
        real(fd)

    monkeypatch.setattr(ck, "_fsync", failing)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, model=model, optimizer=opt, step=2)
    monkeypatch.setattr(ck, "_fsync", real)

    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    assert (tmp_path / "latest").read_text().strip() == "step-00000001"
    if fail_at <= 5:  # failed before the rename: step 2 never appears
        assert not (tmp_path / "step-00000002").exists()
    fresh, fresh_opt = _trained(steps=0, seed=3)
    assert load_checkpoint(tmp_path, model=fresh, optimizer=fresh_opt)["step"] == 1
    _same_state(fresh.state_dict(), reference)


def test_unserialisable_state_writes_nothing(tmp_path):
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="extra must be JSON-serialisable"):
        save_checkpoint(tmp_path, model=model, step=0, extra={"x": object()})
    opt = AdamW(model.parameters())
    opt.param_groups[0]["callback"] = object()
    with pytest.raises(
        TypeError, match=r"optimizer state at 'optim.param_groups.0.callback' holds a object"
    ):
        save_checkpoint(tmp_path, model=model, optimizer=opt, step=0)
    assert list(tmp_path.iterdir()) == []


def test_bad_step_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="step must be an int >= 0, got -1"):
        save_checkpoint(tmp_path, model=nn.Linear(1, 1), step=-1)


def test_optimizer_state_sharing_memory_is_saved(tmp_path):
    """Two state entries that alias one buffer (a custom optimiser might) are stored as copies."""
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    buf = opt.state[model.weight]["momentum_buffer"]
    opt.state[model.weight]["alias"] = buf.view(-1)
    save_checkpoint(tmp_path, model=model, optimizer=opt, step=1)
    fresh_opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    load_checkpoint(tmp_path, model=model, optimizer=fresh_opt)
    assert torch.equal(fresh_opt.state[model.weight]["alias"], buf.view(-1))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_round_trip_keeps_dtypes_and_integer_and_bool_buffers(tmp_path, dtype):
    model = nn.Linear(3, 2).to(dtype)
    model.register_buffer("count", torch.tensor([3, -1], dtype=torch.int64))
    model.register_buffer("mask", torch.tensor([True, False]))
    opt = AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3, dtype=dtype)).float().sum().backward()
    opt.step()
    save_checkpoint(tmp_path, model=model, optimizer=opt, step=1)
    fresh = nn.Linear(3, 2).to(dtype)
    fresh.register_buffer("count", torch.zeros(2, dtype=torch.int64))
    fresh.register_buffer("mask", torch.zeros(2, dtype=torch.bool))
    fresh_opt = AdamW(fresh.parameters(), lr=0.1)
    load_checkpoint(tmp_path, model=fresh, optimizer=fresh_opt)
    _same_state(fresh.state_dict(), model.state_dict())
    assert fresh.weight.dtype == dtype
    assert fresh_opt.state[fresh.weight]["exp_avg"].dtype == dtype
    _same_state(fresh_opt.state[fresh.weight], opt.state[model.weight])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_model_round_trip_and_map_location(tmp_path):
    model, opt = _trained()
    model.cuda()
    opt = AdamW(model.parameters(), lr=0.01)
    nn.functional.cross_entropy(
        model(torch.arange(8, device="cuda")), torch.arange(8, device="cuda")
    ).backward()
    opt.step()
    save_checkpoint(tmp_path, model=model, optimizer=opt, step=1)
    on_cpu = Tied()
    load_checkpoint(tmp_path, model=on_cpu, restore_rng=False)  # saved on CUDA, loaded on CPU
    assert torch.equal(on_cpu.emb.weight, model.emb.weight.cpu())
    fresh = Tied().cuda()
    fresh_opt = AdamW(fresh.parameters(), lr=0.01)
    load_checkpoint(tmp_path, model=fresh, optimizer=fresh_opt, map_location="cuda")
    _same_state(fresh.state_dict(), model.state_dict())
    assert fresh_opt.state[fresh.emb.weight]["exp_avg"].device.type == "cuda"
