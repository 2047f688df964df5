"""The examples the docs pull in (with the snippets extension) run and print what the docs say."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(name: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out.splitlines()


def test_first_tokenizer_prints_the_chapters_output(capsys: pytest.CaptureFixture[str]) -> None:
    """Tokenisation chapter: the merges and tokens shown, and ids equal to HF's and tiktoken's."""
    lines = _run("first_tokenizer.py", capsys)
    assert lines[0] == "743 merges; the first five: ['th', ' th', 'nd', ' a', ' the']"
    assert lines[1].startswith("75 bytes -> 24 tokens: ['And', ' Abraham', ' said', ',', ' God'")
    assert lines[2:] == ["Hugging Face tokenizers, same ids: True", "tiktoken, same ids: True"]


def test_tiny_pretrain_prints_the_chapters_output(capsys: pytest.CaptureFixture[str]) -> None:
    """Pretraining chapter: 200 steps bring the loss from ln 320 = 5.8 to the page's 1.14 nats
    a token (floor 0.21), the model directory has the files transformers reads, and it samples."""
    lines = _run("tiny_pretrain.py", capsys)
    assert lines[0] == "130,816 parameters, 200 steps of 8 x 128 tokens"
    loss, floor = (float(w) for w in lines[1].replace(",", "").split() if w[0].isdigit())
    assert loss == pytest.approx(1.139, abs=0.05)  # float32 sums may round differently elsewhere
    assert floor == pytest.approx(0.207, abs=1e-3)  # the corpus is fixed: the floor is exact
    assert lines[2] == (
        "saved: ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', "
        "'tokenizer_config.json']"
    )
    assert lines[3].startswith("sample: Once upon a time")
    assert len(lines[3]) > 40


def test_two_replicas_prints_the_chapters_output(capsys: pytest.CaptureFixture[str]) -> None:
    """Distributed chapter: two gloo replicas average to the one-process gradient (float64);
    the calculator's peaks for Llama 2 7B."""
    lines = _run("two_replicas.py", capsys)
    assert float(lines[0].rsplit(" ", 1)[1]) < 1e-12  # the page shows 3e-17
    assert lines[1:] == [
        "both ranks hold the same gradients: True",
        "Llama 2 7B: 6.74B parameters; peak GiB a GPU,",
        "  none over 1:  100.4 (one 4096-token sequence a rank)",
        "   ddp over 8:  117.1 (one 4096-token sequence a rank)",
        "  fsdp over 8:   27.1 (one 4096-token sequence a rank)",
        "    tp over 8:   18.1 (one 4096-token sequence a rank)",
    ]
