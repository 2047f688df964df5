"""Special tokens with tiktoken's rules, vocab entries no merge reaches, patterns that leave gaps,
hostile patterns, and `encode_iterable`'s linear cost (issue 15).

References: tiktoken (`allowed_special` / `disallowed_special`, entries outside the merges) and
Hugging Face tokenizers (a `Split` pattern that does not cover the text); ids must be equal exactly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import tiktoken
from tokenizers import Tokenizer

from fms_llm.tokenizer import BPETokenizer
from fms_llm.tokenizer.bpe import PatternTimeoutError

SPECIALS = ["<|endoftext|>", "<|fim|>"]
TEXTS = [
    "plain text, no specials at all",
    "one<|endoftext|>two",
    "<|fim|> first and last <|endoftext|>",
    "near misses: <|endoftext| and <|fim> and |endoftext|>",
    "both <|endoftext|><|fim|><|endoftext|> in a row",
]
POLICIES: list[dict[str, Any]] = [
    {},
    {"allowed_special": "all"},
    {"allowed_special": {"<|fim|>"}},
    {"disallowed_special": ()},
    {"allowed_special": {"<|endoftext|>"}, "disallowed_special": ()},
    {"allowed_special": "all", "disallowed_special": {"first"}},
    {"disallowed_special": {"row"}},
]


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    corpus = [t.replace("<|endoftext|>", " ").replace("<|fim|>", " ") for t in TEXTS] * 20
    return BPETokenizer.train(corpus, 340, special_tokens=SPECIALS, progress=False)


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ValueError:
        return "ValueError"


@pytest.mark.parametrize("policy", POLICIES, ids=str)
def test_special_token_policies_equal_tiktoken_exactly(
    tok: BPETokenizer, policy: dict[str, Any]
) -> None:
    """Every (text, policy): the same ids as tiktoken.Encoding.encode, or a ValueError from both."""
    enc = tok.to_tiktoken()
    for text in TEXTS:
        ours = _outcome(tok.encode, text, **policy)
        theirs = _outcome(enc.encode, text, **policy)
        assert ours == theirs, (text, policy)
        assert _outcome(tok.encode_batch, [text, text], num_workers=1, **policy) == (
            theirs if theirs == "ValueError" else [theirs, theirs]
        )
        streamed = _outcome(
            lambda t: list(tok.encode_iterable(t, block_size=8, **policy)), list(text)
        )
        assert streamed == theirs, (text, policy)


def test_disallowed_special_text_is_an_error_by_default_that_says_what_to_do(
    tok: BPETokenizer,
) -> None:
    with pytest.raises(ValueError, match=r"'<\|endoftext\|>' \(at character 3\).*allowed_special"):
        tok.encode("one<|endoftext|>two")
    assert tok.encode_ordinary("one<|endoftext|>two") == tok.encode(
        "one<|endoftext|>two", disallowed_special=()
    )


def test_bad_special_arguments_are_clear_errors(tok: BPETokenizer) -> None:
    with pytest.raises(TypeError, match="allowed_special must be 'all' or a collection"):
        tok.encode("x", allowed_special="<|endoftext|>")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"allowed_special holds \['<\|nope\|>'\]"):
        tok.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(TypeError, match="disallowed_special must hold strings"):
        tok.encode("x", disallowed_special={1})  # type: ignore[arg-type]


def test_vocab_entries_no_merge_reaches_are_accepted_as_tiktoken_accepts_them(
    tok: BPETokenizer,
) -> None:
    """GPT-2's own vocab.json holds `<|endoftext|>` as a plain entry; built without declaring it
    special, the tokenizer loads, decodes it, and encodes like tiktoken given the same ranks."""
    vocab = {i: b for i, b in tok.vocab.items() if i not in tok.special_tokens.values()}
    top = max(vocab) + 1
    vocab[top] = b"<|endoftext|>"
    vocab[top + 1] = b"zz"  # a multi-byte entry no merge makes, and a whole pre-token
    plain = BPETokenizer(vocab, tok.merges)
    assert plain.decode([top]) == "<|endoftext|>"
    enc = tiktoken.Encoding(
        name="plain",
        pat_str=plain.pattern,
        mergeable_ranks={b: i for i, b in vocab.items()},
        special_tokens={},
    )
    for text in [*TEXTS, "zz zzz azz"]:
        assert plain.encode(text) == enc.encode_ordinary(text)
    assert plain.encode("zz") == [top + 1]


def test_a_pattern_that_does_not_cover_the_text_never_drops_characters(tmp_path: Path) -> None:
    """A pattern matching only letters: the gaps become pieces of their own, as HF tokenizers'
    `Isolated` Split makes them (same ids), and decode gives the text back."""
    text = "ab, 12 cd!\n\u00e9t\u00e9 -- ok?"
    tok = BPETokenizer.train([text] * 5, 290, pattern=r"\p{L}+", progress=False)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    tok.save(tmp_path / "tokenizer.json")
    assert Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(text).ids == ids
    grouped = BPETokenizer(tok.vocab, tok.merges, pattern=r"(\p{L})\p{L}*")  # groups: whole matches
    assert grouped.encode(text) == ids


def test_a_hostile_pattern_times_out_instead_of_hanging(tmp_path: Path) -> None:
    """`(a|aa)+c` backtracks exponentially on a run of `a`: the time budget stops it."""
    tok = BPETokenizer(
        {i: bytes([i]) for i in range(256)}, [], pattern=r"(a|aa)+c|\s", pattern_timeout=0.2
    )
    start = time.monotonic()
    with pytest.raises(PatternTimeoutError, match="catastrophic backtracking"):
        tok.encode("a" * 40)
    assert time.monotonic() - start < 30  # bounded, not exponential (generous for a loaded CPU)
    assert tok.encode("aac") == [97, 97, 99]  # a short text is well within the budget
    tok.save(tmp_path / "tokenizer.json")
    loaded = BPETokenizer.load(tmp_path / "tokenizer.json", pattern_timeout=0.2)
    with pytest.raises(ValueError):
        loaded.encode("a" * 40)


def test_encode_iterable_scans_a_long_run_without_whitespace_a_constant_number_of_times(
    tok: BPETokenizer,
) -> None:
    """Counted operations, not time: the characters handed to the pattern over a 200,000-character
    run with no pre-token boundary stay under 4 per character of text (it was about n / (2 * block),
    here ~25 per character, when every block rescanned the whole undecided run)."""
    n, block = 200_000, 4096
    scanned = 0
    findall = tok._findall

    def counting(text: str) -> list[str]:
        nonlocal scanned
        scanned += len(text)
        return findall(text)

    tok._findall = counting
    try:
        text = "ab" * (n // 2)
        ids = list(
            tok.encode_iterable((text[i : i + 100] for i in range(0, n, 100)), block_size=block)
        )
    finally:
        tok._findall = findall
    assert scanned <= 4 * n, scanned
    assert ids == tok.encode(text)
