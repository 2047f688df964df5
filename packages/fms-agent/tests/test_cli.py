"""The `fms-agent` CLI against the fake OpenAI endpoint: `run` prints the final answer after a
sandboxed python tool call, `chat` saves its session after every turn and resumes it, and bad
input (no --model, an endpoint that is down, a corrupt session) is exit status 2 with a message
naming it."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fms_agent.cli import main


def _call(code: str) -> dict[str, Any]:
    args = json.dumps({"code": code})
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "python", "arguments": args}}
        ],
    }


def test_console_script_has_help() -> None:
    exe = shutil.which("fms-agent")
    assert exe is not None, "the fms-agent console script is not installed"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "run" in out.stdout
    assert "chat" in out.stdout


def test_run_calls_the_sandboxed_python_tool_and_prints_the_answer(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.replies = [_call("print(17 * 23)"), {"role": "assistant", "content": "391"}]
    status = main(
        [
            "run",
            "What is 17*23?",
            "--base-url",
            fake.base_url,
            "--model",
            "m",
            "--python",
            "--transcript",
        ]
    )
    out = capsys.readouterr()
    assert status == 0
    assert out.out == "391\n"
    assert "call python" in out.err
    tool_turn = fake.requests[1]["messages"][-1]
    assert tool_turn["role"] == "tool"
    assert "391" in tool_turn["content"]
    assert fake.requests[0]["tools"][0]["function"]["name"] == "python"


def test_chat_saves_and_resumes_the_session(
    fake: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "chat.json"
    args = ["chat", "--base-url", fake.base_url, "--model", "m", "--session", str(path)]
    fake.replies = [
        {"role": "assistant", "content": "Hi Ada"},
        {"role": "assistant", "content": "ok"},
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("I am Ada\nremember 7\n\nignored\n"))
    assert main(args) == 0
    assert capsys.readouterr().out == "Hi Ada\nok\n"
    saved = json.loads(path.read_text())
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant", "user", "assistant"]
    fake.replies = [{"role": "assistant", "content": "You are Ada"}]
    monkeypatch.setattr("sys.stdin", io.StringIO("who am I?\n"))
    assert main(args) == 0
    out = capsys.readouterr()
    assert "resumed" in out.err
    assert out.out == "You are Ada\n"
    assert fake.requests[-1]["messages"][0] == {"role": "user", "content": "I am Ada"}


def test_bad_input_is_exit_status_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "x", "--base-url", "http://127.0.0.1:1/v1"]) == 2
    assert "--model is required with --base-url" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert (
        main(
            [
                "run",
                "x",
                "--base-url",
                f"http://127.0.0.1:{port}/v1",
                "--model",
                "m",
                "--timeout",
                "2",
            ]
        )
        == 2
    )
    assert "cannot reach" in capsys.readouterr().err
    corrupt = tmp_path / "s.json"
    corrupt.write_text("{not json")
    args = [
        "chat",
        "--base-url",
        "http://127.0.0.1:1/v1",
        "--model",
        "m",
        "--session",
        str(corrupt),
    ]
    assert main(args) == 2
    assert str(corrupt) in capsys.readouterr().err
    assert corrupt.read_text() == "{not json"  # left as it was
    with pytest.raises(SystemExit) as e:
        main(["run", "x", "--base-url", "u", "--max-steps", "0"])
    assert e.value.code == 2
