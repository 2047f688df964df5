"""Multi-turn sessions: a conversation kept across turns, saved as versioned JSON, resumable.

A [Session][fms_agent.session.Session] holds the transcript (OpenAI wire form) and hands it to
[Agent.run][fms_agent.agent.Agent.run] as the history of each new turn. With a `path` it is saved
after every turn, atomically: the JSON goes to a temporary file in the same directory, is
flushed and `fsync`ed, then renamed over the old file, so a crash mid-write leaves the previous
turn's file whole. Loading checks the format's name and version and the shape of every message;
a corrupt file is a [SessionFileError][fms_agent.session.SessionFileError] naming the file, and
is never overwritten.

The file: `{"format": "fms-agent-session", "version": 1, "messages": [...]}`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fms_agent.agent import Agent, RunResult
from fms_agent.llm import Message

# fms-llm's atomic text write (temp file in the same directory, fsync, rename), used as is
from fms_dl.files import atomic_write_text

__all__ = ["FORMAT", "VERSION", "Session", "SessionFileError"]

FORMAT = "fms-agent-session"
VERSION = 1
_ROLES = {"system", "user", "assistant", "tool"}


class SessionFileError(ValueError):
    """A session file cannot be read: not JSON, another format or version, malformed messages."""


def _read(path: Path) -> list[Message]:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SessionFileError(f"session file {path} cannot be read as JSON: {e}") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SessionFileError(f"session file {path} is not an {FORMAT} file")
    if data.get("version") != VERSION:
        raise SessionFileError(
            f"session file {path} has version {data.get('version')!r}; this fms-agent reads "
            f"version {VERSION}"
        )
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise SessionFileError(f"session file {path}: 'messages' must be a list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise SessionFileError(
                f"session file {path}: messages[{i}] must be an object with a role in "
                f"{sorted(_ROLES)}, got {str(m)[:100]}"
            )
    return messages


class Session:
    """A conversation with an agent over many turns.

    Args:
        agent: the agent that answers each turn.
        path: where to save after every turn; an existing file there is loaded (resumed).

    Raises:
        SessionFileError: `path` exists and is not a valid session file (it is left as it is).
    """

    def __init__(self, agent: Agent, path: str | os.PathLike[str] | None = None) -> None:
        self.agent = agent
        self.path = Path(path) if path is not None else None
        self.messages: list[Message] = []
        if self.path is not None and self.path.exists():
            self.messages = _read(self.path)

    def send(self, text: str) -> RunResult:
        """One user turn: run the agent with the conversation so far, keep and save the result."""
        result = self.agent.run(text, self.messages)
        self.messages = result.messages
        self.save()
        return result

    def save(self) -> None:
        """Write the session to `path` atomically (nothing happens without a path)."""
        if self.path is None:
            return
        body = {"format": FORMAT, "version": VERSION, "messages": self.messages}
        atomic_write_text(self.path, json.dumps(body, ensure_ascii=False, indent=1))
