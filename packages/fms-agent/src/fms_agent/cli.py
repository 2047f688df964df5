"""The `fms-agent` command line: `fms-agent run TASK` and `fms-agent chat`.

Both drive an [Agent][fms_agent.agent.Agent] over an OpenAI-compatible endpoint
(`--base-url URL --model NAME`, e.g. `fms-llm serve` or any hosted API) or a saved fms-llm model
in process (`--model-dir DIR`). `--python` offers the model a `python` tool that runs code in the
bubblewrap [sandbox][fms_agent.sandbox]. `chat` reads one user turn a line from standard input
(an empty line or end of input ends it); with `--session FILE` the conversation is saved after
every turn and resumed when the file exists.

    fms-agent run "What is 17 * 23?" --base-url http://127.0.0.1:8000/v1 --model tiny --python
    fms-agent chat --base-url http://127.0.0.1:8000/v1 --model tiny --session chat.json

Exit status: 0 on an answer, 1 when the step budget ran out first, 2 on a usage or back-end
error (the message names it), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from fms_agent.agent import Agent, RunResult
from fms_agent.llm import Backend, BackendError, LocalBackend, OpenAIBackend
from fms_agent.sandbox import SandboxUnavailable, run_python
from fms_agent.session import Session, SessionFileError
from fms_agent.tools import Tool, tool
from fms_llm.cli import _positive_int  # the fms-llm CLI's count type, shared

__all__ = ["build_parser", "main", "python_tool"]


def python_tool(timeout: float = 10.0) -> Tool:
    """A `python` tool: runs the model's code in the sandbox, returns exit status and output."""

    @tool(name="python")
    def python(code: str) -> str:
        """Run a Python program in a sandbox (no network, no files kept) and return its output.

        Args:
            code: the program; print what you want to see.
        """
        r = run_python(code, timeout=timeout)
        status = "timed out" if r.timed_out else f"exit status {r.returncode}"
        return f"{status}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"

    return python


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--base-url", help="OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1"
    )
    where.add_argument("--model-dir", help="a saved fms-llm model directory, run in process")
    p.add_argument("--model", help="model name sent to the endpoint (needed with --base-url)")
    p.add_argument(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY"),
        help="bearer token for the endpoint (default: $OPENAI_API_KEY)",
    )
    p.add_argument("--timeout", type=_positive_float, default=60.0, help="seconds per request")
    p.add_argument("--max-steps", type=_positive_int, default=10, help="model calls per turn")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--python", action="store_true", help="offer a sandboxed python tool")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `fms-agent`."""
    parser = argparse.ArgumentParser(
        prog="fms-agent",
        description="Run a tool-using agent over an OpenAI-compatible endpoint or a local model.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one task and print the final answer")
    run.add_argument("task", help="the task, in words")
    _add_backend_args(run)
    run.add_argument("--transcript", action="store_true", help="print every step to stderr")
    chat = sub.add_parser("chat", help="a multi-turn conversation on standard input")
    _add_backend_args(chat)
    chat.add_argument("--session", help="JSON file to save the conversation in and resume from")
    return parser


def _backend(args: argparse.Namespace) -> Backend:
    if args.base_url is not None:
        if not args.model:
            raise ValueError("--model is required with --base-url (the name the endpoint serves)")
        return OpenAIBackend(args.base_url, args.model, args.api_key, timeout=args.timeout)
    return LocalBackend(args.model_dir)


def _agent(args: argparse.Namespace) -> Agent:
    tools = [python_tool()] if args.python else []
    return Agent(_backend(args), tools, max_steps=args.max_steps, system=args.system)


def _print_steps(result: RunResult) -> None:
    for i, step in enumerate(result.steps, 1):
        for call in step.message.tool_calls:
            print(f"[{i}] call {call.name}({call.arguments})", file=sys.stderr)
        for obs in step.observations:
            print(f"[{i}] {obs.name} -> {obs.content[:500]}", file=sys.stderr)


def _report(result: RunResult) -> int:
    if result.answer is None:
        print(f"(no answer within {len(result.steps)} steps)", file=sys.stderr)
        return 1
    print(result.answer, flush=True)
    return 0


def _run(args: argparse.Namespace) -> int:
    result = _agent(args).run(args.task)
    if args.transcript:
        _print_steps(result)
    return _report(result)


def _chat(args: argparse.Namespace) -> int:
    session = Session(_agent(args), args.session)
    if session.messages:
        turns = sum(m.get("role") == "user" for m in session.messages)
        print(f"(resumed {args.session}: {turns} earlier turns)", file=sys.stderr)
    status = 0
    for line in sys.stdin:
        text = line.strip()
        if not text:
            break
        result = session.send(text)
        _print_steps(result)
        status = _report(result)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fms-agent` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args) if args.command == "run" else _chat(args)
    except (BackendError, SessionFileError, SandboxUnavailable, ValueError, OSError) as exc:
        print(f"fms-agent {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fms-agent {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
