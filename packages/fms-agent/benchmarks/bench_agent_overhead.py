"""Agent overhead per step against smolagents' `ToolCallingAgent`, on the same scripted model.

With the model's time taken out (both agents talk to a model that answers instantly from a
script), what is left is the agent's own work per step: building the request (tool schemas,
messages), reading the reply, validating the tool call's arguments, dispatching the tool and
recording the observation. Each run is one task of `--steps` tool calls (`increment(value, by)`
with fresh arguments) and a final answer, the agent built inside the timed run so that its set-up counts:

- ours: [Agent][fms_agent.agent.Agent] over a [ScriptedBackend][fms_agent.llm.ScriptedBackend];
  the final answer is a reply without tool calls;
- smolagents: `ToolCallingAgent(verbosity_level=LogLevel.OFF)` over a `Model` subclass that
  returns the same calls as `ChatMessage`s; its final answer is a call to its `final_answer` tool.

Rounds interleave the two; the speed-up is smolagents' time / ours per round (above 1: ours has
less overhead), median and 95% bootstrap interval, on process CPU time (one thread; wall time
is shown too). Per-step figures are a run's time divided by its model calls (`--steps` + 1).

    uv run python packages/fms-agent/benchmarks/bench_agent_overhead.py [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fms-llm" / "benchmarks"))

import torch
from _timing import fmt_ci, interleave, paired_ratio, rounds_arg
from smolagents import ToolCallingAgent, tool
from smolagents.models import (
    ChatMessage,
    ChatMessageToolCall,
    ChatMessageToolCallFunction,
    MessageRole,
    Model,
)
from smolagents.monitoring import LogLevel, TokenUsage

from fms_agent import tools as fms_tools
from fms_agent.agent import Agent
from fms_agent.llm import AssistantMessage, ScriptedBackend, ToolCall


@fms_tools.tool
def increment(value: int, by: int) -> int:
    """Increase a counter.

    Args:
        value: the counter now.
        by: the step.
    """
    return value + by


@tool
def smol_increment(value: int, by: int) -> int:
    """Increase a counter.

    Args:
        value: the counter now.
        by: the step.
    """
    return value + by


class ScriptedSmolModel(Model):  # type: ignore[misc]
    """smolagents' side of the script: `steps` calls of `smol_increment`, then `final_answer`."""

    def __init__(self, steps: int) -> None:
        super().__init__(model_id="scripted")
        self.steps, self.calls = steps, 0

    def generate(
        self,
        messages: Any,
        stop_sequences: Any = None,
        response_format: Any = None,
        tools_to_call_from: Any = None,
        **kwargs: Any,
    ) -> ChatMessage:
        i = self.calls
        self.calls += 1
        if i < self.steps:
            name, args = "smol_increment", {"value": i, "by": 1}
        else:
            name, args = "final_answer", {"answer": str(self.steps)}
        call = ChatMessageToolCall(
            function=ChatMessageToolCallFunction(name=name, arguments=args),
            id=f"c{i}",
            type="function",
        )
        return ChatMessage(MessageRole.ASSISTANT, "", [call], token_usage=TokenUsage(0, 0))


def run_ours(steps: int) -> str:
    replies: list[AssistantMessage | str] = [
        AssistantMessage(None, (ToolCall(f"c{i}", "increment", json.dumps({"value": i, "by": 1})),))
        for i in range(steps)
    ]
    replies.append(str(steps))
    result = Agent(ScriptedBackend(replies), [increment], max_steps=steps + 1).run("count")
    assert result.answer == str(steps)
    assert result.n_tool_calls == steps
    return result.answer


def run_smolagents(steps: int) -> str:
    agent = ToolCallingAgent(
        tools=[smol_increment],
        model=ScriptedSmolModel(steps),
        verbosity_level=LogLevel.OFF,
        max_steps=steps + 1,
    )
    answer = str(agent.run("count"))
    assert answer == str(steps)
    return answer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=rounds_arg, default=30, help="paired rounds (default 30)")
    p.add_argument("--steps", type=int, default=10, help="tool calls per run (default 10)")
    p.add_argument("--quick", action="store_true", help="5 rounds")
    args = p.parse_args()
    torch.set_num_threads(1)
    rounds = 5 if args.quick else args.rounds
    import smolagents

    print(
        f"smolagents {smolagents.__version__}, {args.steps} tool calls + final answer a run, "
        f"{rounds} rounds"
    )
    times, _ = interleave(
        {"ours": lambda: run_ours(args.steps), "smolagents": lambda: run_smolagents(args.steps)},
        rounds,
        warmup=2,
    )
    per = args.steps + 1
    cpu = paired_ratio(times["smolagents"]["cpu"], times["ours"]["cpu"])
    wall = paired_ratio(times["smolagents"]["wall"], times["ours"]["wall"])
    med = {
        k: {m: 1e6 * statistics.median(v[m]) / per for m in ("cpu", "wall")}
        for k, v in times.items()
    }
    print("| speed-up smolagents/ours | ours µs/step | smolagents µs/step | clock |")
    print("|---|---|---|---|")
    print(f"| {fmt_ci(cpu)} | {med['ours']['cpu']:.0f} | {med['smolagents']['cpu']:.0f} | CPU |")
    print(
        f"| {fmt_ci(wall)} | {med['ours']['wall']:.0f} | {med['smolagents']['wall']:.0f} | wall |"
    )


if __name__ == "__main__":
    main()
