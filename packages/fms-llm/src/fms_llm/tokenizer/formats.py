"""The file formats of byte-level BPE, and how they map onto one another.

One tokenizer, three spellings:

- **tiktoken ranks**: `bytes -> rank`, where the rank is both the token id and the merge priority;
  the merges are implicit (a token of rank $r$ merges from the split of its bytes whose two halves
  have ranks below $r$). Plus a pattern string and a `special_tokens` dict.
- **GPT-2 `vocab.json` + `merges.txt`**: tokens are *strings*, each byte shown as one printable
  Unicode character by the `bytes_to_unicode` map below (a space is `Ġ`, a newline `Ċ`);
  `vocab.json` maps those strings to ids and `merges.txt` lists one merge per line, `"a b"`,
  in rank order.
- **Hugging Face `tokenizer.json`**: the same string vocabulary and merges inside a `BPE` model,
  the pattern inside a `Split` pre-tokenizer followed by `ByteLevel` (which applies the byte map),
  and special tokens as `added_tokens`.

The byte map (Radford et al., 2019): printable Latin-1 bytes map to themselves, the other 68
bytes (controls, space, soft hyphen...) to the code points 256, 257, ... in byte order, so every
token is a readable string free of whitespace and merges can be written one per line.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from fms_dl.files import atomic_write_text

__all__ = [
    "MAX_PATTERN_LENGTH",
    "TokenizerFileError",
    "bytes_to_unicode",
    "read_gpt2_files",
    "read_hf_tokenizer_json",
    "to_oniguruma",
    "to_tiktoken",
    "token_to_string",
    "update_tokenizer_config",
    "write_hf_tokenizer_json",
]


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (the `ByteLevel` alphabet)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@lru_cache(maxsize=1)
def _unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def token_to_string(token: bytes) -> str:
    """A token's bytes spelled in the byte-level alphabet (`b" the"` $\\to$ `"Ġthe"`)."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def _string_to_token(text: str, where: str) -> bytes:
    table = _unicode_to_bytes()
    try:
        return bytes(table[c] for c in text)
    except KeyError as exc:
        raise ValueError(
            f"{where}: token {text!r} holds {exc.args[0]!r}, which is not in the byte-level "
            "alphabet; expected a byte-level BPE tokenizer"
        ) from None


# ---------------------------------------------------------------------- tokenizer.json
_POSSESSIVE_BOUNDED = re.compile(
    r"(\\[pP]\{[^}]*\}|\\.|\[(?:\\.|[^\]\\])*\]|[^\\\[\]()])(\{\d+(?:,\d*)?\})\+"
)


def to_oniguruma(pattern: str) -> str:
    r"""Rewrite a pattern so that Oniguruma (the regex engine of HF `tokenizers`) reads it as we do.

    Python's `regex` and tiktoken read `X{1,3}+` as a possessive bounded repeat; Oniguruma reads it
    as `(X{1,3})+`, one or more groups of up to three. The atomic group `(?>X{1,3})` means the
    former in every engine, so we write that (cl100k's `\p{N}{1,3}+` is the case that matters).
    """
    return _POSSESSIVE_BOUNDED.sub(r"(?>\1\2)", pattern)


def _from_oniguruma(pattern: str) -> str:
    """Give back a built-in pattern by its own name after a trip through `to_oniguruma`."""
    from fms_llm.tokenizer.bpe import CL100K_PATTERN, GPT2_PATTERN

    for builtin in (GPT2_PATTERN, CL100K_PATTERN):
        if pattern == to_oniguruma(builtin):
            return builtin
    return pattern


def write_hf_tokenizer_json(
    path: str | os.PathLike[str],
    vocab: Mapping[int, bytes],
    merges: Sequence[tuple[bytes, bytes]],
    specials: Mapping[str, int],
    pattern: str,
) -> None:
    """Write a Hugging Face `tokenizer.json` atomically (a temporary file, then a rename).

    `ignore_merges` is true: a pre-token that is itself a token is taken whole, as tiktoken does.
    """
    special_ids = set(specials.values())
    model_vocab = {token_to_string(b): i for i, b in sorted(vocab.items()) if i not in special_ids}
    doc: dict[str, Any] = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": s,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for s, i in sorted(specials.items(), key=lambda kv: kv[1])
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": to_oniguruma(pattern)},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {
                    "type": "ByteLevel",
                    "add_prefix_space": False,
                    "trim_offsets": True,
                    "use_regex": False,
                },
            ],
        },
        "post_processor": None,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": True,
            "use_regex": True,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": model_vocab,
            "merges": [[token_to_string(a), token_to_string(b)] for a, b in merges],
        },
    }
    atomic_write_text(path, json.dumps(doc, ensure_ascii=False, indent=2))


def update_tokenizer_config(directory: str | os.PathLike[str], updates: Mapping[str, Any]) -> Path:
    """Merge `updates` into `directory/tokenizer_config.json` (created if absent), atomically.

    The one writer of `tokenizer_config.json`: keys already in the file that `updates` does not
    name are kept (the model saver writes the special tokens, the fine-tuning code a
    `chat_template`, and neither erases the other's). A file that is not a JSON object is
    replaced, and returned path is the file's.

    Raises:
        OSError: if the directory is not writable.
    """
    path = Path(directory) / "tokenizer_config.json"
    current: dict[str, Any] = {}
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            current = loaded
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        pass  # unreadable or corrupt: rewritten whole below
    atomic_write_text(path, json.dumps({**current, **updates}, ensure_ascii=False, indent=2) + "\n")
    return path


class TokenizerFileError(ValueError):
    """A tokenizer file is unreadable, malformed or inconsistent; the message names the file.

    The one error class [read_hf_tokenizer_json][fms_llm.tokenizer.formats.read_hf_tokenizer_json]
    and [BPETokenizer.load][fms_llm.tokenizer.bpe.BPETokenizer.load] raise for any file content (a
    `ValueError`, so callers that caught `ValueError` still do).
    """


# A pre-tokenisation pattern longer than this is refused: the built-in ones are about 100
# characters, and compiling a huge pattern is itself a cost an untrusted file should not impose.
MAX_PATTERN_LENGTH = 4096


def read_hf_tokenizer_json(
    path: str | os.PathLike[str],
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]], list[str], str]:
    """Read a byte-level BPE `tokenizer.json`; return `(vocab, merges, special_tokens, pattern)`.

    The pattern is the `Split` regex of the pre-tokenizer, or GPT-2's when the pre-tokenizer is a
    plain `ByteLevel` with `use_regex` (as in GPT-2's own `tokenizer.json`). Every field is
    checked for its JSON type before use (the file is untrusted input).

    Raises:
        TokenizerFileError: if the file cannot be read or parsed, is not a byte-level BPE
            tokenizer, or a field has the wrong type or range.
    """
    from fms_llm.tokenizer.bpe import GPT2_PATTERN

    where = os.fspath(path)
    try:
        doc = json.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as exc:
        raise TokenizerFileError(
            f"cannot read tokenizer file {where!r}: {exc.strerror or exc}"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise TokenizerFileError(
            f"tokenizer file {where!r} is not valid UTF-8 JSON: {exc}"
        ) from None
    try:
        return _parse_tokenizer_doc(doc, where, GPT2_PATTERN)
    except RecursionError:
        raise TokenizerFileError(f"tokenizer file {where!r} is nested too deeply") from None
    except ValueError as exc:
        if isinstance(exc, TokenizerFileError):
            raise
        raise TokenizerFileError(str(exc)) from None


def _parse_tokenizer_doc(
    doc: Any, where: str, gpt2: str
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]], list[str], str]:
    def bad(what: str, got: Any) -> TokenizerFileError:
        shown = repr(got)
        shown = shown if len(shown) < 80 else shown[:77] + "..."
        return TokenizerFileError(f"tokenizer file {where!r}: {what}, got {shown}")

    model = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(model, dict) or model.get("type", "BPE") != "BPE" or "vocab" not in model:
        raise TokenizerFileError(
            f"tokenizer file {where!r} has no BPE model (expected a 'model' of type 'BPE' with a "
            "'vocab' and 'merges')"
        )
    raw_vocab = model["vocab"]
    if not isinstance(raw_vocab, dict):
        raise bad("model.vocab must be an object token -> id", type(raw_vocab).__name__)
    added = doc.get("added_tokens") or []
    if not isinstance(added, list):
        raise bad("added_tokens must be a list", type(added).__name__)
    special_ids: dict[int, str] = {}
    for k, t in enumerate(added):
        if (
            not isinstance(t, dict)
            or not _is_id(t.get("id"))
            or not isinstance(t.get("content"), str)
        ):
            raise bad(
                f"added_tokens[{k}] must be an object with an int 'id' and a str 'content'", t
            )
        special_ids[t["id"]] = t["content"]
    vocab: dict[int, bytes] = {}
    for s, i in raw_vocab.items():
        if not _is_id(i):
            raise bad(f"model.vocab[{s!r}] must be an id (an int in [0, 2**31))", i)
        if i in special_ids:
            continue
        vocab[i] = _string_to_token(s, where)
    for i, s in special_ids.items():
        vocab[i] = s.encode("utf-8")  # a lone surrogate: UnicodeEncodeError, a ValueError
    raw_merges = model.get("merges", [])
    if not isinstance(raw_merges, list):
        raise bad("model.merges must be a list", type(raw_merges).__name__)
    if len(raw_merges) > len(vocab):
        raise bad(
            f"model.merges has {len(raw_merges)} merges for a vocabulary of {len(vocab)} (each "
            "merge makes a vocabulary entry, so there cannot be more)",
            len(raw_merges),
        )
    merges: list[tuple[bytes, bytes]] = []
    for m in raw_merges:
        parts = m.split(" ") if isinstance(m, str) else m
        if (
            not isinstance(parts, list)
            or len(parts) != 2
            or not all(isinstance(x, str) for x in parts)
        ):
            raise bad("a merge must be 'a b' or a pair of strings", m)
        merges.append((_string_to_token(parts[0], where), _string_to_token(parts[1], where)))
    pattern = _find_pattern(doc.get("pre_tokenizer"), gpt2)
    if pattern is None:
        raise TokenizerFileError(
            f"tokenizer file {where!r}: cannot find the pre-tokenisation pattern (expected a "
            "'Split' pre-tokenizer with a 'Regex', or 'ByteLevel' with use_regex)"
        )
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise bad(
            f"the pre-tokenisation pattern must be at most {MAX_PATTERN_LENGTH} characters",
            len(pattern),
        )
    return vocab, merges, [special_ids[i] for i in sorted(special_ids)], pattern


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 31


def _find_pattern(node: Any, gpt2: str) -> str | None:
    if not isinstance(node, dict):
        return None
    kind = node.get("type")
    if kind == "Sequence":
        children = node.get("pretokenizers", [])
        for child in children if isinstance(children, list) else ():
            found = _find_pattern(child, gpt2)
            if found is not None:
                return found
        return None
    if kind == "Split":
        pat = node.get("pattern", {})
        if isinstance(pat, dict) and isinstance(pat.get("Regex"), str):
            return _from_oniguruma(pat["Regex"])
        return None
    if kind == "ByteLevel" and node.get("use_regex", True):
        return gpt2
    return None


# ---------------------------------------------------------------------- GPT-2 files
def read_gpt2_files(
    vocab_json: str | os.PathLike[str], merges_txt: str | os.PathLike[str]
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]], list[str]]:
    """Read GPT-2's `vocab.json` and `merges.txt`; return `(vocab, merges, special_tokens)`.

    Entries of `vocab.json` that are neither a byte nor a merge result become special tokens.

    Raises:
        ValueError: if a file cannot be read or is malformed.
    """
    try:
        raw_vocab = json.loads(Path(vocab_json).read_text(encoding="utf-8"))
        lines = Path(merges_txt).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read GPT-2 files: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{os.fspath(vocab_json)!r} is not valid JSON: {exc}") from None
    if not isinstance(raw_vocab, dict):
        raise ValueError(f"{os.fspath(vocab_json)!r} must hold a JSON object token -> id")
    where = os.fspath(merges_txt)
    merges: list[tuple[bytes, bytes]] = []
    for n, line in enumerate(lines):
        if not line.strip() or (n == 0 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{where}, line {n + 1}: expected two tokens 'a b', got {line!r}")
        merges.append((_string_to_token(parts[0], where), _string_to_token(parts[1], where)))
    produced = {a + b for a, b in merges}
    vocab: dict[int, bytes] = {}
    specials: list[str] = []
    for s, i in raw_vocab.items():
        table = _unicode_to_bytes()
        if all(c in table for c in s):
            data = bytes(table[c] for c in s)
            if len(data) == 1 or data in produced:
                vocab[int(i)] = data
                continue
        vocab[int(i)] = s.encode("utf-8")
        specials.append(s)
    return vocab, merges, specials


# ---------------------------------------------------------------------- tiktoken
def to_tiktoken(
    name: str,
    vocab: Mapping[int, bytes],
    merges: Sequence[tuple[bytes, bytes]],
    specials: Mapping[str, int],
    pattern: str,
) -> Any:
    """Build a `tiktoken.Encoding` whose ranks are our ids.

    Raises:
        ValueError: if merged tokens' ids do not grow with their merge rank (tiktoken's ids are its
            merge priorities, so the two orders must agree).
        ImportError: if tiktoken is not installed (`pip install fms-llm[tiktoken]`).
    """
    try:
        import tiktoken
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("to_tiktoken needs tiktoken: pip install 'fms-llm[tiktoken]'") from exc
    special_ids = set(specials.values())
    ranks = {b: i for i, b in vocab.items() if i not in special_ids}
    previous = -1
    for r, (a, b) in enumerate(merges):
        i = ranks[a + b]
        if i <= previous:
            raise ValueError(
                f"merge {r} {(a, b)!r} has id {i}, not above the previous merge's id {previous}; "
                "tiktoken needs ids that increase with merge order"
            )
        previous = i
    return tiktoken.Encoding(
        name=name,
        pat_str=pattern,
        mergeable_ranks=ranks,
        special_tokens=dict(specials),
        explicit_n_vocab=None,
    )
