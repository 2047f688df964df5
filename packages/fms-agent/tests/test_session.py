"""`fms_agent.session`: sessions resume from their JSON file; a corrupt file is a clear error
naming the file and is left untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fms_agent.agent import Agent
from fms_agent.llm import ScriptedBackend
from fms_agent.session import Session, SessionFileError


def test_session_saves_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    s = Session(Agent(ScriptedBackend(["hello", "bye"])), path)
    s.send("hi")
    resumed = Session(Agent(ScriptedBackend(["again"])), path)
    assert [m["content"] for m in resumed.messages] == ["hi", "hello"]
    resumed.send("more")
    data = json.loads(path.read_text())
    assert data["format"] == "fms-agent-session"
    assert data["version"] == 1
    assert [m["content"] for m in data["messages"]] == ["hi", "hello", "more", "again"]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "cannot be read as JSON"),
        ('{"format": "other"}', "is not an fms-agent-session file"),
        ('{"format": "fms-agent-session", "version": 9, "messages": []}', "has version 9"),
        (
            '{"format": "fms-agent-session", "version": 1, "messages": [{"role": "x"}]}',
            r"messages\[0\]",
        ),
    ],
)
def test_corrupt_file_is_a_clear_error_and_is_not_overwritten(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "chat.json"
    path.write_text(text)
    with pytest.raises(SessionFileError, match=message) as e:
        Session(Agent(ScriptedBackend([])), path)
    assert str(path) in str(e.value)
    assert path.read_text() == text


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "chat.json"
    s = Session(Agent(ScriptedBackend(["one", "two"])), path)
    s.send("a")
    before = path.read_text()

    def broken(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("fms_agent.session.os.fsync", broken)
    with pytest.raises(OSError, match="disk full"):
        s.send("b")
    assert path.read_text() == before
    assert list(tmp_path.iterdir()) == [path]
