"""Run configs: presets, overrides, unknown keys and impossible values."""

from __future__ import annotations

from pathlib import Path

import pytest

from fms_llm.train import PRESETS, ConfigError, load_config


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_validate(name: str) -> None:
    cfg = load_config(name)
    assert cfg.model.d_model % cfg.model.n_heads == 0
    assert cfg.train.seq_len <= cfg.model.max_seq_len


def test_overrides_are_typed() -> None:
    cfg = load_config(
        "tiny",
        ["train.max_steps=7", "train.warmup_steps=0", "train.lr=1", "model.family=llama", 'data.corpus="x y"',
         "train.checkpoint_every=none", "train.compile=true"],
    )  # fmt: skip
    assert cfg.train.max_steps == 7
    assert cfg.train.lr == 1.0
    assert isinstance(cfg.train.lr, float)
    assert cfg.model.family == "llama"
    assert cfg.data.corpus == "x y"
    assert cfg.train.checkpoint_every is None
    assert cfg.train.compile is True


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["model.foo=1"], "unknown key model.foo"),
        (["optim.lr=1"], "unknown section 'optim'"),
        (["train.max_steps=many"], r"train\.max_steps must be int"),
        (["train.max_steps"], "must look like section.key=value"),
        (["model.d_model=130"], "d_model=130 is not divisible by model.n_heads=4"),
        (["model.n_kv_heads=3", "model.family=llama"], "multiple of model.n_kv_heads=3"),
        (["train.seq_len=4096"], "exceeds model.max_seq_len"),
        (["model.family=bert"], "model.family must be"),
        (["train.warmup_steps=5000"], "warmup_steps=5000"),
        # sample.* is used only after training: checked before it (issue 15)
        (["sample.temperature=-1"], r"sample\.temperature must be finite and >= 0, got -1"),
        (["sample.temperature=nan"], r"sample\.temperature must be finite"),
        (["sample.top_k=0"], r"sample\.top_k must be >= 1 or none, got 0"),
        (["sample.top_p=1.5"], r"sample\.top_p must be in \(0, 1\] or none, got 1\.5"),
        (["sample.top_p=0"], r"sample\.top_p must be in \(0, 1\]"),
        (["sample.max_new_tokens=-3"], r"sample\.max_new_tokens must be >= 0, got -3"),
    ],
)
def test_bad_configs_are_clear_errors(overrides: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config("tiny", overrides)


def test_toml_files(tmp_path: Path) -> None:
    good = tmp_path / "run.toml"
    good.write_text("[model]\nd_model = 64\n[train]\nmax_steps = 3\nwarmup_steps = 1\n")
    assert load_config(good).model.d_model == 64
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nwidth = 64\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: unknown key model\.width"):
        load_config(bad)
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "broken.toml").write_text("[model\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(tmp_path / "broken.toml")
