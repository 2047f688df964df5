"""The agent loop against the fms-llm server (`fms_llm.serve`, started in the test on 127.0.0.1
with a tiny random GPT) and against the same model in process (`LocalBackend`): the same
two-turn transcript, message for message, through both (greedy decoding). And the loop offered a
tool over the server: it runs to a final answer without crashing."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the fms-llm server needs the fms-llm[serve] extra")

from fms_agent.agent import Agent
from fms_agent.llm import LocalBackend, OpenAIBackend
from fms_agent.session import Session
from fms_agent.tools import tool

CORPUS = ["Ada went to the garden; Bob went to the river. Where did Ada go? The garden. 42"] * 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from fms_llm.finetune.chat import IM_END, IM_START, ChatTemplate
    from fms_llm.models import GPT, GPTConfig
    from fms_llm.tokenizer import BPETokenizer
    from fms_llm.train.pretrain import EOS_TOKEN

    tok = BPETokenizer.train(
        CORPUS, 300, special_tokens=[EOS_TOKEN, IM_START, IM_END], progress=False
    )
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=tok.vocab_size, n_layers=2, d_model=32, n_heads=4, max_seq_len=1024)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    out: Path = model.eval().save_pretrained(tmp_path_factory.mktemp("served") / "tiny", tok)
    ChatTemplate().save(out)
    return out


@pytest.fixture(scope="module")
def base_url(model_dir: Path) -> Iterator[str]:
    import uvicorn

    from fms_llm.inference.engine import Engine
    from fms_llm.serve import create_app, load_served_model

    served = load_served_model(model_dir, device="cpu")
    app = create_app(served, engine=Engine(served.model, block_size=8, max_num_seqs=4))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the fms-llm server did not start in 30 s"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=30)


def _two_turns(agent: Agent) -> list[dict[str, Any]]:
    session = Session(agent)
    session.send("Where did Ada go?")
    session.send("And Bob?")
    return session.messages


def test_same_transcript_through_the_server_and_in_process(model_dir: Path, base_url: str) -> None:
    system = "Answer briefly."
    served = OpenAIBackend(base_url, "tiny", timeout=60, temperature=0.0, max_tokens=12)
    local = LocalBackend(model_dir, max_new_tokens=12, temperature=0.0)
    over_http = _two_turns(Agent(served, system=system))
    in_process = _two_turns(Agent(local, system=system))
    assert [m["role"] for m in over_http] == ["system", "user", "assistant", "user", "assistant"]
    assert over_http == in_process
    assert over_http[2]["content"]  # the model said something


@tool
def lookup(key: str) -> str:
    """Look a key up in the table.

    Args:
        key: the key.
    """
    return {"ada": "garden"}.get(key.lower(), "unknown")


def test_the_loop_with_a_tool_runs_to_an_answer_over_the_server(base_url: str) -> None:
    backend = OpenAIBackend(base_url, "tiny", timeout=60, temperature=0.0, max_tokens=12)
    result = Agent(backend, [lookup], max_steps=3).run("Where did Ada go?")
    assert result.stopped in ("answer", "max_steps")
    assert result.messages[0] == {"role": "user", "content": "Where did Ada go?"}
    assert len(result.steps) >= 1
