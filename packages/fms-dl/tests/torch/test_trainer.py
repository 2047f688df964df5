"""The Trainer: accumulation, clipping, schedules, evaluation, logs, callbacks, precision."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from fms_dl.torch import (
    AdamW,
    Callback,
    Trainer,
    TrainerConfig,
    cosine_with_warmup,
    latest_checkpoint,
)


def _data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((n, 4)))
    y = (x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]], dtype=torch.float64)).squeeze(1)
    return x, y


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def _mse(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return ((model(x).squeeze(1) - y) ** 2).mean()


def _cfg(**kw) -> TrainerConfig:
    return TrainerConfig(**{"progress": False, "device": "cpu", "clip_grad_norm": None, **kw})


def test_grad_accumulation_equals_one_big_batch_within_1e_12_float64():
    """4 micro-batches of 8 give the same steps as batches of 32 (loss divided by accum steps)."""
    x, y = _data(32 * 6)
    big, small = _model(), _model()
    t_big = Trainer(
        big,
        AdamW(big.parameters(), lr=1e-2),
        _cfg(max_steps=6),
        batch_fn=lambda i: (x[32 * i : 32 * i + 32], y[32 * i : 32 * i + 32]),
        loss_fn=_mse,
    )
    t_small = Trainer(
        small,
        AdamW(small.parameters(), lr=1e-2),
        _cfg(max_steps=6, grad_accum_steps=4),
        batch_fn=lambda i: (x[8 * i : 8 * i + 8], y[8 * i : 8 * i + 8]),
        loss_fn=_mse,
    )
    m_big, m_small = t_big.fit(), t_small.fit()
    for a, b in zip(big.parameters(), small.parameters(), strict=True):
        assert (a - b).abs().max().item() < 1e-12
    assert m_small["loss"] == pytest.approx(m_big["loss"], rel=1e-10)
    assert t_small.step == 6


def test_clipping_and_schedule_are_applied_each_step():
    x, y = _data(64)
    seen = []

    class Record(Callback):
        def on_step_end(self, trainer, step, metrics):
            seen.append((step, metrics["lr"], metrics["grad_norm"]))

    model = _model()
    opt = AdamW(model.parameters(), lr=1.0)
    sched = lambda s: cosine_with_warmup(s, max_lr=0.1, warmup_steps=2, total_steps=5)  # noqa: E731
    norms_after = []
    real_step = opt.step

    def spy(*a, **k):
        norms_after.append(
            torch.linalg.vector_norm(
                torch.stack([p.grad.norm() for p in model.parameters()])
            ).item()
        )
        return real_step(*a, **k)

    opt.step = spy
    Trainer(
        model,
        opt,
        _cfg(max_steps=5, clip_grad_norm=0.05),
        batch_fn=lambda i: (x, y),
        loss_fn=_mse,
        lr_schedule=sched,
        callbacks=[Record()],
    ).fit()
    assert [s for s, _, _ in seen] == [1, 2, 3, 4, 5]
    assert [lr for _, lr, _ in seen] == pytest.approx([sched(s) for s in range(5)])
    assert all(n > 0.05 for _, _, n in seen)  # the logged norm is the one before clipping
    assert all(n <= 0.05 * (1 + 1e-6) for n in norms_after)


def test_eval_log_callbacks_and_final_metrics(tmp_path):
    x, y = _data(32)
    events = []

    class Record(Callback):
        def on_eval(self, trainer, step, metrics):
            events.append(("eval", step, dict(metrics)))

        def on_train_end(self, trainer):
            events.append(("end", trainer.step, {}))

    def eval_fn(model):
        assert not model.training
        return {"mse": _mse(model, (x, y))}

    model = _model()
    log = tmp_path / "logs" / "metrics.jsonl"
    cfg = _cfg(max_steps=7, eval_every=3, log_every=2, log_path=log)
    final = Trainer(
        model,
        AdamW(model.parameters(), lr=1e-2),
        cfg,
        batch_fn=lambda i: (x, y),
        loss_fn=_mse,
        eval_fn=eval_fn,
        tokens_per_step=32,
        flops_per_token=100.0,
        peak_flops=1e9,
        callbacks=[Record()],
    ).fit()
    assert [e[:2] for e in events] == [("eval", 3), ("eval", 6), ("eval", 7), ("end", 7)]
    assert model.training  # eval() mode was undone
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["event"], r["step"]) for r in records] == [
        ("train", 2),
        ("eval", 3),
        ("train", 4),
        ("train", 6),
        ("eval", 6),
        ("train", 7),
        ("eval", 7),
    ]
    train = records[-2]
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "mfu", "step_time_s"} <= set(train)
    assert train["mfu"] == pytest.approx(100.0 * train["tokens_per_s"] / 1e9)
    assert final["step"] == 7.0
    assert final["eval_mse"] == pytest.approx(records[-1]["mse"])
    assert final["eval_mse"] < events[0][2]["mse"]  # it learned something


def test_batches_are_moved_to_the_device_inside_containers():
    from fms_dl.torch.trainer import _to_device

    batch = {"x": torch.ones(2), "pair": (torch.zeros(1), [torch.ones(1)]), "n": 3}
    moved = _to_device(batch, torch.device("cpu"))
    assert moved["n"] == 3
    assert isinstance(moved["pair"], tuple)
    assert isinstance(moved["pair"][1], list)


@pytest.mark.parametrize("device", ["tpu", pytest.param("cuda", marks=pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks a machine without CUDA"))])  # fmt: skip
def test_a_device_that_is_not_here_fails_when_the_trainer_is_built(device):
    model = _model()
    with pytest.raises(ValueError, match=rf"device '{device}' is not"):
        Trainer(model, AdamW(model.parameters()), _cfg(max_steps=1, device=device),
                batch_fn=lambda i: _data(4), loss_fn=_mse)  # fmt: skip


def test_checkpoint_every_and_final_checkpoint(tmp_path):
    x, y = _data(16)
    model = _model()
    cfg = _cfg(max_steps=5, checkpoint_every=2, checkpoint_dir=tmp_path)
    t = Trainer(model, AdamW(model.parameters()), cfg, batch_fn=lambda i: (x, y), loss_fn=_mse)
    first = t.fit()
    assert sorted(p.name for p in tmp_path.glob("step-*")) == [
        "step-00000002",
        "step-00000004",
        "step-00000005",
    ]
    assert latest_checkpoint(tmp_path) == tmp_path / "step-00000005"
    again = Trainer(model, AdamW(model.parameters()), cfg, batch_fn=lambda i: (x, y), loss_fn=_mse)
    final = again.fit(
        resume=True
    )  # a finished run: nothing to do, metrics come from the checkpoint
    assert again.step == 5
    assert final["loss"] == first["loss"]


def test_resume_in_process_matches_uninterrupted_bitwise(tmp_path):
    """Train 3 steps, stop, resume to 6 with fresh objects: identical to 6 straight steps."""

    def run(max_steps, resume, ckpt):
        model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.Linear(16, 1)).double()
        torch.manual_seed(
            1
        )  # the resumed run must not depend on this: RNG comes from the checkpoint
        for p in model.parameters():
            nn.init.normal_(p, std=0.3, generator=torch.Generator().manual_seed(p.numel()))
        x, y = _data(8 * 40)
        cfg = _cfg(max_steps=max_steps, checkpoint_every=1, checkpoint_dir=ckpt, grad_accum_steps=2)
        t = Trainer(
            model,
            AdamW(model.parameters(), lr=1e-2),
            cfg,
            batch_fn=lambda i: (x[8 * i : 8 * i + 8], y[8 * i : 8 * i + 8]),
            loss_fn=_mse,
            lr_schedule=lambda s: cosine_with_warmup(s, max_lr=1e-2, warmup_steps=2, total_steps=6),
        )
        t.fit(resume=resume)
        return model

    straight = run(6, False, tmp_path / "a")
    run(3, False, tmp_path / "b")
    torch.manual_seed(999)
    resumed = run(6, True, tmp_path / "b")
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_resume_without_checkpoint_starts_fresh_and_needs_a_directory(tmp_path):
    x, y = _data(8)
    model = _model()
    t = Trainer(
        model,
        AdamW(model.parameters()),
        _cfg(max_steps=2, checkpoint_dir=tmp_path),
        batch_fn=lambda i: (x, y),
        loss_fn=_mse,
    )
    assert t.fit(resume=True)["step"] == 2.0
    t2 = Trainer(
        model, AdamW(model.parameters()), _cfg(max_steps=2), batch_fn=lambda i: (x, y), loss_fn=_mse
    )
    with pytest.raises(ValueError, match=r"resume=True needs config.checkpoint_dir"):
        t2.fit(resume=True)


def test_precision_auto_is_fp32_on_cpu_and_bf16_uses_cpu_autocast():
    x, y = _data(16)
    x, y = x.float(), y.float()
    seen = []

    def loss_fn(model, batch):
        out = model(batch[0]).squeeze(1)
        seen.append(out.dtype)
        return ((out.float() - batch[1]) ** 2).mean()

    for precision, expected in [
        ("auto", torch.float32),
        ("fp32", torch.float32),
        ("bf16", torch.bfloat16),
    ]:
        model = nn.Linear(4, 1)
        t = Trainer(
            model,
            AdamW(model.parameters()),
            _cfg(max_steps=1, precision=precision),
            batch_fn=lambda i: (x, y),
            loss_fn=loss_fn,
        )
        assert t.autocast_dtype == (None if expected == torch.float32 else torch.bfloat16)
        t.fit()
        assert seen[-1] == expected
        assert model.weight.dtype == torch.float32  # autocast never changes the master weights


def test_progress_bar_shows_loss_lr_throughput_and_mfu(capsys):
    pytest.importorskip("tqdm", reason="the progress bar comes with the `torch` extra (tqdm)")
    x, y = _data(8)
    model = _model()
    cfg = TrainerConfig(max_steps=3, log_every=1, device="cpu", progress=True)
    Trainer(
        model,
        AdamW(model.parameters()),
        cfg,
        batch_fn=lambda i: (x, y),
        loss_fn=_mse,
        tokens_per_step=8,
        flops_per_token=1e3,
        peak_flops=1e12,
    ).fit()
    err = capsys.readouterr().err
    assert "loss=" in err
    assert "lr=" in err
    assert "tok/s=" in err
    assert "mfu=" in err


def test_non_scalar_loss_is_rejected():
    x, y = _data(8)
    model = _model()
    t = Trainer(
        model,
        AdamW(model.parameters()),
        _cfg(max_steps=1),
        batch_fn=lambda i: (x, y),
        loss_fn=lambda m, b: (m(b[0]).squeeze(1) - b[1]) ** 2,
    )
    with pytest.raises(ValueError, match=r"loss_fn must return a scalar, got shape \(8,\)"):
        t.fit()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_steps": -1}, "max_steps must be an int >= 0, got -1"),
        ({"max_steps": 1, "grad_accum_steps": 0}, "grad_accum_steps must be an int >= 1, got 0"),
        (
            {"max_steps": 1, "precision": "fp16"},
            r"precision must be one of \('auto', 'fp32', 'bf16'\), got 'fp16'",
        ),
        ({"max_steps": 1, "clip_grad_norm": 0.0}, "clip_grad_norm must be > 0 or None, got 0.0"),
        (
            {"max_steps": 1, "checkpoint_every": 2},
            "checkpoint_every is set but checkpoint_dir is None",
        ),
        ({"max_steps": 1, "eval_every": 0}, "eval_every must be an int >= 1, got 0"),
    ],
)
def test_bad_config_raises_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainerConfig(**kwargs)


def test_config_must_be_a_trainer_config():
    with pytest.raises(TypeError, match="config must be a TrainerConfig, got dict"):
        Trainer(
            nn.Linear(1, 1),
            AdamW(nn.Linear(1, 1).parameters()),
            {"max_steps": 1},
            batch_fn=lambda i: None,
            loss_fn=lambda m, b: torch.zeros(()),
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_precision_uses_bf16_autocast_on_cuda():
    model = nn.Linear(4, 1)
    t = Trainer(
        model,
        AdamW(model.parameters()),
        TrainerConfig(max_steps=1, progress=False),
        batch_fn=lambda i: torch.ones(2, 4),
        loss_fn=lambda m, b: m(b).float().mean(),
    )
    assert t.device.type == "cuda"
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    assert t.autocast_dtype == expected
    t.fit()
    assert model.weight.device.type == "cuda"


def test_ddp_hooks_no_sync_and_unwrapped_checkpoints(tmp_path):
    """One-process gloo DDP: accumulation under no_sync gives the plain run's weights (1e-6),
    and checkpoints hold the unwrapped module's keys (no `module.` prefix)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available in this build")
    x, y = _data(64)
    x, y = x.float(), y.float()

    def batch_fn(i):
        return x[8 * i : 8 * i + 8], y[8 * i : 8 * i + 8]

    no_sync_calls = []

    def run(wrap: bool, ckpt):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        opt = AdamW(model.parameters(), lr=1e-2)
        if wrap:
            model = nn.parallel.DistributedDataParallel(model)
            real_no_sync = model.no_sync

            def counting_no_sync():
                no_sync_calls.append(1)
                return real_no_sync()

            model.no_sync = counting_no_sync
        cfg = _cfg(max_steps=3, grad_accum_steps=2, checkpoint_dir=ckpt)
        t = Trainer(model, opt, cfg, batch_fn=batch_fn, loss_fn=_mse)
        assert t.is_main_process
        t.fit()
        return t.unwrapped_model

    plain = run(False, tmp_path / "plain")
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        wrapped = run(True, tmp_path / "ddp")
    finally:
        dist.destroy_process_group()
    assert len(no_sync_calls) == 3  # one per optimiser step: all micro-batches but the last
    for a, b in zip(plain.parameters(), wrapped.parameters(), strict=True):
        assert (a - b).abs().max().item() < 1e-6
    fresh = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    from fms_dl.torch import load_checkpoint

    assert load_checkpoint(tmp_path / "ddp", model=fresh, restore_rng=False)["step"] == 3


def test_compiled_model_checkpoints_hold_the_plain_keys(tmp_path):
    """`trainer.model = torch.compile(model)`: checkpoints have no `_orig_mod.` prefix."""
    x, y = _data(16)
    x, y = x.float(), y.float()
    model = nn.Linear(4, 1)
    cfg = _cfg(max_steps=2, checkpoint_dir=tmp_path)
    t = Trainer(
        model,
        AdamW(model.parameters()),
        cfg,
        batch_fn=lambda i: (x, y),
        loss_fn=lambda m, b: ((m(b[0]).squeeze(1) - b[1]) ** 2).mean(),
    )
    t.model = torch.compile(model, backend="eager")
    assert t.unwrapped_model is model
    t.fit()
    from fms_dl.torch import load_checkpoint

    assert load_checkpoint(tmp_path, model=nn.Linear(4, 1), restore_rng=False)["step"] == 2
