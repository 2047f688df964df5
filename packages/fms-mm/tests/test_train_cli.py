"""The training recipes on tiny budgets, and the fms-mm CLI end to end (train, eval, errors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fms_mm.cli import main
from fms_mm.train import TrainSettings, train_audio, train_clip, train_vlm


def test_cli_train_and_eval_vit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "vit"
    assert main(["train", "vit", "--out", str(out), "--steps", "3", "--batch-size", "16"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "metrics.json"}
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["settings"]["steps"] == 3
    assert main(["eval", "vit", str(out)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["test_accuracy"] == pytest.approx(trained["test_accuracy"])


def test_cli_help_and_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "clip", "--help"])
    assert e.value.code == 0
    assert "zero-shot" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "vit", "--out", str(tmp_path), "--steps", "0"])
    assert "must be a positive integer, got '0'" in capsys.readouterr().err
    assert main(["eval", "vit", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_recipes_run_and_report_their_metrics(tmp_path: Path) -> None:
    tiny = TrainSettings(steps=2, batch_size=16)
    _, clip = train_clip(tiny, n_train=64, n_test=32)
    assert 0.0 <= clip["zero_shot_accuracy"] <= 1.0
    assert clip["chance"] == pytest.approx(1 / 16)
    assert clip["recall_at_1"] <= clip["recall_at_5"]
    vlm, captions = train_vlm(tiny, n_train=32, n_test=8, lm_steps=2)
    assert set(captions) >= {"caption_accuracy_new_scenes", "caption_accuracy_held_out_pairs"}
    assert all(not p.requires_grad for p in vlm.decoder.parameters())
    _, audio = train_audio(tiny, voices=["en-us+m1", "en-gb+f5"], cache_dir=tmp_path)
    assert audio["test_voices"] == ["en-gb+f5"]
    assert audio["n_test"] == 40
