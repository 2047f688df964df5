r"""Byte-level BPE training: streamed parallel pre-tokenisation and incremental merging.

**The algorithm** (Sennrich et al., 2016, on bytes as in GPT-2). Cut the corpus into pre-tokens
with the pattern (special tokens first removed: they split the text and never merge), count each
distinct pre-token $w$ once with its frequency $f_w$, and start every pre-token as its bytes.
Then repeat until the vocabulary is full:

$$
(a, b)^\star = \arg\max_{(a, b)} \; c(a, b), \qquad c(a, b) = \sum_w f_w \, \#\{i : w_i = a, w_{i+1} = b\},
$$

create the token $ab$, and replace every occurrence of the pair in every pre-token (left to right,
so `a a a` becomes `aa a`).

**Incremental form.** Recounting $c$ over the corpus at each step costs $O(\text{corpus})$ per
merge. Instead we keep the counts $c$, an index `pair -> pre-tokens that hold it`, and a max-heap of
`(count, pair)`. A merge visits only the pre-tokens in the index entry of its pair, and for each
subtracts the counts of its old pairs and adds those of its new ones. Changed counts are pushed
onto the heap again; an entry whose count no longer equals the current count is stale and skipped
when popped (lazy invalidation). The work of a merge is proportional to the pre-tokens it touches.

**Tie-breaking** (deterministic and documented): of pairs with equal counts, the one whose byte
strings $(a, b)$ are lexicographically greatest wins, compared first on $a$ then on $b$ (the
convention of GPT-2-style trainers such as the one in Stanford CS336). A pair whose concatenation
is already a token (two different splits of the same bytes can both become frequent) is never
merged, so every merge creates a new token and ids grow with merge order, as tiktoken requires.

**Streaming and parallel pre-tokenisation.** Files are cut into chunks at special-token
occurrences or, for the built-in patterns, before a space that follows a printable ASCII
character or a newline that follows a letter or digit (points where both patterns always cut).
Each chunk is read and counted by a worker process, so a file larger than memory needs only the
table of distinct pre-tokens in memory.
"""

from __future__ import annotations

import heapq
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import pairwise
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import regex
from tqdm.auto import tqdm

from fms_llm.tokenizer.bpe import CL100K_PATTERN, GPT2_PATTERN, pretokenizer

__all__ = ["chunk_boundaries", "count_pretokens", "read_text_range", "train_bpe"]

_CHUNK_BYTES = 8 << 20  # the most text one worker reads at once
_WINDOW = 1 << 16  # how far to read ahead when looking for a chunk boundary


def train_bpe(
    texts_or_paths: Iterable[str | os.PathLike[str]],
    vocab_size: int,
    special_tokens: Sequence[str] = (),
    pattern: str = GPT2_PATTERN,
    progress: bool = True,
    num_workers: int | None = None,
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Train byte-level BPE; return the vocabulary and the merges.

    Ids: bytes $0..255$ are ids $0..255$, merge $r$ creates id $256 + r$, and the special tokens
    follow in the order given. Training stops early (a smaller vocabulary) if no pair is left.

    Args:
        texts_or_paths: strings of text, and/or `os.PathLike` paths of UTF-8 files (a plain `str`
            is always text, never a path).
        vocab_size: the final vocabulary size: at least 256 plus the number of special tokens.
        special_tokens: strings removed from the text before counting (they split it).
        pattern: the pre-tokenisation regular expression.
        progress: show tqdm progress bars.
        num_workers: processes for pre-tokenising files (default: all CPUs).

    Returns:
        `(vocab, merges)`: vocab maps id to bytes (specials included), merges are in rank order.

    Raises:
        ValueError: if `vocab_size` is too small, a special token is empty or repeated, or a file
            is not UTF-8.
        FileNotFoundError: if a path does not exist.
    """
    specials = list(special_tokens)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    if vocab_size < 256 + len(specials):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level vocabulary needs 256 byte tokens "
            f"plus {len(specials)} special token(s), so vocab_size >= {256 + len(specials)}"
        )
    if len(set(specials)) != len(specials) or not all(isinstance(s, str) and s for s in specials):
        raise ValueError(f"special_tokens must be distinct non-empty strings, got {specials!r}")
    if isinstance(texts_or_paths, str | os.PathLike):
        raise TypeError(
            "texts_or_paths must be an iterable of texts or paths, got a single "
            f"{type(texts_or_paths).__name__}; wrap it in a list"
        )
    counts = count_pretokens(texts_or_paths, specials, pattern, progress, num_workers)
    merges = _merge(counts, vocab_size - 256 - len(specials), progress)
    vocab = {i: bytes([i]) for i in range(256)}
    for a, b in merges:
        vocab[len(vocab)] = a + b
    for s in specials:
        vocab[len(vocab)] = s.encode("utf-8")
    return vocab, merges


# ---------------------------------------------------------------------- pre-tokenisation
def _special_splitter(specials: Sequence[str]) -> Any:
    if not specials:
        return None
    ordered = sorted(specials, key=lambda s: (-len(s), s))
    return regex.compile("|".join(regex.escape(s) for s in ordered))


def _count_text(
    text: str, splitter: Any, findall: Callable[[str], list[str]], into: Counter[str]
) -> None:
    parts = splitter.split(text) if splitter is not None else [text]
    for part in parts:
        into.update(findall(part))


def chunk_boundaries(
    path: str | os.PathLike[str],
    special_tokens: Sequence[str],
    pattern: str,
    chunk_bytes: int = _CHUNK_BYTES,
) -> list[int]:
    """Byte offsets that cut a file into chunks that can be pre-tokenised independently.

    A cut falls at the start of a special token or, for the built-in patterns, before a space
    that follows a printable ASCII character or before a newline that follows a letter or a digit
    (both patterns end a pre-token there, and neither looks across it). The file is read a window
    at a time, never whole; a stretch of file with no such point stays in one chunk.

    Returns:
        `[0, c_1, ..., size]`, strictly increasing; chunks are `[c_k, c_{k+1})`.
    """
    size = os.path.getsize(path)
    encoded = [s.encode("utf-8") for s in special_tokens]
    longest = max((len(s) for s in encoded), default=0)
    space_rule = pattern in (GPT2_PATTERN, CL100K_PATTERN)
    bounds = [0]
    with open(path, "rb") as f:
        target = chunk_bytes
        while target < size:
            pos = _find_cut(f, target, size, encoded, longest, space_rule)
            if pos >= size:
                break
            bounds.append(pos)
            target = pos + chunk_bytes
    bounds.append(size)
    return bounds


def _find_cut(
    f: Any, start: int, size: int, specials: list[bytes], longest: int, space_rule: bool
) -> int:
    """The first safe cut at or after `start` (or `size` when there is none)."""
    pos = start
    while pos < size:
        lo = max(0, pos - longest)
        f.seek(lo)
        window: bytes = f.read(_WINDOW + 2 * longest + 1)
        if not window:
            break
        best = size
        for s in specials:  # the earliest special token that starts at or after pos
            k = window.find(s, pos - lo)
            if k >= 0:
                best = min(best, lo + k)
        if space_rule:
            for m in _CUT_CANDIDATE.finditer(window, max(pos - lo, 1)):
                k = m.start()
                if lo + k >= best:
                    break
                if _safe_before(window, k) and not _inside_special(window, k, specials):
                    best = lo + k
                    break
        if best < size:
            return best
        pos += _WINDOW
    return size


_CUT_CANDIDATE = re.compile(rb"[ \n]")
_LETTER_OR_DIGIT = regex.compile(r"[\p{L}\p{N}]")


def _safe_before(window: bytes, k: int) -> bool:
    """Whether both built-in patterns end a pre-token before `window[k]` (a space or a newline).

    A space after a printable ASCII character, or a newline after a letter or a digit: no
    alternative of either pattern continues a pre-token of those characters with whitespace
    (only punctuation takes trailing newlines, in cl100k), and both scan forward only.
    """
    prev = window[k - 1]
    if window[k] == 0x20:
        return 0x21 <= prev <= 0x7E
    j = k - 1  # a newline: decode the character before it (up to 4 UTF-8 bytes)
    while j > 0 and k - j < 4 and 0x80 <= window[j] <= 0xBF:
        j -= 1
    try:
        char = window[j:k].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _LETTER_OR_DIGIT.fullmatch(char) is not None


def _inside_special(window: bytes, k: int, specials: list[bytes]) -> bool:
    for s in specials:
        j = window.find(s, max(0, k - len(s) + 1))
        while 0 <= j < k:
            if j + len(s) > k:
                return True
            j = window.find(s, j + 1)
    return False


def read_text_range(path: str, start: int, end: int, name: str | None = None) -> str:
    """Bytes `start .. end` of the file at `path`, decoded as UTF-8 (a chunk of
    [chunk_boundaries][fms_llm.tokenizer.train.chunk_boundaries]).

    Raises:
        ValueError: the bytes are not UTF-8; the message names the file (as `name`, default its
            path) and the absolute byte offsets.
    """
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{name or path} is not UTF-8: bytes {start + exc.start}..{start + exc.end} "
            f"({exc.reason})"
        ) from None


def _count_chunk(args: tuple[str, int, int, list[str], str]) -> Counter[str]:
    path, start, end, specials, pattern = args
    text = read_text_range(path, start, end)
    counts: Counter[str] = Counter()
    _count_text(text, _special_splitter(specials), pretokenizer(pattern), counts)
    return counts


def count_pretokens(
    texts_or_paths: Iterable[str | os.PathLike[str]],
    special_tokens: Sequence[str] = (),
    pattern: str = GPT2_PATTERN,
    progress: bool = False,
    num_workers: int | None = None,
    chunk_bytes: int = _CHUNK_BYTES,
) -> Counter[str]:
    """Count the pre-tokens of texts and files (special tokens removed).

    Files are cut by [chunk_boundaries][fms_llm.tokenizer.train.chunk_boundaries] and counted by a
    pool of worker processes when there is more than one chunk; plain strings are counted here.
    `chunk_bytes` is the target chunk size (a chunk ends at the first safe cut after it).
    """
    compiled = pretokenizer(pattern)
    splitter = _special_splitter(special_tokens)
    counts: Counter[str] = Counter()
    jobs: list[tuple[str, int, int, list[str], str]] = []
    texts_bar: Any = None  # created at the first text, so that file-only runs show no empty bar
    for item in texts_or_paths:
        if isinstance(item, str):
            if texts_bar is None:
                texts_bar = tqdm(unit=" texts", desc="pre-tokenise texts", disable=not progress)
            _count_text(item, splitter, compiled, counts)
            texts_bar.update(1)
        elif isinstance(item, os.PathLike):
            path = os.fspath(item)
            if not Path(path).is_file():
                raise FileNotFoundError(f"training file {path!r} does not exist or is not a file")
            bounds = chunk_boundaries(path, special_tokens, pattern, chunk_bytes)
            jobs += [(path, a, b, list(special_tokens), pattern) for a, b in pairwise(bounds)]
        else:
            raise TypeError(
                f"texts_or_paths must hold str (text) or os.PathLike (file), got {type(item).__name__}"
            )
    if texts_bar is not None:
        texts_bar.close()
    if not jobs:
        return counts
    total = sum(b - a for _, a, b, _, _ in jobs)
    workers = min(num_workers or os.cpu_count() or 1, len(jobs))
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="pre-tokenise", disable=not progress)
    results: Iterator[Counter[str]]
    if workers <= 1:
        results = map(_count_chunk, jobs)
        for job, part in zip(jobs, results, strict=True):
            counts.update(part)
            bar.update(job[2] - job[1])
    else:
        method = "fork" if "fork" in get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context(method)) as pool:
            for job, part in zip(jobs, pool.map(_count_chunk, jobs), strict=True):
                counts.update(part)
                bar.update(job[2] - job[1])
    bar.close()
    return counts


# ---------------------------------------------------------------------- merging
def _order_key(token: bytes) -> tuple[int, ...]:
    """A key whose ascending order is the *descending* lexicographic order of byte strings.

    Each byte $x$ maps to $255 - x$ and a terminator 256 (larger than any byte) ends the key, so a
    proper prefix sorts after its extensions, as the greater string must.
    """
    return (*(255 - x for x in token), 256)


def _merge(counts: Counter[str], n_merges: int, progress: bool) -> list[tuple[bytes, bytes]]:
    """Run `n_merges` merges on the pre-token counts with the incremental algorithm."""
    token_bytes: list[bytes] = [bytes([i]) for i in range(256)]
    keys: list[tuple[int, ...]] = [_order_key(b) for b in token_bytes]
    known: set[bytes] = set(token_bytes)
    words: list[list[int]] = []
    freqs: list[int] = []
    for piece, f in counts.items():
        data = piece.encode("utf-8")
        if len(data) > 1:
            words.append(list(data))
            freqs.append(f)

    pair_counts: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}
    for idx, (w, f) in enumerate(zip(words, freqs, strict=True)):
        for pair in pairwise(w):
            pair_counts[pair] = pair_counts.get(pair, 0) + f
            s = where.get(pair)
            if s is None:
                where[pair] = {idx}
            else:
                s.add(idx)
    heap = [(-c, keys[a], keys[b], a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)
    banned: set[tuple[int, int]] = set()  # pairs whose concatenation is already a token

    merges: list[tuple[bytes, bytes]] = []
    bar = tqdm(total=n_merges, unit="merge", desc="merge", disable=not progress)
    while len(merges) < n_merges and heap:
        neg, _, _, a, b = heapq.heappop(heap)
        pair = (a, b)
        if pair_counts.get(pair) != -neg or pair in banned:
            continue  # stale entry
        merged = token_bytes[a] + token_bytes[b]
        if merged in known:
            banned.add(pair)
            continue
        new = len(token_bytes)
        token_bytes.append(merged)
        keys.append(_order_key(merged))
        known.add(merged)
        merges.append((token_bytes[a], token_bytes[b]))
        bar.update(1)

        delta: dict[tuple[int, int], int] = {}
        for idx in where.pop(pair):
            w = words[idx]
            n = len(w)
            # replace occurrences left to right
            out: list[int] = []
            i = 0
            changed = False
            while i < n:
                if i < n - 1 and w[i] == a and w[i + 1] == b:
                    out.append(new)
                    i += 2
                    changed = True
                else:
                    out.append(w[i])
                    i += 1
            if not changed:
                continue  # a stale index entry: the pair left this word in an earlier merge
            f = freqs[idx]
            for p in pairwise(w):
                delta[p] = delta.get(p, 0) - f
            for p in pairwise(out):
                delta[p] = delta.get(p, 0) + f
                if new in p:
                    s = where.get(p)
                    if s is None:
                        where[p] = {idx}
                    else:
                        s.add(idx)
            words[idx] = out
        for p, d in delta.items():
            if d == 0:
                continue
            c = pair_counts.get(p, 0) + d
            if c > 0:
                pair_counts[p] = c
                if p not in banned:
                    heapq.heappush(heap, (-c, keys[p[0]], keys[p[1]], p[0], p[1]))
            else:
                del pair_counts[p]
    bar.close()
    return merges
