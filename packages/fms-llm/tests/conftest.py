"""Shared fixtures of the fms-llm tests: offline Hugging Face, one thread, tiny run configs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from fms_llm.inference.engine import Engine, SamplingParams


os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The shapes are tiny: extra threads only add contention on a shared 2-core machine.
torch.set_num_threads(1)


def tiny_overrides(out_dir: Path, cache: Path, **extra: object) -> list[str]:
    """Overrides that shrink any preset to a seconds-long CPU run on the synthetic corpus."""
    base: dict[str, object] = {
        "data.corpus": "synthetic",
        "data.synthetic_docs": 600,
        "data.vocab_size": 320,
        "data.val_fraction": 0.1,
        "data.cache_dir": str(cache),
        "model.n_layers": 1,
        "model.d_model": 32,
        "model.n_heads": 2,
        "model.max_seq_len": 192,
        "train.seq_len": 32,
        "train.batch_size": 4,
        "train.max_steps": 12,
        "train.warmup_steps": 2,
        "train.eval_every": 6,
        "train.eval_batches": 2,
        "train.checkpoint_every": 6,
        "train.log_every": 3,
        "train.out_dir": str(out_dir),
        "train.progress": False,
        "train.peak_flops": 1e11,
        "sample.prompt": "Once upon a time",
        "sample.max_new_tokens": 8,
    }
    base.update(extra)
    out = []
    for k, v in base.items():
        if isinstance(v, str):
            v = '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        elif isinstance(v, bool):
            v = str(v).lower()
        elif v is None:
            v = "none"
        out.append(f"{k}={v}")
    return out


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A token-shard cache shared by the tests of a session."""
    return tmp_path_factory.mktemp("fms-llm-cache")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, data_cache: Path) -> Path:
    """One finished tiny run on the synthetic corpus (its directory)."""
    from fms_llm.train import load_config, pretrain

    out = tmp_path_factory.mktemp("runs") / "tiny"
    pretrain(load_config("tiny", tiny_overrides(out, data_cache)))
    return out


def run_arrivals(
    engine: Engine, arrivals: list[tuple[int, list[int], SamplingParams]]
) -> dict[str, list[int]]:
    """Drive an inference `Engine`: add each prompt at its step number (arrivals are
    `(step, prompt ids, SamplingParams)`), step until every request is done, and return the
    generated ids by request id. Bounded: a scheduler that never finishes fails the test."""
    got: dict[str, list[int]] = {}
    pending = sorted(arrivals, key=lambda a: a[0])
    for step in range(2000):
        while pending and pending[0][0] <= step:
            _, prompt, params = pending.pop(0)
            got[engine.add_request(prompt, params)] = []
        if not pending and not engine.has_unfinished():
            break
        for out in engine.step():
            got[out.request_id].extend(out.new_token_ids)
    assert not engine.has_unfinished()
    return got


@pytest.fixture(scope="session")
def engine_run() -> object:
    """The `run_arrivals` helper."""
    return run_arrivals


@pytest.fixture(scope="session")
def overrides() -> object:
    """The `tiny_overrides` helper."""
    return tiny_overrides


@pytest.fixture(scope="session")
def chat_tok() -> object:
    """A small BPE tokenizer with the chat special tokens, trained on rendered story questions
    and arithmetic (shared by the fine-tuning tests; trained once a session)."""
    from fms_llm.finetune.chat import IM_END, IM_START, ChatTemplate
    from fms_llm.finetune.data import arithmetic, story_qa
    from fms_llm.tokenizer import BPETokenizer

    t = ChatTemplate()
    corpus = [t.render(e.messages) for e in story_qa(300) + arithmetic(300)]
    return BPETokenizer.train(
        corpus, vocab_size=420, special_tokens=[IM_START, IM_END], progress=False
    )
