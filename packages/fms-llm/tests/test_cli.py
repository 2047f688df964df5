"""The `fms-llm` command line: train, generate, eval, tokenizer, and its error reporting."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from fms_llm.cli import build_parser, main
from fms_llm.data import StoryGenerator
from fms_llm.models import load_pretrained
from fms_llm.tokenizer import BPETokenizer

Overrides = Callable[..., list[str]]


def test_subcommands() -> None:
    parser = build_parser()
    for cmd in ("train", "generate", "eval", "tokenizer"):
        assert cmd in parser.format_help()


def test_train_prints_validation_and_a_sample(
    tmp_path: Path, data_cache: Path, overrides: Overrides, capsys: pytest.CaptureFixture[str]
) -> None:
    sets = [a for o in overrides(tmp_path / "run", data_cache) for a in ("--set", o)]
    # the default preset is a Llama with grouped-query attention: --family gpt drops n_kv_heads
    assert main(["train", "--family", "gpt", "--max-steps", "4", *sets]) == 0
    out = capsys.readouterr().out
    assert "validation: loss" in out
    assert "bits/byte" in out
    assert "synthetic floor" in out
    assert "sample: Once upon a time" in out
    assert load_pretrained(tmp_path / "run" / "model").config.family == "gpt"


def test_generate_and_eval_on_a_saved_model(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = str(tiny_run / "model")
    args = ["generate", model_dir, "--prompt", "Once upon", "--max-new-tokens", "12", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.startswith("Once upon")
    assert main([*args, "--no-cache"]) == 0
    assert capsys.readouterr().out == first  # same seed, with or without the cache
    text = tmp_path / "stories.txt"
    text.write_text("\n\n".join(s.text for s in StoryGenerator(9).stories(5)))
    assert main(["eval", model_dir, "--file", str(text), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["perplexity"] == pytest.approx(
        torch.tensor(metrics["loss"]).exp().item(), rel=1e-5
    )
    assert 0 < metrics["bits_per_byte"] < 8


def test_eval_on_a_one_character_file_reports_all_three_figures(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file shorter than a window is scored as one window, with a note saying so; a single
    byte still has its bits per byte (a rounded byte count of 0 dropped it: a KeyError)."""
    text = tmp_path / "one.txt"
    text.write_text("O")
    assert main(["eval", str(tiny_run / "model"), "--file", str(text), "--json"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    assert metrics["tokens"] >= 1
    assert metrics["bits_per_byte"] > 0
    assert "fewer than a window" in captured.err


def test_a_text_corpus_without_blank_lines_is_explained(
    tmp_path: Path, data_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One file without blank lines is one document, too few to split: the error says why and
    what to do."""
    corpus = tmp_path / "lines.txt"
    corpus.write_text("".join(f"line {i} of a text without blank lines\n" for i in range(50)))
    args = ["train", "--set", f"data.corpus={json.dumps(str(corpus))}",
            "--set", f"data.cache_dir={json.dumps(str(data_cache))}",
            "--set", "data.vocab_size=300", "--out-dir", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1 document(s)" in err
    assert "a text file without blank lines is one document" in err


def test_saved_run_loads_in_transformers(tiny_run: Path) -> None:
    ours = load_pretrained(tiny_run / "model").eval()
    hf = AutoModelForCausalLM.from_pretrained(tiny_run / "model").eval()
    x = torch.randint(0, ours.config.vocab_size, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, atol=1e-5, rtol=0)


def test_errors_are_one_line_and_status_2(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--set", "model.foo=1"]) == 2
    assert "unknown key model.foo" in capsys.readouterr().err
    assert main(["train", "--set", "model.d_model=130"]) == 2
    assert "d_model=130 is not divisible by model.n_heads=4" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(tiny_run / "model", broken)
    other = BPETokenizer.train(
        ["a b c d e f"] * 3, 300, special_tokens=["<|endoftext|>"], progress=False
    )
    other.save(broken / "tokenizer.json")
    assert main(["generate", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"vocab_size={other.vocab_size}" in err
    assert "vocab_size=320" in err
    assert "do not belong together" in err
    (broken / "model.safetensors").write_bytes(b"\x00" * 10)
    assert main(["eval", str(broken), "--file", str(broken / "config.json")]) == 2
    assert "corrupt" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("tpu", "device 'tpu' is not a device PyTorch knows"),
        pytest.param(
            "cuda",
            "device 'cuda' is not available here",
            marks=pytest.mark.skipif(
                torch.cuda.is_available(), reason="needs a machine without CUDA"
            ),
        ),
    ],
)
def test_a_device_that_is_not_here_is_an_error_before_any_work(
    device: str,
    message: str,
    tiny_run: Path,
    tmp_path: Path,
    data_cache: Path,
    overrides: Overrides,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    sets = [a for o in overrides(run, data_cache) for a in ("--set", o)]
    assert main(["train", "--device", device, *sets]) == 2
    assert f"train.device: {message}" in capsys.readouterr().err
    assert not run.exists()  # nothing tokenised, nothing written
    model_dir = str(tiny_run / "model")
    assert main(["generate", model_dir, "--device", device]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "corrupt" not in err  # the model file is fine: the device is what is wrong
    text = tmp_path / "t.txt"
    text.write_text("Once upon a time there was a cat.")
    assert main(["eval", model_dir, "--file", str(text), "--device", device]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "MODEL", "--num-samples", "0"],
        ["eval", "MODEL", "--file", "x.txt", "--batch-size", "0"],
        ["eval", "MODEL", "--file", "x.txt", "--seq-len", "-4"],
    ],
)
def test_counts_below_one_are_refused_by_the_parser(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err
