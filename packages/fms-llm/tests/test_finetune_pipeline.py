"""The fine-tuning experiment's script runs end to end (micro sizes: seconds, not a result)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "finetune_pipeline.py"
MICRO = {
    "n_story": 120,
    "n_pre_story": 40,
    "n_pre_math": 40,
    "n_math": 60,
    "n_eval": 6,
    "n_tok": 50,
    "n_layers": 1,
    "d_model": 32,
    "n_heads": 2,
    "pretrain": 2,
    "sft": 2,
    "dpo": 2,
    "grpo": 1,
}


@pytest.fixture(scope="module")
def pipeline():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("finetune_pipeline", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seeds_as_processes_then_combined(
    pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    sets = [f"--set={k}={v}" for k, v in MICRO.items()]
    for seed in (0, 1):
        argv = ["finetune_pipeline.py", "--quick", "--only-seed", str(seed), "--out", str(tmp_path)]
        monkeypatch.setattr(sys, "argv", [*argv, *sets])
        pipeline.main()
    runs = [json.loads((tmp_path / f"finetune_pipeline_seed{s}.json").read_text()) for s in (0, 1)]
    assert runs[0]["sizes"]["pretrain"] == 2
    for run in (r["run"] for r in runs):
        for key in ("base_acc", "base_plain_acc", "sft_acc", "sft_seen_acc", "dpo_acc"):
            assert 0.0 <= run[key] <= 1.0, key
        assert 0.0 <= run["sft_math_acc"] <= 1.0
        assert 0.0 <= run["grpo_math_acc"] <= 1.0
        assert run["cpu_seconds"] > 0
    monkeypatch.setattr(
        sys, "argv", ["finetune_pipeline.py", "--combine", "--quick", "--out", str(tmp_path)]
    )
    pipeline.main()
    result = json.loads((tmp_path / "finetune_pipeline.json").read_text())
    assert result["seeds"] == 2
    s = result["summary"]["sft_acc"]
    assert s["lo"] <= s["mean"] <= s["hi"]
    assert (tmp_path / "finetune_pipeline.png").stat().st_size > 0


def test_a_bad_setting_is_refused(pipeline, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sys, "argv", ["finetune_pipeline.py", "--set", "warp=9"])
    with pytest.raises(SystemExit, match="expected KEY=VALUE with KEY one of"):
        pipeline.main()
