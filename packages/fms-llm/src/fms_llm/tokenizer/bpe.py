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
from concurrent.futures import ProcessPoolExecutor
from itertools import chain, pairwise
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any

import regex

if TYPE_CHECKING:
    import tiktoken

__all__ = ["CL100K_PATTERN", "GPT2_PATTERN", "BPETokenizer", "pretokenizer"]

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


def pretokenizer(pattern: str) -> Callable[[str], list[str]]:
    """The function that cuts text into pre-tokens with `pattern` (`findall`).

    For the built-in patterns, ASCII text goes through an equivalent `re` pattern (faster);
    other text, and other patterns, through the `regex` module.

    Raises:
        ValueError: if `pattern` does not compile.
    """
    try:
        full = regex.compile(pattern).findall
    except regex.error as exc:
        raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
    ascii_version = _ASCII_VERSIONS.get(pattern)
    if ascii_version is None:
        return full  # type: ignore[no-any-return]
    fast = re.compile(ascii_version).findall

    def findall(text: str) -> list[str]:
        return fast(text) if text.isascii() else full(text)

    return findall


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

    Raises:
        ValueError: if `vocab` misses a byte or repeats a byte string, if a merge names a token
            not in `vocab` or its result is not in `vocab`, if a vocab entry is neither a byte, a
            merge result nor a special token, or if `pattern` does not compile.
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
    ) -> None:
        self._vocab, self._merges, self._specials = _validate(vocab, merges, special_tokens)
        self._findall = pretokenizer(pattern)
        self._pattern = regex.compile(pattern)
        self._pattern_str = pattern
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
        self._special_re: Any = None
        if self._specials:
            ordered = sorted(self._specials, key=lambda s: (-len(s), s))
            self._special_re = regex.compile("|".join(regex.escape(s) for s in ordered))
        self._max_special_len = max((len(s) for s in self._specials), default=0)
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
    def load(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        """Read a Hugging Face `tokenizer.json` (byte-level BPE) written by us or by `tokenizers`.

        Every entry of `added_tokens` becomes a special token.

        Raises:
            ValueError: if the file cannot be read, is not JSON, or is not a byte-level BPE
                tokenizer (the message names the file and what is wrong).
        """
        from fms_llm.tokenizer.formats import read_hf_tokenizer_json

        vocab, merges, specials, pattern = read_hf_tokenizer_json(path)
        return cls(vocab, merges, special_tokens=specials, pattern=pattern)

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

    def encode(self, text: str) -> list[int]:
        """Encode a string to token ids; special tokens in the text become their ids.

        Raises:
            TypeError: if `text` is not a string.
            ValueError: if `text` holds a lone surrogate (it has no UTF-8 encoding).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if self._special_re is None:
            return self._encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for match in self._special_re.finditer(text):
            ids += self._encode_ordinary(text[start : match.start()])
            ids.append(self._specials[match.group()])
            start = match.end()
        ids += self._encode_ordinary(text[start:])
        return ids

    def encode_batch(self, texts: Sequence[str], num_workers: int | None = None) -> list[list[int]]:
        """Encode many strings; in parallel over processes when the batch is large enough to pay.

        Worker processes cost a fork and the transfer of the ids, so batches under about a
        megabyte of text (or `num_workers=1`) are encoded in this process.

        Args:
            texts: the strings.
            num_workers: processes to use (default: all CPUs).
        """
        texts = list(texts)
        workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
        total = sum(len(t) for t in texts)
        if workers <= 1 or len(texts) < 2 or total < (1 << 20):
            return [self.encode(t) for t in texts]
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
        jobs: list[tuple[int, int, list[str] | None]]
        if "fork" in _start_methods():
            # forked workers inherit this tokenizer (warm cache included) and the texts: only
            # index ranges travel to them, and packed arrays of ids come back
            _WORKER, _TEXTS = self, texts
            jobs = [(a, b, None) for a, b in pairwise(bounds) if b > a]
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork"))
        else:
            jobs = [(a, b, texts[a:b]) for a, b in pairwise(bounds) if b > a]
            pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=get_context("spawn"),
                initializer=_init_worker,
                initargs=(self._vocab, self._merges, self._specials, self._pattern_str),
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

    def encode_iterable(self, lines: Iterable[str], block_size: int = 1 << 16) -> Iterator[int]:
        """Encode a stream of strings (e.g. an open file) lazily, in bounded memory.

        The ids equal `encode("".join(lines))` for the built-in patterns: text is buffered until
        `block_size` characters, then every pre-token that ends at least a safety margin before the
        end of the buffer is final (no later text can change it) and is encoded; the rest waits.
        Memory is $O(\\text{block\\_size} + \\text{cache})$, independent of the stream length, as
        long as the text has pre-token boundaries (a gigabyte with no whitespace is one piece).
        """
        for block in self._encode_blocks(lines, block_size):
            yield from block

    def _encode_blocks(
        self, lines: Iterable[str], block_size: int = 1 << 16
    ) -> Iterator[list[int]]:
        """[encode_iterable][fms_llm.tokenizer.bpe.BPETokenizer.encode_iterable], a block of ids at a time."""
        pending: list[str] = []
        size = 0
        margin = self._max_special_len + _PATTERN_LOOKAHEAD
        for line in lines:
            pending.append(line)
            size += len(line)
            if size < block_size:
                continue
            buffer = "".join(pending)
            ids, consumed = self._encode_prefix(buffer, len(buffer) - margin)
            yield ids
            rest = buffer[consumed:]
            pending, size = [rest], len(rest)
        yield self.encode("".join(pending))

    def _encode_prefix(self, buffer: str, limit: int) -> tuple[list[int], int]:
        """Encode the part of `buffer` that is final whatever text follows it.

        Returns the ids and how many characters they cover. Special tokens starting before
        `limit` lie wholly in the buffer (the margin exceeds the longest special), and ordinary
        pre-tokens are final if they end at least the pattern look-ahead before `limit`.
        """
        ids: list[int] = []
        start = 0
        if self._special_re is not None:
            for match in self._special_re.finditer(buffer, 0, len(buffer)):
                if match.start() >= limit:
                    break
                ids += self._encode_ordinary(buffer[start : match.start()])
                ids.append(self._specials[match.group()])
                start = match.end()
        cache = self._cache
        tail = buffer[start:]
        pieces = self._findall(tail)
        if sum(map(len, pieces)) == len(tail):  # the pieces tile the text (true of the built-ins)
            k, end = len(pieces), len(tail)
            while k > 0 and start + end > limit:
                k -= 1
                end -= len(pieces[k])
            ids += chain.from_iterable(map(cache.__getitem__, pieces[:k]))
            return ids, start + end
        cut = start  # a pattern that skips characters: find the piece ends one by one
        for m in self._pattern.finditer(buffer, start):
            if m.end() > limit:
                break
            ids += cache[m.group()]
            cut = m.end()
        return ids, cut

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
    produced = {a + b for a, b in out_merges}
    special_bytes = {s.encode("utf-8") for s in specials}
    for i, b in out_vocab.items():
        if len(b) > 1 and b not in produced and b not in special_bytes:
            raise ValueError(
                f"vocab[{i}] = {b!r} is neither a single byte, the result of a merge, nor a special "
                "token, so no text could ever produce it; pass it in special_tokens or add its merge"
            )
    return out_vocab, out_merges, specials


def _start_methods() -> list[str]:
    import multiprocessing

    return multiprocessing.get_all_start_methods()


_WORKER: BPETokenizer | None = None
_TEXTS: list[str] | None = None


def _init_worker(
    vocab: dict[int, bytes],
    merges: list[tuple[bytes, bytes]],
    specials: dict[str, int],
    pattern: str,
) -> None:
    global _WORKER
    _WORKER = BPETokenizer(vocab, merges, special_tokens=list(specials), pattern=pattern)
    # specials were validated against this vocab already, so the ids are the same ones


def _encode_group(job: tuple[int, int, list[str] | None]) -> tuple[array[int], array[int]]:
    """Encode `texts[start:end]` in a worker: all ids in one packed array, and the lengths."""
    start, end, texts = job
    assert _WORKER is not None
    if texts is None:
        assert _TEXTS is not None
        texts = _TEXTS[start:end]
    code = "I" if max(_WORKER._vocab) < 1 << 32 else "Q"
    flat: array[int] = array(code)
    lengths: array[int] = array("Q")
    for t in texts:
        ids = _WORKER.encode(t)
        flat.extend(ids)
        lengths.append(len(ids))
    return flat, lengths
