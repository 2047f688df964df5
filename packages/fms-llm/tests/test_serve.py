"""The OpenAI-compatible server, judged by the official `openai` client: non-streaming and
streaming answers equal the model's own greedy decoding (`fms_llm.generate.generate`) token for
token, usage counts, n and seeds, stop strings, tool calls, OpenAI-style 4xx errors, 429 from the
bounded queue, cancellation on disconnect, and 32 concurrent streaming clients. The server runs
in-process on 127.0.0.1 (a free port, uvicorn in a thread) with bounded waits everywhere."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
import uvicorn

from fms_llm.finetune.chat import IM_END, IM_START, ChatTemplate
from fms_llm.generate import generate
from fms_llm.inference.engine import Engine
from fms_llm.models import Llama, LlamaConfig
from fms_llm.serve import create_app, load_served_model
from fms_llm.serve.protocol import StopStringFilter
from fms_llm.tokenizer import BPETokenizer

EOT = "<|endoftext|>"
CORPUS = ["In the beginning the garden was green and the river ran north. "] * 3 + [
    "Ada went to the garden; Bob went to the river. Where did Ada go? The garden. 0123456789"
] * 3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = BPETokenizer.train(CORPUS, 300, special_tokens=[EOT, IM_START, IM_END], progress=False)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.vocab_size, n_layers=2, d_model=32, n_heads=4,
                      n_kv_heads=2, max_seq_len=1024)  # fmt: skip
    model = Llama(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    out = model.eval().save_pretrained(tmp_path_factory.mktemp("served") / "tiny", tok)
    ChatTemplate().save(out)
    return out


class _Server:
    def __init__(self, app: Any) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start in 30 s"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[tuple[_Server, Any]]:
    served = load_served_model(model_dir, device="cpu")
    app = create_app(served, engine=Engine(served.model, block_size=8, max_num_seqs=32))
    srv = _Server(app)
    yield srv, app
    srv.close()


@pytest.fixture(scope="module")
def client(server: tuple[_Server, Any]) -> openai.OpenAI:
    return openai.OpenAI(base_url=server[0].url + "/v1", api_key="none", max_retries=0, timeout=60)


def _reference(
    app: Any, prompt_ids: list[int], max_tokens: int, stop_ids: tuple[int, ...]
) -> tuple[str, int]:
    """Greedy text of `prompt_ids` decoded alone by `generate`, cut at the first stop id; and the
    number of tokens generated (the stop token counted)."""
    served = app.state.served
    out = generate(served.model, torch.tensor([prompt_ids]), max_tokens, temperature=0)
    ids = out[0, len(prompt_ids) :].tolist()
    for k, t in enumerate(ids):
        if t in stop_ids:
            return served.tokenizer.decode(ids[:k]), k + 1
    return served.tokenizer.decode(ids), len(ids)


def _chat_prompt(app: Any, messages: list[dict[str, Any]]) -> list[int]:
    served = app.state.served
    ids, _ = served.chat_template.encode(served.tokenizer, messages, add_generation_prompt=True,
                                        require_assistant=False)  # fmt: skip
    return list(ids)


MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Where did Ada go?"},
]


def test_models_health_and_metrics(server: tuple[_Server, Any], client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(server[0].url + "/health", timeout=10).json() == {"status": "ok"}
    text = httpx.get(server[0].url + "/metrics", timeout=10).text
    for name in ("fms_requests_total", "fms_queue_depth", "fms_kv_blocks_in_use",
                 "fms_generation_tokens_per_second"):  # fmt: skip
        assert f"# TYPE {name} " in text
        assert any(line.startswith(name + " ") for line in text.splitlines())


def test_chat_equals_greedy_decoding_with_and_without_streaming(
    server: tuple[_Server, Any], client: openai.OpenAI
) -> None:
    app = server[1]
    prompt = _chat_prompt(app, MESSAGES)
    want, n_gen = _reference(app, prompt, 20, app.state.served.chat_stop_ids)
    r = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=20, temperature=0
    )  # type: ignore[arg-type]
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == want
    assert (
        r.choices[0].finish_reason == ("length" if n_gen == 20 and want else "stop") or n_gen < 20
    )
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(prompt), n_gen)
    assert r.usage.total_tokens == len(prompt) + n_gen

    stream = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=20, temperature=0, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want
    reasons = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert reasons == [r.choices[0].finish_reason]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == n_gen
    assert all(c.usage is None for c in chunks[:-1])


def test_completions_n_seed_and_stop_strings(
    server: tuple[_Server, Any], client: openai.OpenAI
) -> None:
    app = server[1]
    tok = app.state.served.tokenizer
    prompt = "In the beginning"
    want, _ = _reference(app, tok.encode(prompt), 12, app.state.served.stop_token_ids)
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0)
    assert r.choices[0].text == want
    # a stop string taken from the greedy answer: the text ends just before it
    assert len(want) > 4
    stop = want[3:5]
    r = client.completions.create(
        model="tiny", prompt=prompt, max_tokens=12, temperature=0, stop=[stop]
    )
    assert r.choices[0].text == want[: want.index(stop)]
    assert r.choices[0].finish_reason == "stop"
    streamed = client.completions.create(
        model="tiny", prompt=prompt, max_tokens=12, temperature=0, stop=[stop], stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == want[: want.index(stop)]
    # n samples with a seed: n distinct-seeded choices, the same again for the same seed
    kw: dict[str, Any] = {
        "model": "tiny",
        "prompt": prompt,
        "max_tokens": 10,
        "temperature": 1.0,
        "n": 3,
    }
    a = client.completions.create(seed=7, **kw)
    b = client.completions.create(seed=7, **kw)
    assert sorted(c.index for c in a.choices) == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert len({c.text for c in a.choices}) > 1


def test_tool_calls_in_the_openai_format(model_dir: Path) -> None:
    """A model that answers with a `<tool_call>` block gives OpenAI `tool_calls` (the random
    model cannot be made to, so the engine is replaced by one replaying a fixed answer)."""
    served = load_served_model(model_dir, device="cpu")
    tok = served.tokenizer
    answer = tok.encode(
        '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
    answer.append(tok.special_tokens[IM_END])

    class Replay(Engine):
        def _sample(self, seq, logits):  # type: ignore[no-untyped-def]
            return answer[seq.num_generated]

    app = create_app(served, engine=Replay(served.model, block_size=8))
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip
    srv = _Server(app)
    try:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0, timeout=60)
        r = c.chat.completions.create(model="tiny", messages=MESSAGES, tools=tools, max_tokens=200)  # type: ignore[arg-type]
        assert r.choices[0].finish_reason == "tool_calls"
        call = r.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert call.function.name == "weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        assert r.choices[0].message.content is None
        chunks = list(c.chat.completions.create(model="tiny", messages=MESSAGES, tools=tools,  # type: ignore[arg-type]
                                                max_tokens=200, stream=True))  # fmt: skip
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == ""
        calls = [tc for ch in chunks for tc in (ch.choices[0].delta.tool_calls or [])]
        assert [tc.function.name for tc in calls] == ["weather"]  # type: ignore[union-attr]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        # the conversation continues with the call and the tool's answer
        follow = [*MESSAGES, r.choices[0].message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]  # fmt: skip
        c.chat.completions.create(model="tiny", messages=follow, max_tokens=5)  # type: ignore[arg-type]
    finally:
        srv.close()


def test_the_server_uses_the_chat_modules_tool_protocol() -> None:
    """protocol.py re-exports the tools' prompt and the `<tool_call>` parser of
    fms_llm.finetune.chat (one protocol, importable without FastAPI), it does not redefine them."""
    from fms_llm.finetune import chat
    from fms_llm.serve import protocol

    assert protocol.tools_system_prompt is chat.tools_system_prompt
    assert protocol.parse_tool_calls is chat.parse_tool_calls
    assert protocol.TOOL_CALL_START == chat.TOOL_CALL_START == "<tool_call>"


def test_bad_input_gets_openai_4xx_errors(
    server: tuple[_Server, Any], client: openai.OpenAI
) -> None:
    msgs: Any = MESSAGES
    with pytest.raises(
        openai.BadRequestError, match="max_tokens: expected an integer >= 1, got -1"
    ):
        client.chat.completions.create(model="tiny", messages=msgs, max_tokens=-1)
    with pytest.raises(
        openai.BadRequestError, match=r"temperature: expected a number in \[0.0, 2.0\]"
    ):
        client.chat.completions.create(model="tiny", messages=msgs, temperature=5)
    with pytest.raises(openai.NotFoundError, match="model 'gpt-4' does not exist"):
        client.chat.completions.create(model="gpt-4", messages=msgs)
    with pytest.raises(openai.BadRequestError, match="role must be one of"):
        client.chat.completions.create(model="tiny", messages=[{"role": "robot", "content": "x"}])  # type: ignore[misc,list-item]
    with pytest.raises(openai.BadRequestError, match="context is 1024"):
        client.completions.create(model="tiny", prompt=[5] * 1100, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="token ids in"):
        client.completions.create(model="tiny", prompt=[99999], max_tokens=4)
    url = server[0].url
    r = httpx.post(url + "/v1/chat/completions", content=b"{not json", timeout=10,
                   headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(url + "/v1/completions", json=[1, 2], timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(url + "/v1/nothing", timeout=10).status_code == 404


def test_a_full_queue_answers_429(model_dir: Path) -> None:
    """Capacity 1 (one running, no queue) and an engine that is never stepped (the app's
    lifespan is not run by the in-memory transport): the second request is refused at once."""
    served = load_served_model(model_dir, device="cpu")
    app = create_app(served, engine=Engine(served.model, block_size=8, max_num_seqs=1), max_queue=0)

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            c = openai.AsyncOpenAI(base_url="http://test/v1", api_key="none", http_client=http,
                                   max_retries=0)  # fmt: skip
            first = asyncio.ensure_future(
                c.completions.create(model="tiny", prompt="In", max_tokens=5)
            )
            await asyncio.sleep(0.3)
            with pytest.raises(openai.RateLimitError, match="at capacity"):
                await c.completions.create(model="tiny", prompt="In", max_tokens=5)
            first.cancel()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_client_that_disconnects_cancels_its_request(server: tuple[_Server, Any]) -> None:
    app = server[1]
    engine = app.state.runtime.engine
    prompt = app.state.served.tokenizer.encode("Bob went to the river")
    _, n_alone = _reference(app, prompt, 200, app.state.served.stop_token_ids)
    assert n_alone == 200  # precondition: this answer runs 200 tokens unless cancelled
    aborts = engine.stats.aborts
    body = {"model": "tiny", "prompt": prompt, "max_tokens": 200, "temperature": 0, "stream": True}
    with httpx.stream("POST", server[0].url + "/v1/completions", json=body, timeout=30) as r:
        for i, _line in enumerate(r.iter_lines()):
            if i >= 2:
                break
    deadline = time.monotonic() + 20
    while engine.stats.aborts == aborts or engine.num_running or app.state.runtime.in_flight:
        assert time.monotonic() < deadline, "the request was not cancelled within 20 s"
        time.sleep(0.05)
    assert engine.num_blocks_in_use == 0


def test_32_concurrent_streaming_clients(server: tuple[_Server, Any]) -> None:
    """32 streams at once, 6 tokens each: every stream completes, each with its own prompt's
    answer (the greedy text of that prompt decoded alone), none lost or mixed up."""
    app = server[1]
    tok = app.state.served.tokenizer
    prompts = [f"Ada {i} went to the" for i in range(32)]
    want = [_reference(app, tok.encode(p), 6, app.state.served.stop_token_ids)[0] for p in prompts]

    async def one(c: openai.AsyncOpenAI, p: str) -> tuple[str, str | None]:
        stream = await c.completions.create(
            model="tiny", prompt=p, max_tokens=6, temperature=0, stream=True
        )
        text, reason = "", None
        async for chunk in stream:
            text += chunk.choices[0].text
            reason = chunk.choices[0].finish_reason or reason
        return text, reason

    async def main() -> list[tuple[str, str | None]]:
        async with openai.AsyncOpenAI(base_url=server[0].url + "/v1", api_key="none",
                                      max_retries=0, timeout=60) as c:  # fmt: skip
            return await asyncio.gather(*(one(c, p) for p in prompts))

    got = asyncio.run(asyncio.wait_for(main(), 120))
    assert [g[0] for g in got] == want
    assert all(g[1] in ("stop", "length") for g in got)


def test_stop_string_filter_holds_back_what_may_become_a_stop() -> None:
    f = StopStringFilter(["END"], hold=["<tool_call>"])
    assert f.feed("abc E") == ("abc ", False)  # "E" may start "END"
    assert f.feed("abc EX") == ("EX", False)
    assert f.feed("abc EX caf\ufffd") == (" caf", False)  # an unfinished UTF-8 character
    assert f.feed("abc EX café EN") == ("é ", False)
    assert f.feed("abc EX café END more") == ("", True)
    g = StopStringFilter([], hold=["<tool_call>"])
    assert g.feed("hi <tool") == ("hi ", False)
    assert g.feed('hi <tool_call>{"name"', final=True) == ("", False)


def test_serve_cli_answers_on_its_port(model_dir: Path) -> None:
    """`fms-llm serve DIR` (a subprocess) answers /health and a completion on its port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fms_llm.cli", "serve", str(model_dir), "--port", str(port),
         "--device", "cpu", "--max-num-seqs", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180  # importing torch on a loaded 2-core machine is slow
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "fms-llm serve did not answer /health in 180 s"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=30,
                       json={"model": "tiny", "prompt": "In", "max_tokens": 3})  # fmt: skip
        assert r.status_code == 200
        assert r.json()["usage"]["completion_tokens"] >= 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_without_the_extra_serve_names_pip_install(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With FastAPI unimportable, `fms-llm serve` exits 2 naming `pip install fms-llm[serve]`;
    and no module outside `fms_llm.serve` imports FastAPI or uvicorn (so `import fms_llm` works
    without the extra)."""
    from fms_llm.cli import main

    monkeypatch.setitem(sys.modules, "fastapi", None)
    for name in [m for m in sys.modules if m.startswith("fms_llm.serve")]:
        monkeypatch.delitem(sys.modules, name)
    assert main(["serve", str(model_dir)]) == 2
    assert "pip install fms-llm[serve]" in capsys.readouterr().err
    src = Path(__file__).parents[1] / "src" / "fms_llm"
    for path in src.rglob("*.py"):
        if "serve" in path.relative_to(src).parts[:1]:
            continue
        text = path.read_text(encoding="utf-8")
        assert "import fastapi" not in text, path
        assert "from fastapi" not in text, path
        assert "import uvicorn" not in text, path


# -- serving a quantised model, and speculative decoding with a draft ---------------------------


@pytest.fixture(scope="module")
def draft_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A draft: the target's weights with a little noise (it agrees often but not always), saved
    with the target's tokenizer."""
    served = load_served_model(model_dir, device="cpu")
    torch.manual_seed(1)
    with torch.no_grad():
        for p in served.model.parameters():
            p.add_(0.15 * torch.randn_like(p))
    return served.model.save_pretrained(
        tmp_path_factory.mktemp("draft") / "draft", served.tokenizer
    )


def _greedy_completion(
    model: Any, tok: BPETokenizer, prompt: str, n: int, stops: tuple[int, ...]
) -> str:
    ids = tok.encode(prompt)
    out = generate(model, torch.tensor([ids]), n, temperature=0)[0, len(ids) :].tolist()
    for k, t in enumerate(out):
        if t in stops:
            return tok.decode(out[:k])
    return tok.decode(out)


def _served_app(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> Any:
    """Run `fms-llm serve ARGV` in-process with uvicorn replaced: returns the app it would serve."""
    import fms_llm.serve
    from fms_llm.cli import main

    apps: list[Any] = []
    monkeypatch.setattr(fms_llm.serve, "serve", lambda app, **kw: apps.append(app))
    assert main(["serve", *argv, "--device", "cpu", "--block-size", "8"]) == 0
    return apps[0]


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_serve_quantize_answers_as_the_in_process_quantized_model(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """`fms-llm serve DIR --quantize FMT`: the openai client's greedy answers (plain and
    streamed) equal `generate` on `load_quantized(DIR, FMT)`, token for token."""
    from fms_llm.quantize import QuantizedLinear, load_quantized

    app = _served_app(monkeypatch, [str(model_dir), "--quantize", fmt])
    served = app.state.served
    assert served.quantization == fmt
    assert all(not isinstance(m, torch.nn.Linear) for m in served.model.modules())
    assert any(isinstance(m, QuantizedLinear) for m in served.model.modules())
    reference = load_quantized(model_dir, fmt)  # type: ignore[arg-type]
    tok = served.tokenizer
    prompt = "Ada went to the"
    want = _greedy_completion(reference, tok, prompt, 16, served.stop_token_ids)
    srv = _Server(app)
    try:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0, timeout=60)
        r = c.completions.create(model="tiny", prompt=prompt, max_tokens=16, temperature=0)
        assert r.choices[0].text == want
        s = c.completions.create(
            model="tiny", prompt=prompt, max_tokens=16, temperature=0, stream=True
        )
        assert "".join(ch.choices[0].text for ch in s if ch.choices) == want
    finally:
        srv.close()


def test_serve_draft_answers_as_the_target_alone_and_reports_acceptance(
    model_dir: Path, draft_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fms-llm serve DIR --draft DRAFT`: greedy chat and completion answers, plain and streamed,
    and 8 concurrent streams equal the target decoded alone; /metrics reports the draft tokens
    proposed and accepted and the acceptance rate, which lies strictly between 0 and 1 for this
    noisy copy of the target."""
    app = _served_app(monkeypatch, [str(model_dir), "--draft", str(draft_dir),
                                    "--num-speculative-tokens", "3"])  # fmt: skip
    engine = app.state.runtime.engine
    assert engine.draft_runner is not None
    assert engine.num_speculative_tokens == 3
    served = app.state.served
    tok = served.tokenizer
    prompts = [f"Bob {i} went to the" for i in range(8)]
    want = [_greedy_completion(served.model, tok, p, 24, served.stop_token_ids) for p in prompts]
    chat_prompt = _chat_prompt(app, MESSAGES)
    want_chat, _ = _reference(app, chat_prompt, 20, served.chat_stop_ids)
    srv = _Server(app)
    try:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0, timeout=60)
        r = c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=20, temperature=0)  # type: ignore[arg-type]
        assert r.choices[0].message.content == want_chat
        r2 = c.completions.create(model="tiny", prompt=prompts[0], max_tokens=24, temperature=0)
        assert r2.choices[0].text == want[0]

        async def one(ac: openai.AsyncOpenAI, p: str) -> str:
            stream = await ac.completions.create(model="tiny", prompt=p, max_tokens=24,
                                                 temperature=0, stream=True)  # fmt: skip
            return "".join([ch.choices[0].text async for ch in stream if ch.choices])

        async def main() -> list[str]:
            async with openai.AsyncOpenAI(base_url=srv.url + "/v1", api_key="none",
                                          max_retries=0, timeout=60) as ac:  # fmt: skip
                return await asyncio.gather(*(one(ac, p) for p in prompts))

        assert asyncio.run(asyncio.wait_for(main(), 120)) == want
        text = httpx.get(srv.url + "/metrics", timeout=10).text
        values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                  if line and not line.startswith("#")}  # fmt: skip
        proposed = values["fms_speculative_draft_tokens_total"]
        accepted = values["fms_speculative_accepted_tokens_total"]
        assert proposed > 0
        assert 0 < accepted < proposed
        assert values["fms_speculative_acceptance_rate"] == pytest.approx(accepted / proposed)
    finally:
        srv.close()


def test_serve_refuses_a_bad_draft_a_missing_directory_and_an_unknown_format(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fms_llm.cli import main

    served = load_served_model(model_dir, device="cpu")
    cfg = LlamaConfig(vocab_size=served.model.config.vocab_size + 4, n_layers=1, d_model=16,
                      n_heads=4, n_kv_heads=2, max_seq_len=1024)  # fmt: skip
    other = Llama(cfg).save_pretrained(tmp_path / "other-vocab")
    assert main(["serve", str(model_dir), "--draft", str(other), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"has vocab_size={cfg.vocab_size} but the target 'tiny' has vocab_size=" in err
    # same size, another tokenizer: its ids mean other tokens
    tok2 = BPETokenizer.train([line[::-1] for line in CORPUS], served.tokenizer.vocab_size,
                              special_tokens=[EOT, IM_START, IM_END], progress=False)  # fmt: skip
    assert tok2.vocab_size == served.tokenizer.vocab_size
    same = served.model.save_pretrained(tmp_path / "other-tok", tok2)
    assert main(["serve", str(model_dir), "--draft", str(same), "--device", "cpu"]) == 2
    assert "is not the target's" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "nowhere"), "--device", "cpu"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(["serve", str(model_dir), "--draft", str(tmp_path / "nodraft"), "--device", "cpu"])
        == 2
    )
    assert f"draft directory {tmp_path / 'nodraft'} does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(model_dir), "--quantize", "int3"])
    assert exit_info.value.code == 2
    assert "argument --quantize: invalid choice: 'int3'" in capsys.readouterr().err
    assert main(["serve", str(model_dir), "--group-size", "64", "--device", "cpu"]) == 2
    assert "--group-size needs --quantize int4 or nf4" in capsys.readouterr().err
    with pytest.raises(ValueError, match="quantize must be one of"):
        load_served_model(model_dir, quantize="fp8")
