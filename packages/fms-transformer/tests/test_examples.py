"""The examples the docs pull in (with the snippets extension) run and print what the docs say."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_attention_three_ways_prints_the_chapters_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Layer 3 chapter: naive and tiled attention equal PyTorch's fused kernel, forward and
    backward, and cached decoding equals the full causal pass (float64, 1e-12)."""
    runpy.run_path(str(EXAMPLES / "attention_three_ways.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "naive vs torch",
        "tiled vs torch",
        "cached decoding vs full pass",
    ]
    for line in lines:  # the page shows 1e-15 to 2e-14
        numbers = [float(w.rstrip(",")) for w in line.split(":")[1].split() if w[0].isdigit()]
        assert numbers, line
        assert max(numbers) < 1e-12, line
