"""The agent loop against the fms-llm server (`fms_llm.serve`, started in the test on 127.0.0.1)
and against the same model in process (`LocalBackend`): the same two-turn transcript, message for
message, through both (greedy decoding), tool-call turns included. The model is a tiny GPT
trained here in seconds to answer by calling a look-up tool."""

from __future__ import annotations

import json
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

SYSTEM = "Answer with the table."


@tool
def lookup(key: str) -> str:
    """Look a person up in the table of where people went.

    Args:
        key: the person's name.
    """
    return {"ada": "garden", "bob": "river"}.get(key.lower(), "unknown")


def _call(i: int, key: str) -> dict[str, Any]:
    fn = {"name": "lookup", "arguments": json.dumps({"key": key})}
    return {"role": "assistant", "content": None, "tool_calls": [{"id": f"c{i}", "type": "function", "function": fn}]}  # fmt: skip


# the two-turn session the model is trained on: each question answered by a look-up, then a
# sentence holding the tool's answer
TRANSCRIPT: list[dict[str, Any]] = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Where did Ada go?"},
    _call(0, "ada"),
    {"role": "tool", "tool_call_id": "c0", "content": "garden"},
    {"role": "assistant", "content": "Ada went to the garden."},
    {"role": "user", "content": "And Bob?"},
    _call(1, "bob"),
    {"role": "tool", "tool_call_id": "c1", "content": "river"},
    {"role": "assistant", "content": "Bob went to the river."},
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT that calls tools: trained from scratch (tokenizer included) by fms_llm's SFT
    for 120 steps on the session above, rendered with the tools' prompt the server adds (about
    5 CPU-seconds). A random model never writes a `<tool_call>`; this one does."""
    import torch

    from fms_llm.finetune import TrainArgs, sft
    from fms_llm.finetune.chat import IM_END, IM_START, ChatTemplate, add_tools_prompt
    from fms_llm.models import GPT, GPTConfig
    from fms_llm.tokenizer import BPETokenizer
    from fms_llm.train.pretrain import EOS_TOKEN

    conversation = add_tools_prompt(TRANSCRIPT, [lookup.openai_schema()])
    text = ChatTemplate().render(conversation)
    tok = BPETokenizer.train(
        [text] * 4, 400, special_tokens=[EOS_TOKEN, IM_START, IM_END], progress=False
    )
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=tok.vocab_size, n_layers=2, d_model=64, n_heads=4, max_seq_len=512)
    )
    args = TrainArgs(steps=120, batch_size=1, lr=3e-3, warmup_steps=5, log_every=20, device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: more threads only contend on a loaded machine
    try:
        sft(model, tok, [conversation], args)
    finally:
        torch.set_num_threads(threads)
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


def _ids_by_order(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The transcript with each tool-call id replaced by its order of appearance: the server and
    `parse_tool_calls` draw random ids (as OpenAI does), and ids never reach the prompt."""
    names: dict[str, str] = {}
    out = json.loads(json.dumps(messages))
    for m in out:
        for c in m.get("tool_calls") or []:
            c["id"] = names.setdefault(c["id"], f"id{len(names)}")
        if m.get("role") == "tool":
            m["tool_call_id"] = names[m["tool_call_id"]]
    return out


def test_same_transcript_with_tool_calls_through_the_server_and_in_process(
    model_dir: Path, base_url: str
) -> None:
    """The agent loop over HTTP (OpenAIBackend, the fms-llm server on 127.0.0.1) and in process
    (LocalBackend on the same directory): the same two-turn session, tool-call turns and tool
    results included, message for message (greedy decoding; ids by order)."""
    served = OpenAIBackend(
        base_url, "tiny", timeout=60, max_retries=0, temperature=0.0, max_tokens=48
    )
    local = LocalBackend(model_dir, max_new_tokens=48, temperature=0.0)
    over_http = _two_turns(Agent(served, [lookup], system=SYSTEM, max_steps=3))
    in_process = _two_turns(Agent(local, [lookup], system=SYSTEM, max_steps=3))
    assert [m["role"] for m in over_http] == [m["role"] for m in TRANSCRIPT]
    assert _ids_by_order(over_http) == _ids_by_order(in_process)
    # the model called the tool, the tool's answer came back, and the reply used it
    assert _ids_by_order(over_http) == _ids_by_order(TRANSCRIPT)
    call_ids = [c["id"] for m in over_http for c in m.get("tool_calls") or []]
    assert [m["tool_call_id"] for m in over_http if m["role"] == "tool"] == call_ids
    # streamed over the server, the first reply is the same tool call, reassembled from deltas
    last = None
    for chunk in served.stream(over_http[:2], [lookup.openai_schema()]):
        last = chunk.message
    assert last is not None
    assert [(c.name, c.arguments) for c in last.tool_calls] == [("lookup", '{"key": "ada"}')]


def test_same_transcript_without_tools_through_the_server_and_in_process(
    model_dir: Path, base_url: str
) -> None:
    """No tools on offer: no tools' prompt on either side, plain text replies, still equal."""
    served = OpenAIBackend(base_url, "tiny", timeout=60, temperature=0.0, max_tokens=12)
    local = LocalBackend(model_dir, max_new_tokens=12, temperature=0.0)
    over_http = _two_turns(Agent(served, system="Answer briefly."))
    in_process = _two_turns(Agent(local, system="Answer briefly."))
    assert [m["role"] for m in over_http] == ["system", "user", "assistant", "user", "assistant"]
    assert over_http == in_process
    assert over_http[2]["content"]  # the model said something
