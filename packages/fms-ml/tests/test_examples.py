"""The examples the docs pull in (with the snippets extension) run and print what the docs say."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_first_fit_prints_the_chapters_output(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(EXAMPLES / "first_fit.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [
        "LogisticRegression(C=0.1)",
        "coef_ (1, 20) after 10 iterations",
        "held-out accuracy 0.768",
    ]
    difference = float(lines[3].rsplit(" ", 1)[1])
    assert difference < 1e-6  # the docs say "about 1e-8"
