"""`fms-llm finetune {sft,dpo,grpo}`: presets, --set, QLoRA end to end, a complete saved model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from fms_llm.cli import main
from fms_llm.finetune.chat import CHATML_TEMPLATE, IM_END, IM_START
from fms_llm.finetune.run import add_chat_tokens, load_finetune_config
from fms_llm.models import load_pretrained
from fms_llm.tokenizer import BPETokenizer
from fms_llm.train.config import ConfigError

FAST = [
    "--set", "data.source=\"arithmetic\"", "--set", "data.n=60", "--set", "data.eval_n=4",
    "--set", "train.steps=3", "--set", "train.batch_size=4", "--set", "train.warmup_steps=1",
    "--quiet",
]  # fmt: skip


def test_presets_load_and_bad_keys_are_errors() -> None:
    for method in ("sft", "dpo", "grpo"):
        cfg = load_finetune_config(method, None, ["train.steps=17"])
        assert cfg.train.steps == 17
    with pytest.raises(ConfigError, match=r"unknown key lora\.rank"):
        load_finetune_config("sft", None, ["lora.rank=4"])
    with pytest.raises(ConfigError, match=r"needs lora\.enabled=true"):
        load_finetune_config("sft", None, ['model.quantize="nf4"'])
    with pytest.raises(ConfigError, match="needs examples with known answers"):
        load_finetune_config("dpo", None, ['data.source="dialogues"'])


def test_add_chat_tokens_keeps_the_old_ids_and_logits(tiny_run: Path) -> None:
    model = load_pretrained(tiny_run / "model").eval()
    tok = BPETokenizer.load(tiny_run / "model" / "tokenizer.json")
    grown, tok2 = add_chat_tokens(model, tok)
    assert tok2.encode("Once upon a time") == tok.encode("Once upon a time")
    assert {IM_START, IM_END} <= set(tok2.special_tokens)
    assert grown.config.vocab_size == max(tok2.vocab) + 1
    import torch

    idx = torch.tensor([tok.encode("Once upon a time")])
    assert torch.allclose(grown.eval()(idx)[..., : model.config.vocab_size], model(idx), atol=1e-6)


def test_sft_with_qlora_then_dpo_and_grpo_from_the_cli(
    tiny_run: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    sft_dir = tmp_path / "sft"
    status = main(
        ["finetune", "sft", "--model", str(tiny_run / "model"), "--out-dir", str(sft_dir),
         "--set", "lora.enabled=true", "--set", 'model.quantize="nf4"', *FAST]
    )  # fmt: skip
    assert status == 0
    assert "held-out exact-match accuracy" in capsys.readouterr().out
    saved = sft_dir / "model"
    assert (sft_dir / "adapter.safetensors").is_file()
    metrics = json.loads((sft_dir / "metrics.json").read_text())
    assert metrics["train"]["step"] == 3
    # the saved directory is complete: transformers renders our chat template from it
    hf = PreTrainedTokenizerFast(tokenizer_file=str(saved / "tokenizer.json"))
    assert (
        json.loads((saved / "tokenizer_config.json").read_text())["chat_template"]
        == CHATML_TEMPLATE
    )
    load_pretrained(saved)
    for method in ("dpo", "grpo"):
        out = tmp_path / method
        assert main(["finetune", method, "--model", str(saved), "--out-dir", str(out), *FAST]) == 0
        assert (out / "model" / "model.safetensors").is_file()
    assert hf.convert_tokens_to_ids(IM_END) == BPETokenizer.load(
        saved / "tokenizer.json"
    ).token_to_id(IM_END)


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert (
        main(["finetune", "sft", "--model", str(tmp_path), "--out-dir", str(tmp_path / "o")]) == 2
    )
    assert "has no tokenizer.json" in capsys.readouterr().err
    assert main(["finetune", "grpo", "--set", "method.group_size=1"]) == 2
    assert "group_size must be >= 2" in capsys.readouterr().err


class _Killed(Exception):
    """Stands for the process dying mid-run."""


@pytest.mark.parametrize("method", ["sft", "grpo"])
def test_killed_finetune_resumed_with_resume_equals_the_uninterrupted_run(
    tiny_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    method: str,
) -> None:
    """`fms-llm finetune ... --resume` after a crash at step 5 (checkpoint at 4) ends with the
    same bytes of model.safetensors as the uninterrupted 6-step run (CPU), LoRA adapters
    included; a second run into the same directory without --resume is refused."""
    from fms_dl.torch import Trainer

    args = [
        "--model", str(tiny_run / "model"), *FAST, "--set", "train.steps=6",
        "--set", "train.checkpoint_every=2", "--set", "lora.enabled=true",
    ]  # fmt: skip
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main(["finetune", method, "--out-dir", str(full), *args]) == 0
    step = Trainer.train_step

    def dies_at_step_5(self: Trainer) -> dict[str, float]:
        if self.step == 4:
            raise _Killed
        return step(self)

    monkeypatch.setattr(Trainer, "train_step", dies_at_step_5)
    with pytest.raises(_Killed):
        main(["finetune", method, "--out-dir", str(killed), *args])
    monkeypatch.setattr(Trainer, "train_step", step)
    assert not (killed / "model").exists()
    assert main(["finetune", method, "--out-dir", str(killed), *args]) == 2  # no --resume
    assert main(["finetune", method, "--out-dir", str(killed), *args, "--resume"]) == 0
    a = (full / "model" / "model.safetensors").read_bytes()
    b = (killed / "model" / "model.safetensors").read_bytes()
    assert a == b
    changed = [*args, "--set", "train.lr=0.5", "--resume"]
    assert main(["finetune", method, "--out-dir", str(killed), *changed]) == 2
    assert "differs from the run" in capsys.readouterr().err
