"""The examples the docs pull in (with the snippets extension) run and print what the docs say."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(name: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out.splitlines()


def test_first_network_prints_the_chapters_output(capsys: pytest.CaptureFixture[str]) -> None:
    """Layer 2 chapter: 5 epochs reach 97.0% on the held-out digits; gradients equal torch's."""
    lines = _run("first_network.py", capsys)
    assert len(lines) == 7
    losses = [float(line.rsplit(" ", 1)[1]) for line in lines[:5]]
    chapter = [0.712, 0.396, 0.232, 0.192, 0.131]  # float32 sums may round differently elsewhere
    assert losses == pytest.approx(chapter, abs=0.02)
    assert lines[5] == "test accuracy 0.970 on 397 unseen digits"
    gap = float(lines[6].rsplit(" ", 1)[1])
    assert gap < 1e-6  # the chapter shows 1e-08 (float32 rounding)


def test_resume_exactly_prints_the_chapters_output(capsys: pytest.CaptureFixture[str]) -> None:
    """Training toolkit chapter: stopping and resuming changes nothing, bit for bit."""
    lines = _run("resume_exactly.py", capsys)
    assert lines == [
        "uninterrupted: step 60, loss 0.587924",
        "stopped at 40, resumed: step 60, loss 0.587924",
        "weights bitwise identical: True",
    ]
