r"""The agent: the ReAct loop of reasoning, acting (tool calls) and observing, under a step budget.

ReAct (Yao et al., 2023) interleaves a model's reasoning with actions whose results it reads
before going on. With native tool calling the loop is short:

1. send the conversation and the tools' schemas to the model;
2. if its reply has no tool calls, the reply's text is the **final answer**: stop;
3. else run each call and append its result as a `tool` message (an **observation**); go to 1,
   unless `max_steps` model calls have been spent.

The loop is the easy part; what makes an agent dependable is that *nothing the model writes can
crash it*. A call to a tool that does not exist, arguments that are not JSON, arguments that do
not fit the schema, a tool that raises, returns a value JSON cannot encode or runs past its
timeout: each becomes an observation that says what went wrong (naming the tool and the
argument), so that the model can correct itself on the next step. A model that calls tools in
text (the `<tool_call>{json}</tool_call>` protocol of [fms_llm.finetune.chat][]) can also write a
block that does not parse; the server and [LocalBackend][fms_agent.llm.LocalBackend] leave such a
block in the reply's text, so a reply that still holds `<tool_call>` while tools are on offer is
not taken as the final answer: the agent tells the model, in a user turn, that its call did not
parse and how to write one. Only a failing *back end* (an endpoint that is down) ends the run,
with a [BackendError][fms_agent.llm.BackendError].

A timeout runs the tool on a worker thread and stops *waiting* after `timeout` seconds; Python
cannot kill a thread, so a tool that must be stopped for real belongs in a separate process:
that is what [fms_agent.sandbox][] is for.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fms_agent.llm import AssistantMessage, Backend, Message, ToolCall
from fms_agent.tools import Tool, ToolArgumentError

__all__ = ["Agent", "Observation", "RunResult", "Step"]

_MAX_OBSERVATION = 8000  # characters of one observation shown to the model
TOOL_CALL_START = "<tool_call>"  # the text protocol's call marker (fms_llm.finetune.chat)


@dataclass(frozen=True)
class Observation:
    """The result of one tool call, as the model will read it."""

    call_id: str
    name: str
    content: str
    error: bool = False

    def to_message(self) -> Message:
        """The OpenAI `tool` message answering the call."""
        return {"role": "tool", "tool_call_id": self.call_id, "content": self.content}


@dataclass(frozen=True)
class Step:
    """One model call and the observations of the tool calls it made; `feedback` is the user
    turn sent back when the reply held a `<tool_call>` block that did not parse."""

    message: AssistantMessage
    observations: tuple[Observation, ...] = ()
    feedback: str | None = None


@dataclass
class RunResult:
    """What [Agent.run][fms_agent.agent.Agent.run] returns.

    Attributes:
        answer: the final answer, or None when the step budget ran out first.
        messages: the whole transcript, OpenAI wire form, the task's system and user turns first.
        steps: one entry per model call.
        stopped: `"answer"` or `"max_steps"`.
    """

    answer: str | None
    messages: list[Message]
    steps: list[Step] = field(default_factory=list)
    stopped: Literal["answer", "max_steps"] = "answer"

    @property
    def n_tool_calls(self) -> int:
        """How many tool calls the run made."""
        return sum(len(s.observations) for s in self.steps)


def _encode(value: Any) -> str:
    """A tool's return value as observation text: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


class Agent:
    """A tool-using agent over any [Backend][fms_agent.llm.Backend].

    Args:
        backend: the model.
        tools: [Tool][fms_agent.tools.Tool]s the model may call (names must be unique).
        max_steps: model calls per run at most (the step budget).
        system: an optional system prompt put first in each run's transcript.
        tool_timeout: seconds a tool call may take unless the tool sets its own `timeout`;
            None waits for ever.

    Example:
        >>> from fms_agent.llm import ScriptedBackend
        >>> Agent(ScriptedBackend(["42"])).run("What is 6 * 7?").answer
        '42'
    """

    def __init__(
        self,
        backend: Backend,
        tools: Sequence[Tool] = (),
        *,
        max_steps: int = 10,
        system: str | None = None,
        tool_timeout: float | None = 30.0,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps!r}")
        for t in tools:
            if not isinstance(t, Tool):
                raise TypeError(f"tools must be Tool objects (use @tool), got {t!r}")
        names = [t.name for t in tools]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"tools must have unique names, got duplicates {dup}")
        self.backend = backend
        self.tools = {t.name: t for t in tools}
        self.max_steps = max_steps
        self.system = system
        self.tool_timeout = tool_timeout
        self._schemas = [t.openai_schema() for t in tools]

    # -- one tool call ---------------------------------------------------------------------

    def _call(self, t: Tool, kwargs: dict[str, Any]) -> tuple[str, bool]:
        timeout = t.timeout if t.timeout is not None else self.tool_timeout
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = t.fn(**kwargs)
            except BaseException as e:  # every failure becomes an observation
                box["error"] = e

        if timeout is None:
            target()
        else:
            worker = threading.Thread(target=target, name=f"tool-{t.name}", daemon=True)
            worker.start()
            worker.join(timeout)
            if worker.is_alive():
                return f"error: tool {t.name!r} timed out after {timeout:g} s", True
        if "error" in box:
            e = box["error"]
            return f"error: tool {t.name!r} raised {type(e).__name__}: {e}", True
        try:
            return _encode(box.get("value")), False
        except (TypeError, ValueError) as e:
            shown = repr(box.get("value"))[:200]
            return (
                f"error: tool {t.name!r} returned a value that is not JSON-serialisable "
                f"({e}): {shown}",
                True,
            )

    def execute(self, call: ToolCall) -> Observation:
        """Run one tool call; every failure is an observation, never an exception."""
        t = self.tools.get(call.name)
        if t is None:
            known = ", ".join(sorted(self.tools)) or "none"
            what = f"unknown tool {call.name!r}" if call.name else "a tool call without a name"
            text = f"error: {what} (raw: {call.arguments[:200]!r}); available tools: {known}"
            return Observation(call.id, call.name, text, True)
        try:
            args = json.loads(call.arguments) if call.arguments.strip() else {}
        except json.JSONDecodeError as e:
            text = (
                f"error: the arguments of tool {call.name!r} are not valid JSON ({e.msg} at "
                f"position {e.pos}): {call.arguments[:200]!r}"
            )
            return Observation(call.id, call.name, text, True)
        try:
            kwargs = t.validate(args)
        except ToolArgumentError as e:
            return Observation(call.id, call.name, f"error: {e}", True)
        content, error = self._call(t, kwargs)
        if len(content) > _MAX_OBSERVATION:
            content = content[:_MAX_OBSERVATION] + f"... [{len(content) - _MAX_OBSERVATION} more]"
        return Observation(call.id, call.name, content, error)

    def _unparsed_call(self, content: str) -> str:
        """The user turn answering a reply whose `<tool_call>` block did not parse."""
        at = content.find(TOOL_CALL_START)
        shown = content[at : at + 200]
        known = ", ".join(sorted(self.tools))
        return (
            f"error: your reply holds a tool call that is not valid JSON with a string name: "
            f'{shown!r}. Write each call as <tool_call>{{"name": NAME, "arguments": '
            f"{{...}}}}</tool_call> with NAME one of {known}, or answer without <tool_call>."
        )

    # -- the loop --------------------------------------------------------------------------

    def run(self, task: str, history: Sequence[Message] = ()) -> RunResult:
        """Run the ReAct loop on `task`, after the earlier turns in `history` if any.

        Raises:
            fms_agent.llm.BackendError: the back end failed (the model's output never raises).
        """
        messages: list[Message] = [dict(m) for m in history]
        if self.system and not any(m.get("role") == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": self.system})
        messages.append({"role": "user", "content": task})
        result = RunResult(None, messages, [], "max_steps")
        for _ in range(self.max_steps):
            reply = self.backend.complete(messages, self._schemas)
            messages.append(reply.to_dict())
            if not reply.tool_calls and self.tools and TOOL_CALL_START in (reply.content or ""):
                feedback = self._unparsed_call(reply.content or "")
                messages.append({"role": "user", "content": feedback})
                result.steps.append(Step(reply, (), feedback))
                continue
            if not reply.tool_calls:
                result.steps.append(Step(reply))
                result.answer, result.stopped = reply.content or "", "answer"
                return result
            observations = tuple(self.execute(c) for c in reply.tool_calls)
            messages.extend(o.to_message() for o in observations)
            result.steps.append(Step(reply, observations))
        return result
