r"""Byte-level BPE encoding and decoding: the [BPETokenizer][fms_llm.tokenizer.BPETokenizer].

A byte-level BPE tokenizer is three tables and one rule:

- a **vocabulary** $V$: token id $\to$ byte string, holding the 256 single bytes, one token per merge,
  and the special tokens;
- a list of **merges** $(a_r, b_r)$, $r = 0, 1, \dots$: merge $r$ created the token $a_r b_r$, so its
  *rank* $r$ is its age;
- a **pre-tokenisation pattern** (a regular expression) that cuts text into pieces which are encoded
  independently, so no token ever spans two pieces;
- the rule: encode each piece's UTF-8 bytes by starting from single bytes and repeatedly merging the
  adjacent pair whose concatenation has the lowest rank (the leftmost one on a tie) until no adjacent
  pair concatenates to a merged token:

$$
i^\star = \arg\min_i \operatorname{rank}(t_i t_{i+1}), \qquad
(t_1, \dots, t_n) \leftarrow (t_1, \dots, t_{i^\star} t_{i^\star + 1}, \dots, t_n).
$$

That is exactly tiktoken's rule (ranks of concatenations; a piece that is already a whole token is
taken as is). Hugging Face tokenizers ranks merge *pairs* instead (with `ignore_merges` for whole
tokens); the two differ only when encoding meets a split of a token other than the one that built
it, and the parity tests check that ours equals both on a megabyte of varied text.

Special tokens are cut out of the text before pre-tokenisation, longest match first, and are never
merged with anything.
"""

from __future__ import annotations

import heapq
import os
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from itertools import chain, pairwise
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import regex

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "CL100K_PATTERN",
    "GPT2_PATTERN",
    "PATTERN_TIMEOUT",
    "BPETokenizer",
    "PatternTimeoutError",
    "pretokenizer",
]

SpecialSet: TypeAlias = AbstractSet[str] | Literal["all"]
"""The type of `allowed_special` / `disallowed_special`: a set of strings, or `"all"`."""
_NONE: frozenset[str] = frozenset()  # the default allowed_special, recognised by identity

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
"""The pre-tokenisation pattern of GPT-2 (Radford et al., 2019): English contractions, runs of
letters, of digits and of other symbols, each with at most one leading space, and whitespace runs
that leave their last space to the following word."""

CL100K_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
"""The pre-tokenisation pattern of the cl100k family (GPT-3.5 and GPT-4; Llama 3 uses a near-identical
one), as tiktoken writes it: case-insensitive
contractions, a word may take any one non-letter prefix, digits in groups of at most three, and
newlines kept with the symbols they follow."""

# The built-in patterns restricted to ASCII text, for the standard library's `re`, which scans
# ASCII about twice as fast as `regex` scans anything. On ASCII input they are the same patterns:
# \p{L} is [A-Za-z], \p{N} is [0-9], and `regex`'s \s is [\t\n\v\f\r ] (not \x1c-\x1f, which `re`'s
# \s would add). A test checks every ASCII character in every context against `regex`.
_WS = r"\t\n\x0b\x0c\r "
_ASCII_VERSIONS = {
    GPT2_PATTERN: rf"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^{_WS}A-Za-z0-9]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+""",
    CL100K_PATTERN: rf"""'(?i:[sdmt]|ll|ve|re)|[^\r\nA-Za-z0-9]?+[A-Za-z]++|[0-9]{{1,3}}+| ?[^{_WS}A-Za-z0-9]++[\r\n]*+|[{_WS}]++$|[{_WS}]*[\r\n]|[{_WS}]+(?![^{_WS}])|[{_WS}]""",
}


class PatternTimeoutError(ValueError):
    """The pre-tokenisation pattern took longer than its time budget on a text.

    A pattern read from a file may backtrack catastrophically (`(a|aa)+c` on a long run of `a`
    takes time exponential in the run's length); encoding then fails with this error instead of
    hanging. A subclass of `ValueError`.
    """


# The time budget of one pattern scan of `n` characters: PATTERN_TIMEOUT seconds plus
# _TIMEOUT_PER_CHAR seconds a character. The built-in patterns run at 5-30 MB/s, so the per-character
# allowance (1 MB/s) is tens of times what a sane pattern needs even on a loaded machine.
PATTERN_TIMEOUT = 2.0
"""Seconds a custom pattern may spend on one text, plus a microsecond a character."""
_TIMEOUT_PER_CHAR = 1e-6


def pretokenizer(
    pattern: str, *, timeout: float | None = PATTERN_TIMEOUT
) -> Callable[[str], list[str]]:
    r"""The function that cuts text into pre-tokens with `pattern`; the pieces tile the text.

    For the built-in patterns (which match every character, and run in linear time: their repeats
    are possessive), ASCII text goes through an equivalent `re` pattern (faster) and other text
    through the `regex` module, with `findall`.

    Any other pattern runs under the `regex` module's `timeout`, of
    $\text{timeout} + 10^{-6} n$ seconds for a text of $n$ characters, so a pattern that backtracks
    catastrophically raises [PatternTimeoutError][fms_llm.tokenizer.bpe.PatternTimeoutError] instead
    of hanging; and the characters no match covers become pieces of their own (as the `Isolated`
    `Split` of Hugging Face tokenizers makes them), so no character is ever dropped. Capturing groups
    do not matter: a piece is always the whole match.

    Args:
        pattern: the regular expression (the `regex` module's syntax).
        timeout: the fixed part of a custom pattern's time budget in seconds (`None`: no limit).

    Raises:
        ValueError: if `pattern` does not compile.
    """
    try:
        compiled = regex.compile(pattern)
    except regex.error as exc:
        raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
    ascii_version = _ASCII_VERSIONS.get(pattern)
    if ascii_version is None:
        return partial(_covering_findall, compiled, timeout)
    full = compiled.findall
    fast = re.compile(ascii_version).findall

    def findall(text: str) -> list[str]:
        return fast(text) if text.isascii() else full(text)

    return findall


def _covering_findall(compiled: Any, timeout: float | None, text: str) -> list[str]:
    """The matches of `compiled` in `text` and the gaps between them, in order, under a time limit."""
    budget = None if timeout is None else timeout + _TIMEOUT_PER_CHAR * len(text)
    pieces: list[str] = []
    append = pieces.append
    pos = 0
    try:
        for m in compiled.finditer(text, timeout=budget):
            start, end = m.span()
            if start > pos:
                append(text[pos:start])
                pos = start
            if end > start:
                append(text[start:end])
                pos = end
    except TimeoutError:
        raise PatternTimeoutError(
            f"the pre-tokenisation pattern {compiled.pattern!r} took more than {budget:.3g} s on a "
            f"text of {len(text)} characters (catastrophic backtracking?); expected a pattern that "
            "scans text in about linear time"
        ) from None
    if pos < len(text):
        append(text[pos:])
    return pieces


# How far past a pre-token the two built-in patterns may look before deciding it (a contraction
# such as "'ll" is three characters); encode_iterable keeps this many characters of margin.
_PATTERN_LOOKAHEAD = 16
# Pieces longer than this are merged with a heap (O(n log n)) instead of by rescanning (O(n^2)).
_LONG_PIECE = 64


class _PieceCache(dict[str, tuple[int, ...]]):
    """A bounded cache ``piece -> token ids``: a miss encodes the piece and stores the result.

    `dict.__missing__` lets the hot loop be `map(cache.__getitem__, pieces)`, a loop in C. When
    the cache holds `max_size` pieces it is emptied, which bounds memory on unbounded streams.
    It starts (and restarts) filled with the tokens that are whole UTF-8 strings, up to half of
    `max_size`: a piece that is itself a token is the most common case and needs no merging.
    """

    def __init__(self, tokenizer: BPETokenizer, max_size: int) -> None:
        super().__init__()
        self._encode_piece = tokenizer._encode_piece_bytes
        self.max_size = max_size
        self._seed: dict[str, tuple[int, ...]] = {}
        for data, token_id in tokenizer._mergeable.items():
            if len(self._seed) >= max_size // 2:
                break
            try:
                self._seed[data.decode("utf-8")] = (token_id,)
            except UnicodeDecodeError:
                continue
        self.update(self._seed)

    def clear(self) -> None:
        """Empty the cache down to its seed of whole-token pieces."""
        super().clear()
        self.update(self._seed)

    def __missing__(self, piece: str) -> tuple[int, ...]:
        try:
            data = piece.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"text contains {piece[exc.start : exc.end]!r}, a lone surrogate that has no "
                "UTF-8 encoding; expected a valid Unicode string"
            ) from None
        ids = self._encode_piece(data)
        if len(self) >= self.max_size:
            self.clear()
        self[piece] = ids
        return ids


class BPETokenizer:
    """A byte-level byte-pair-encoding tokenizer (Sennrich et al., 2016; Radford et al., 2019).

    Args:
        vocab: token id $\\to$ token bytes. Must hold all 256 single bytes, the result of every
            merge, and (optionally) the special tokens; ids need not be contiguous.
        merges: the merges in the order they were learned, each a pair of byte strings that are
            both in `vocab` and whose concatenation is in `vocab`. Merge $r$ has rank $r$: lower
            ranks merge first.
        special_tokens: strings that are matched in the text before pre-tokenisation (longest
            first) and become one id each. A special token whose UTF-8 bytes are not yet in `vocab`
            is given the next free id.
        pattern: the pre-tokenisation regular expression (the `regex` module's syntax, `\\p{L}`
            classes allowed); [GPT2_PATTERN][fms_llm.tokenizer.GPT2_PATTERN] by default.
        cache_size: how many distinct pre-tokens the encoding cache holds before it is emptied.
        pattern_timeout: the time budget of a custom pattern on one text, in seconds plus a
            microsecond a character (`None`: unlimited); see
            [pretokenizer][fms_llm.tokenizer.bpe.pretokenizer]. The built-in patterns need none.

    A vocab entry that is neither a byte, a merge result nor a special token (GPT-2's own
    `vocab.json` read without declaring `<|endoftext|>` special) is accepted, as tiktoken accepts
    it: it decodes, a pre-token that equals it becomes that one id, and when the ids grow with the
    merge order (tiktoken's own convention) it merges as tiktoken merges it, ranked by its id.

    Raises:
        ValueError: if `vocab` misses a byte or repeats a byte string, if a merge names a token
            not in `vocab` or its result is not in `vocab`, or if `pattern` does not compile.
        TypeError: if `vocab` or `merges` hold values of the wrong type.

    Example:
        >>> tok = BPETokenizer.train(["low lower lowest"] * 10, vocab_size=260, progress=False)
        >>> tok.decode(tok.encode("lowest low"))
        'lowest low'
    """

    def __init__(
        self,
        vocab: Mapping[int, bytes],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Iterable[str] | None = None,
        pattern: str = GPT2_PATTERN,
        *,
        cache_size: int = 1 << 16,
        pattern_timeout: float | None = PATTERN_TIMEOUT,
    ) -> None:
        self._vocab, self._merges, self._specials = _validate(vocab, merges, special_tokens)
        self._findall = pretokenizer(pattern, timeout=pattern_timeout)
        self._pattern_str = pattern
        self._pattern_timeout = pattern_timeout
        self._bytes_to_id: dict[bytes, int] = {b: i for i, b in self._vocab.items()}
        special_ids = set(self._specials.values())
        # Tokens that can come out of merging: single bytes and merge results (not the specials).
        self._mergeable: dict[bytes, int] = {
            b: i for b, i in self._bytes_to_id.items() if i not in special_ids
        }
        for a, b in self._merges:  # a special token may share bytes with a merge result
            self._mergeable[a + b] = self._bytes_to_id[a + b]
        for byte in range(256):
            self._mergeable[bytes([byte])] = self._bytes_to_id[bytes([byte])]
        # rank of a concatenation: the first merge that produced it
        self._ranks: dict[bytes, int] = {}
        for rank, (a, b) in enumerate(self._merges):
            self._ranks.setdefault(a + b, rank)
        # Entries no merge makes (GPT-2's vocab.json read without declaring <|endoftext|>
        # special): tiktoken merges any adjacent pair whose concatenation has a rank, with the
        # id as the rank. When ids grow with merge order, ranking everything by id orders the
        # merges as before and slots those entries in where tiktoken has them.
        unreached = [b for b in self._mergeable if len(b) > 1 and b not in self._ranks]
        merge_ids = [self._mergeable[x] for x in self._ranks]
        if unreached and all(x < y for x, y in pairwise(merge_ids)):
            self._ranks = {b: self._mergeable[b] for b in (*self._ranks, *unreached)}
        self._special_re: Any = None
        if self._specials:
            ordered = sorted(self._specials, key=lambda s: (-len(s), s))
            self._special_re = regex.compile("|".join(regex.escape(s) for s in ordered))
        self._splitters: dict[frozenset[str], Any] = {}
        self._all_specials = tuple(sorted(self._specials))
        self._cache = _PieceCache(self, cache_size)

    # ------------------------------------------------------------------ construction
    @classmethod
    def train(
        cls,
        texts_or_paths: Iterable[str | os.PathLike[str]],
        vocab_size: int,
        special_tokens: Sequence[str] = (),
        pattern: str = GPT2_PATTERN,
        progress: bool = True,
        *,
        num_workers: int | None = None,
    ) -> BPETokenizer:
        """Learn a byte-level BPE tokenizer from texts or files.

        See [train_bpe][fms_llm.tokenizer.train.train_bpe] for the algorithm (incremental pair
        counts, a lazy heap, documented tie-breaking) and the arguments.

        Args:
            texts_or_paths: strings of text, or paths (`os.PathLike`, e.g. `pathlib.Path`) of
                UTF-8 files, which are streamed and may be larger than memory.
            vocab_size: the size of the final vocabulary: 256 bytes, the merges and the specials.
            special_tokens: strings that split the text and never merge; ids $256 + \\#merges$ on.
            pattern: the pre-tokenisation pattern.
            progress: show tqdm progress bars.
            num_workers: processes for pre-tokenising files (default: all CPUs).

        Returns:
            The trained tokenizer.
        """
        from fms_llm.tokenizer.train import train_bpe

        vocab, merges = train_bpe(
            texts_or_paths,
            vocab_size,
            special_tokens=special_tokens,
            pattern=pattern,
            progress=progress,
            num_workers=num_workers,
        )
        return cls(vocab, merges, special_tokens=special_tokens, pattern=pattern)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, pattern_timeout: float | None = PATTERN_TIMEOUT
    ) -> BPETokenizer:
        """Read a Hugging Face `tokenizer.json` (byte-level BPE) written by us or by `tokenizers`.

        Every entry of `added_tokens` becomes a special token. A file is untrusted input: its
        pattern runs under `pattern_timeout` (see the constructor), so a catastrophically
        backtracking regex makes `encode` raise, not hang.

        Raises:
            TokenizerFileError: (a `ValueError`) if the file cannot be read, is not UTF-8 JSON, is
                not a byte-level BPE tokenizer, or its tables are inconsistent (the message names
                the file and what is wrong). No other exception escapes for any file content.
        """
        from fms_llm.tokenizer.formats import TokenizerFileError, read_hf_tokenizer_json

        vocab, merges, specials, pattern = read_hf_tokenizer_json(path)
        try:
            return cls(
                vocab,
                merges,
                special_tokens=specials,
                pattern=pattern,
                pattern_timeout=pattern_timeout,
            )
        except (ValueError, TypeError) as exc:
            raise TokenizerFileError(f"tokenizer file {os.fspath(path)!r}: {exc}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the tokenizer as a Hugging Face `tokenizer.json`, atomically.

        `tokenizers.Tokenizer.from_file(path)` then encodes exactly as this tokenizer does: the
        pre-tokenizer is a `Split` on our pattern followed by `ByteLevel`, the model is `BPE` with
        our merges, and the special tokens are `added_tokens`.
        """
        from fms_llm.tokenizer.formats import write_hf_tokenizer_json

        write_hf_tokenizer_json(path, self._vocab, self._merges, self._specials, self._pattern_str)

    @classmethod
    def from_gpt2_files(
        cls,
        vocab_json: str | os.PathLike[str],
        merges_txt: str | os.PathLike[str],
        pattern: str = GPT2_PATTERN,
    ) -> BPETokenizer:
        """Read GPT-2's `vocab.json` and `merges.txt` pair (as released by OpenAI and on the Hub).

        Vocabulary entries that are neither a single byte nor a merge result (for GPT-2, only
        `<|endoftext|>`) become special tokens.
        """
        from fms_llm.tokenizer.formats import read_gpt2_files

        vocab, merges, specials = read_gpt2_files(vocab_json, merges_txt)
        return cls(vocab, merges, special_tokens=specials, pattern=pattern)

    def to_tiktoken(self, name: str = "fms-bpe") -> tiktoken.Encoding:
        """Return a `tiktoken.Encoding` with our ranks, pattern and special tokens.

        tiktoken uses one number as both the id and the merge priority, so this needs ids that
        grow with the merge order (true of every tokenizer [train][fms_llm.tokenizer.bpe.BPETokenizer.train]
        returns, and of GPT-2). Needs the optional extra `fms-llm[tiktoken]`.

        Raises:
            ValueError: if the ids of merged tokens do not increase with their merge rank.
            ImportError: if tiktoken is not installed.
        """
        from fms_llm.tokenizer.formats import to_tiktoken

        encoding: tiktoken.Encoding = to_tiktoken(
            name, self._vocab, self._merges, self._specials, self._pattern_str
        )
        return encoding

    # ------------------------------------------------------------------ properties
    @property
    def vocab(self) -> dict[int, bytes]:
        """Token id $\\to$ bytes, special tokens included (a copy)."""
        return dict(self._vocab)

    @property
    def merges(self) -> list[tuple[bytes, bytes]]:
        """The merges in rank order (a copy)."""
        return list(self._merges)

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token string $\\to$ id."""
        return dict(self._specials)

    @property
    def pattern(self) -> str:
        """The pre-tokenisation regular expression."""
        return self._pattern_str

    @property
    def vocab_size(self) -> int:
        """The number of tokens, special tokens included."""
        return len(self._vocab)

    def token_to_id(self, token: str | bytes) -> int:
        """The id of a token given as bytes, or as a string (its UTF-8 bytes, or a special token).

        Raises:
            ValueError: if the token is not in the vocabulary.
        """
        if isinstance(token, str):
            if token in self._specials:
                return self._specials[token]
            data = token.encode("utf-8")
        elif isinstance(token, bytes):
            data = token
        else:
            raise TypeError(f"token must be str or bytes, got {type(token).__name__}")
        try:
            return self._bytes_to_id[data]
        except KeyError:
            raise ValueError(f"token {token!r} is not in the vocabulary") from None

    def id_to_token(self, token_id: int) -> bytes:
        """The bytes of token `token_id`.

        Raises:
            ValueError: if `token_id` is not an id of this vocabulary.
        """
        try:
            return self._vocab[token_id]
        except (KeyError, TypeError):
            raise ValueError(
                f"token_id {token_id!r} is not in the vocabulary (ids 0..{max(self._vocab)})"
            ) from None

    # ------------------------------------------------------------------ encoding
    def _encode_piece_bytes(self, piece: bytes) -> tuple[int, ...]:
        """Encode one pre-token's bytes by rank-ordered merging (see the module docstring)."""
        whole = self._mergeable.get(piece)
        if whole is not None:
            return (whole,)
        if len(piece) > _LONG_PIECE:
            parts = _merge_long(piece, self._ranks)
        else:
            get = self._ranks.get
            parts = [piece[i : i + 1] for i in range(len(piece))]
            # pair_ranks[i] is the rank of parts[i] + parts[i + 1] (absent: a huge number)
            none = 1 << 62
            pair_ranks = [get(a + b, none) for a, b in pairwise(parts)]
            while pair_ranks:
                best = min(pair_ranks)
                if best == none:
                    break
                i = pair_ranks.index(best)  # the leftmost of equal ranks
                merged = parts[i] + parts[i + 1]
                parts[i] = merged
                del parts[i + 1]
                del pair_ranks[i]
                if i < len(pair_ranks):
                    pair_ranks[i] = get(merged + parts[i + 1], none)
                if i > 0:
                    pair_ranks[i - 1] = get(parts[i - 1] + merged, none)
        to_id = self._mergeable
        return tuple([to_id[p] for p in parts])

    def _encode_ordinary(self, text: str) -> list[int]:
        """Encode text that holds no special tokens: pre-tokenise, then look each piece up."""
        return list(chain.from_iterable(map(self._cache.__getitem__, self._findall(text))))

    def _special_policy(
        self, allowed_special: SpecialSet, disallowed_special: SpecialSet
    ) -> tuple[frozenset[str], tuple[str, ...]]:
        """tiktoken's reading of `allowed_special` / `disallowed_special`.

        Returns the special tokens to cut out of the text and the strings whose presence is an
        error: `"all"` allowed means every special token; `"all"` disallowed means every special
        token that is not allowed.
        """
        if allowed_special is _NONE and disallowed_special == "all":  # the default: no set work
            return _NONE, self._all_specials
        if allowed_special == "all":
            allowed = frozenset(self._specials)
        else:
            allowed = _string_set(allowed_special, "allowed_special")
            unknown = sorted(allowed - self._specials.keys())
            if unknown:
                raise ValueError(
                    f"allowed_special holds {unknown[:4]!r}, which are not special tokens of this "
                    f"tokenizer; expected a subset of {sorted(self._specials)[:8]!r} or 'all'"
                )
        if disallowed_special == "all":
            disallowed = frozenset(self._specials) - allowed
        else:
            disallowed = _string_set(disallowed_special, "disallowed_special")
            if "" in disallowed:
                raise ValueError(
                    "disallowed_special holds the empty string, which every text holds"
                )
        return allowed, tuple(sorted(disallowed))

    def _splitter(self, allowed: frozenset[str]) -> Any:
        """The compiled alternation of the `allowed` special tokens, longest first (None if none)."""
        if not allowed:
            return None
        if len(allowed) == len(self._specials):
            return self._special_re
        found = self._splitters.get(allowed)
        if found is None:
            ordered = sorted(allowed, key=lambda s: (-len(s), s))
            found = regex.compile("|".join(regex.escape(s) for s in ordered))
            if len(self._splitters) >= 64:
                self._splitters.clear()
            self._splitters[allowed] = found
        return found

    def _encode_with(self, text: str, splitter: Any, disallowed: tuple[str, ...]) -> list[int]:
        """Encode `text`, cutting out the specials `splitter` matches, refusing `disallowed`."""
        if disallowed:
            _refuse_disallowed(text, disallowed)
        if splitter is None:
            return self._encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for match in splitter.finditer(text):
            ids += self._encode_ordinary(text[start : match.start()])
            ids.append(self._specials[match.group()])
            start = match.end()
        ids += self._encode_ordinary(text[start:])
        return ids

    def encode(
        self,
        text: str,
        *,
        allowed_special: SpecialSet = _NONE,
        disallowed_special: SpecialSet = "all",
    ) -> list[int]:
        """Encode a string to token ids, with tiktoken's rules for special tokens.

        Special-token text is a security boundary (a user who types `<|endoftext|>` must not end
        a document), so, as in `tiktoken.Encoding.encode`:

        - a special token in `allowed_special` (a set of them, or `"all"`) becomes its one id;
        - any other special token's text is an error by default (`disallowed_special="all"` means
          every special token not allowed); `disallowed_special=()` encodes it as ordinary text,
          and a set of strings refuses exactly those strings.

        Args:
            text: the string.
            allowed_special: special tokens to encode as their ids, or `"all"`.
            disallowed_special: strings whose presence is an error, or `"all"`.

        Raises:
            TypeError: if `text` is not a string, or a special-token argument is a bare string
                (other than `"all"`) or holds non-strings.
            ValueError: if `text` holds disallowed special-token text, or a lone surrogate (no
                UTF-8 encoding), or `allowed_special` names a string that is not a special token.
            PatternTimeoutError: (a `ValueError`) if a custom pattern exceeds its time budget.

        Example:
            >>> tok = BPETokenizer.train(["a b"] * 4, 258, ["<|endoftext|>"], progress=False)
            >>> tok.encode("a<|endoftext|>", allowed_special="all")[-1] == tok.token_to_id("<|endoftext|>")
            True
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        allowed, disallowed = self._special_policy(allowed_special, disallowed_special)
        return self._encode_with(text, self._splitter(allowed), disallowed)

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode a string with every special token's text read as ordinary text (tiktoken's name).

        Raises:
            TypeError: if `text` is not a string.
            ValueError: if `text` holds a lone surrogate.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        return self._encode_ordinary(text)

    def encode_batch(
        self,
        texts: Sequence[str],
        num_workers: int | None = None,
        *,
        allowed_special: SpecialSet = _NONE,
        disallowed_special: SpecialSet = "all",
    ) -> list[list[int]]:
        """Encode many strings; in parallel over processes when the batch is large enough to pay.

        Worker processes cost a fork and the transfer of the ids, so batches under about a
        megabyte of text (or `num_workers=1`) are encoded in this process.

        Args:
            texts: the strings.
            num_workers: processes to use (default: all CPUs).
            allowed_special: as in [encode][fms_llm.tokenizer.bpe.BPETokenizer.encode].
            disallowed_special: as in [encode][fms_llm.tokenizer.bpe.BPETokenizer.encode].

        Raises:
            TypeError, ValueError: as [encode][fms_llm.tokenizer.bpe.BPETokenizer.encode] does.
        """
        texts = list(texts)
        for k, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{k}] must be str, got {type(t).__name__}")
        allowed, disallowed = self._special_policy(allowed_special, disallowed_special)
        workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
        total = sum(len(t) for t in texts)
        if workers <= 1 or len(texts) < 2 or total < (1 << 20):
            splitter = self._splitter(allowed)
            return [self._encode_with(t, splitter, disallowed) for t in texts]
        workers = min(workers, len(texts))
        # contiguous ranges of about equal character counts, a few per worker for balance
        n_groups = workers * 4
        bounds = [0]
        acc = 0
        for k, t in enumerate(texts):
            acc += len(t)
            if acc >= total * len(bounds) / n_groups and k + 1 < len(texts):
                bounds.append(k + 1)
        bounds.append(len(texts))
        global _WORKER, _TEXTS
        jobs: list[_Job]
        if "fork" in _start_methods():
            # forked workers inherit this tokenizer (warm cache included) and the texts: only
            # index ranges travel to them, and packed arrays of ids come back
            _WORKER, _TEXTS = self, texts
            jobs = [(a, b, None, allowed, disallowed) for a, b in pairwise(bounds) if b > a]
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork"))
        else:
            jobs = [(a, b, texts[a:b], allowed, disallowed) for a, b in pairwise(bounds) if b > a]
            pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=get_context("spawn"),
                initializer=_init_worker,
                initargs=(
                    self._vocab,
                    self._merges,
                    self._specials,
                    self._pattern_str,
                    self._pattern_timeout,
                ),
            )
        try:
            with pool:
                results = list(pool.map(_encode_group, jobs))
        finally:
            _WORKER, _TEXTS = None, None
        out: list[list[int]] = []
        for flat, lengths in results:
            ids = flat.tolist()
            start = 0
            for n in lengths:
                out.append(ids[start : start + n])
                start += n
        return out

    def encode_iterable(
        self,
        lines: Iterable[str],
        block_size: int = 1 << 16,
        *,
        allowed_special: SpecialSet = _NONE,
        disallowed_special: SpecialSet = "all",
    ) -> Iterator[int]:
        """Encode a stream of strings (e.g. an open file) lazily, in bounded memory.

        The ids equal `encode("".join(lines), ...)` for the built-in patterns: text is buffered
        until `block_size` characters, then every pre-token that ends at least a safety margin
        before the end of the buffer is final (no later text can change it) and is encoded; the
        rest waits. Memory is $O(\text{block\\_size} + \text{cache})$, independent of the stream
        length, as long as the text has pre-token boundaries (a gigabyte with no whitespace is one
        piece, which must be held whole).

        Time is linear in the stream's length even then: when a scan leaves $r$ characters
        undecided, the next scan waits for $\\max(\\text{block\\_size}, r)$ new characters, so each
        scan is at most about twice the text it adds, and a character is scanned $O(1)$ times in
        total (not once per block, which made a long run without whitespace quadratic).

        Args:
            lines: the strings, concatenated in order.
            block_size: characters buffered before a scan.
            allowed_special: as in [encode][fms_llm.tokenizer.bpe.BPETokenizer.encode].
            disallowed_special: as in [encode][fms_llm.tokenizer.bpe.BPETokenizer.encode].

        Raises:
            TypeError, ValueError: as [encode][fms_llm.tokenizer.bpe.BPETokenizer.encode] does.
        """
        for block in self._encode_blocks(
            lines,
            block_size,
            allowed_special=allowed_special,
            disallowed_special=disallowed_special,
        ):
            yield from block

    def _encode_blocks(
        self,
        lines: Iterable[str],
        block_size: int = 1 << 16,
        *,
        allowed_special: SpecialSet = _NONE,
        disallowed_special: SpecialSet = "all",
    ) -> Iterator[list[int]]:
        """[encode_iterable][fms_llm.tokenizer.bpe.BPETokenizer.encode_iterable], a block of ids at a time."""
        allowed, disallowed = self._special_policy(allowed_special, disallowed_special)
        splitter = self._splitter(allowed)
        pending: list[str] = []
        size = 0
        threshold = block_size
        longest = max((len(x) for x in chain(allowed, disallowed)), default=0)
        margin = longest + _PATTERN_LOOKAHEAD
        for line in lines:
            if not isinstance(line, str):
                raise TypeError(f"lines must yield str, got {type(line).__name__}")
            pending.append(line)
            size += len(line)
            if size < threshold:
                continue
            buffer = "".join(pending)
            if disallowed:  # the undecided rest (>= margin) carries a string cut at the end
                _refuse_disallowed(buffer, disallowed)
            ids, consumed = self._encode_prefix(buffer, len(buffer) - margin, splitter)
            yield ids
            rest = buffer[consumed:]
            pending, size = [rest], len(rest)
            threshold = len(rest) + max(block_size, len(rest))
        yield self._encode_with("".join(pending), splitter, disallowed)

    def _encode_prefix(self, buffer: str, limit: int, splitter: Any) -> tuple[list[int], int]:
        """Encode the part of `buffer` that is final whatever text follows it.

        Returns the ids and how many characters they cover. Special tokens starting before
        `limit` lie wholly in the buffer (the margin exceeds the longest special), and ordinary
        pre-tokens are final if they end at least the pattern look-ahead before `limit`.
        """
        ids: list[int] = []
        start = 0
        if splitter is not None:
            for match in splitter.finditer(buffer, 0, len(buffer)):
                if match.start() >= limit:
                    break
                ids += self._encode_ordinary(buffer[start : match.start()])
                ids.append(self._specials[match.group()])
                start = match.end()
        tail = buffer[start:]
        pieces = self._findall(tail)  # the pieces tile the text (pretokenizer guarantees it)
        k, end = len(pieces), len(tail)
        while k > 0 and start + end > limit:
            k -= 1
            end -= len(pieces[k])
        ids += chain.from_iterable(map(self._cache.__getitem__, pieces[:k]))
        return ids, start + end

    # ------------------------------------------------------------------ decoding
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Concatenate the bytes of the tokens `ids`.

        Raises:
            ValueError: if an id is not in the vocabulary.
        """
        ids = list(ids)
        try:
            return b"".join(map(self._vocab.__getitem__, ids))
        except (KeyError, TypeError):
            bad = next(i for i in ids if not isinstance(i, int) or i not in self._vocab)
            raise ValueError(
                f"ids holds {bad!r}, which is not a token id of this vocabulary "
                f"(size {len(self._vocab)}, ids 0..{max(self._vocab)})"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Decode token ids to a string; byte sequences that are not UTF-8 become U+FFFD.

        Raises:
            ValueError: if an id is not in the vocabulary.
        """
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return len(self._vocab)

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={len(self._vocab)}, merges={len(self._merges)}, "
            f"special_tokens={list(self._specials)})"
        )


# ---------------------------------------------------------------------- helpers
def _string_set(value: Any, name: str) -> frozenset[str]:
    """`value` (a collection of strings) as a frozenset, or a TypeError that names `name`."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(
            f"{name} must be 'all' or a collection of strings (e.g. {{'<|endoftext|>'}}), "
            f"got {value!r}"
        )
    out = frozenset(value)
    bad = [x for x in out if not isinstance(x, str)]
    if bad:
        raise TypeError(f"{name} must hold strings, got {bad[0]!r}")
    return out


def _refuse_disallowed(text: str, disallowed: Sequence[str]) -> None:
    """Raise tiktoken's error if `text` holds one of the `disallowed` strings (the leftmost)."""
    hits = [(text.find(s), s) for s in disallowed if s in text]
    if hits:
        at, token = min(hits)
        raise ValueError(
            f"text holds the special token {token!r} (at character {at}), which is disallowed. "
            f"To encode it as its special id pass allowed_special={{{token!r}}} (or 'all'); to "
            "encode it as ordinary text pass disallowed_special=() (or a set without it)"
        )


def _merge_long(piece: bytes, ranks: Mapping[bytes, int]) -> list[bytes]:
    """Rank-ordered merging in $O(n \\log n)$ for long pieces (a doubly linked list and a heap).

    Same result as the rescanning loop: the heap orders candidate pairs by (rank, start byte),
    so of equal ranks the leftmost merges first; an entry whose pair has changed is skipped.
    """
    n = len(piece)
    parts: list[bytes | None] = [piece[i : i + 1] for i in range(n)]
    nxt = list(range(1, n + 1))
    prv = list(range(-1, n - 1))
    heap: list[tuple[int, int, bytes]] = []
    for i in range(n - 1):
        pair = piece[i : i + 2]
        r = ranks.get(pair)
        if r is not None:
            heap.append((r, i, pair))
    heapq.heapify(heap)
    while heap:
        r, i, pair = heapq.heappop(heap)
        left = parts[i]
        j = nxt[i]
        if left is None or j >= n:
            continue
        right = parts[j]
        assert right is not None
        if left + right != pair:
            continue  # stale: one side has merged since this entry was pushed
        parts[i] = pair
        parts[j] = None
        k = nxt[j]
        nxt[i] = k
        if k < n:
            prv[k] = i
            nr = parts[k]
            assert nr is not None
            cand = pair + nr
            cr = ranks.get(cand)
            if cr is not None:
                heapq.heappush(heap, (cr, i, cand))
        p = prv[i]
        if p >= 0:
            pl = parts[p]
            assert pl is not None
            cand = pl + pair
            cr = ranks.get(cand)
            if cr is not None:
                heapq.heappush(heap, (cr, p, cand))
    return [p for p in parts if p is not None]


def _validate(
    vocab: Mapping[int, bytes],
    merges: Sequence[tuple[bytes, bytes]],
    special_tokens: Iterable[str] | None,
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]], dict[str, int]]:
    """Check the constructor's arguments; return owned copies and the special-token ids."""
    if not isinstance(vocab, Mapping):
        raise TypeError(f"vocab must be a mapping id -> bytes, got {type(vocab).__name__}")
    out_vocab: dict[int, bytes] = {}
    seen: dict[bytes, int] = {}
    for i, b in vocab.items():
        if not isinstance(i, int) or isinstance(i, bool) or i < 0:
            raise TypeError(f"vocab keys must be non-negative ints, got {i!r}")
        if not isinstance(b, bytes) or not b:
            raise TypeError(f"vocab[{i}] must be non-empty bytes, got {b!r}")
        if b in seen:
            raise ValueError(
                f"vocab maps both id {seen[b]} and id {i} to {b!r}; token bytes must be unique"
            )
        seen[b] = i
        out_vocab[i] = b
    missing = [x for x in range(256) if bytes([x]) not in seen]
    if missing:
        shown = ", ".join(f"0x{x:02x}" for x in missing[:8])
        raise ValueError(
            f"vocab lacks {len(missing)} of the 256 single bytes ({shown}{', ...' if len(missing) > 8 else ''}); "
            "a byte-level vocabulary must hold every byte so that any text can be encoded"
        )
    out_merges: list[tuple[bytes, bytes]] = []
    for r, merge in enumerate(merges):
        if (
            not isinstance(merge, tuple | list)
            or len(merge) != 2
            or not all(isinstance(x, bytes) for x in merge)
        ):
            raise TypeError(f"merges[{r}] must be a pair of bytes, got {merge!r}")
        a, b = merge
        for side in (a, b):
            if side not in seen:
                raise ValueError(
                    f"merges[{r}] = {(a, b)!r} refers to the token {side!r}, which is not in vocab"
                )
        if a + b not in seen:
            raise ValueError(f"merges[{r}] = {(a, b)!r} produces {a + b!r}, which is not in vocab")
        out_merges.append((a, b))
    specials: dict[str, int] = {}
    next_id = max(out_vocab) + 1
    for s in special_tokens or ():
        if not isinstance(s, str) or not s:
            raise TypeError(f"special tokens must be non-empty strings, got {s!r}")
        data = s.encode("utf-8")
        if data not in seen:
            out_vocab[next_id] = data
            seen[data] = next_id
            next_id += 1
        specials[s] = seen[data]
    return out_vocab, out_merges, specials


def _start_methods() -> list[str]:
    import multiprocessing

    return multiprocessing.get_all_start_methods()


_WORKER: BPETokenizer | None = None
# an encode_batch job: a range of texts (or the texts), the allowed specials, the refused strings
_Job = tuple[int, int, list[str] | None, frozenset[str], tuple[str, ...]]
_TEXTS: list[str] | None = None


def _init_worker(
    vocab: dict[int, bytes],
    merges: list[tuple[bytes, bytes]],
    specials: dict[str, int],
    pattern: str,
    pattern_timeout: float | None,
) -> None:
    global _WORKER
    _WORKER = BPETokenizer(
        vocab,
        merges,
        special_tokens=list(specials),
        pattern=pattern,
        pattern_timeout=pattern_timeout,
    )
    # specials were validated against this vocab already, so the ids are the same ones


def _encode_group(job: _Job) -> tuple[array[int], array[int]]:
    """Encode `texts[start:end]` in a worker: all ids in one packed array, and the lengths."""
    start, end, texts, allowed, disallowed = job
    assert _WORKER is not None
    if texts is None:
        assert _TEXTS is not None
        texts = _TEXTS[start:end]
    code = "I" if max(_WORKER._vocab) < 1 << 32 else "Q"
    flat: array[int] = array(code)
    lengths: array[int] = array("Q")
    splitter = _WORKER._splitter(allowed)
    for t in texts:
        ids = _WORKER._encode_with(t, splitter, disallowed)
        flat.extend(ids)
        lengths.append(len(ids))
    return flat, lengths
