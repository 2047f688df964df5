"""`fms_agent.agent`: the ReAct loop on scripted models; every way a tool call can go wrong comes
back to the model as an observation and never crashes the loop."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from fms_agent.agent import Agent
from fms_agent.llm import AssistantMessage, BackendError, ScriptedBackend, ToolCall
from fms_agent.tools import tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first.
        b: the second.
    """
    return a + b


@tool
def boom(x: int) -> int:
    """Always fails.

    Args:
        x: ignored.
    """
    raise ZeroDivisionError("cannot divide by zero")


@tool
def opaque() -> object:
    """Returns something JSON cannot encode."""
    return {1, 2}


@tool(timeout=0.2)
def slow() -> str:
    """Sleeps longer than its timeout."""
    time.sleep(5)
    return "late"


def call(name: str, arguments: Any, id: str = "c1") -> AssistantMessage:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return AssistantMessage(None, (ToolCall(id, name, args),))


def test_react_loop_calls_tools_then_answers() -> None:
    backend = ScriptedBackend(
        [call("add", {"a": 2, "b": 40}), lambda m: AssistantMessage(f"It is {m[-1]['content']}.")]
    )
    result = Agent(backend, [add]).run("What is 2 + 40?")
    assert result.answer == "It is 42."
    assert result.stopped == "answer"
    assert result.n_tool_calls == 1
    roles = [m["role"] for m in result.messages]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert result.messages[2] == {"role": "tool", "tool_call_id": "c1", "content": "42"}
    # the model was offered the strict schema of each tool
    assert backend.requests[0][1] == [add.openai_schema()]


def test_parallel_calls_each_get_an_observation() -> None:
    two = AssistantMessage(
        None, (ToolCall("x", "add", '{"a": 1, "b": 1}'), ToolCall("y", "add", '{"a": 2, "b": 2}'))
    )
    result = Agent(ScriptedBackend([two, "done"]), [add]).run("t")
    assert [(m["tool_call_id"], m["content"]) for m in result.messages if m["role"] == "tool"] == [
        ("x", "2"),
        ("y", "4"),
    ]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (call("multiply", {"a": 1}), "error: unknown tool 'multiply'"),
        (call("", "{oops"), "error: a tool call without a name"),
        (call("add", '{"a": 1, "b": '), "error: the arguments of tool 'add' are not valid JSON"),
        (call("add", {"a": 1}), "missing required field(s) ['b']"),
        (call("add", {"a": "one", "b": 2}), "tool 'add'.a: expected an integer, got 'one' (str)"),
        (
            call("boom", {"x": 1}),
            "error: tool 'boom' raised ZeroDivisionError: cannot divide by zero",
        ),
        (call("opaque", {}), "error: tool 'opaque' returned a value that is not JSON-serialisable"),
        (call("slow", {}), "error: tool 'slow' timed out after 0.2 s"),
    ],
)
def test_every_failure_is_an_observation(reply: AssistantMessage, expected: str) -> None:
    t0 = time.monotonic()
    result = Agent(ScriptedBackend([reply, "recovered"]), [add, boom, opaque, slow]).run("t")
    assert time.monotonic() - t0 < 3  # bounded: the slow tool's timeout is 0.2 s
    obs = result.steps[0].observations[0]
    assert obs.error
    assert expected in obs.content
    assert result.answer == "recovered"  # the loop went on
    if "unknown" in expected:
        assert "available tools: add, boom, opaque, slow" in obs.content


def test_step_budget_stops_the_loop() -> None:
    backend = ScriptedBackend([call("add", {"a": 1, "b": 1}, id=str(i)) for i in range(5)])
    result = Agent(backend, [add], max_steps=3).run("loop")
    assert result.stopped == "max_steps"
    assert result.answer is None
    assert len(result.steps) == 3
    assert len(backend.requests) == 3


def test_history_and_system_prompt() -> None:
    backend = ScriptedBackend(["second"])
    history = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"}]
    result = Agent(backend, system="Be terse.").run("again", history)
    assert [m["content"] for m in result.messages] == [
        "Be terse.",
        "first",
        "ok",
        "again",
        "second",
    ]


def test_backend_failure_propagates_as_backend_error() -> None:
    with pytest.raises(BackendError, match="ran out of replies"):
        Agent(ScriptedBackend([])).run("t")


def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match="max_steps must be >= 1, got 0"):
        Agent(ScriptedBackend([]), max_steps=0)
    with pytest.raises(ValueError, match=r"duplicates \['add'\]"):
        Agent(ScriptedBackend([]), [add, add])
    with pytest.raises(TypeError, match="must be Tool objects"):
        Agent(ScriptedBackend([]), [print])  # type: ignore[list-item]


def test_against_the_fake_endpoint(fake: Any) -> None:
    """The loop over HTTP: tool call, observation sent back, final answer."""
    from fms_agent.llm import OpenAIBackend

    fake.replies = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "k",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 20, "b": 22}'},
                }
            ],
        },
        {"role": "assistant", "content": "42"},
    ]
    result = Agent(OpenAIBackend(fake.base_url, "m", timeout=10), [add]).run("20 + 22?")
    assert result.answer == "42"
    assert fake.requests[1]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "k",
        "content": "42",
    }
    assert fake.requests[0]["tools"][0]["function"]["strict"] is True


def test_a_tool_call_in_text_that_does_not_parse_is_reported_back() -> None:
    """A text-protocol model (the fms-llm server, LocalBackend) whose `<tool_call>` block is not
    valid JSON gets a user turn saying so, not a final answer; without tools on offer the same
    text is an answer."""
    broken = 'Let me add. <tool_call>{"name": "add", "arguments": {"a": 2,</tool_call>'
    backend = ScriptedBackend([broken, call("add", {"a": 2, "b": 40}), "42"])
    result = Agent(backend, [add]).run("What is 2 + 40?")
    assert result.answer == "42"
    assert result.steps[0].feedback is not None
    assert result.steps[0].observations == ()
    turn = result.messages[2]
    assert turn["role"] == "user"
    assert turn == {"role": "user", "content": result.steps[0].feedback}
    assert "not valid JSON" in turn["content"]
    assert "add" in turn["content"]
    assert '<tool_call>{"name": "add"' in turn["content"]
    assert result.n_tool_calls == 1
    assert Agent(ScriptedBackend([broken])).run("hi").answer == broken
