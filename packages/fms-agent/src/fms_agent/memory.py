r"""Memory as retrieval: what an agent keeps of a conversation longer than its context.

A model reads a bounded context, so a long conversation must be cut down, and every way of
cutting is a bet on what will be asked later. Four memories with one interface, `remember(text)`
and `recall(query, k)` (the `k` remembered texts most likely to answer `query`, best first):

- [BufferMemory][fms_agent.memory.BufferMemory]: the most recent texts that fit a token budget.
  Recall ignores the query: it returns the newest. A fact older than the budget is gone.
- [SummaryMemory][fms_agent.memory.SummaryMemory]: a buffer whose evicted texts are folded into a
  running summary by a model call (any [Backend][fms_agent.llm.Backend]); recall returns the
  summary first, then the newest texts. The summary is itself bounded, so it is lossy by design;
  what survives is what the summariser judged worth keeping.
- [BM25Memory][fms_agent.memory.BM25Memory]: every text kept, ranked by BM25 (below), a lexical
  score: it finds texts that share the query's words, and misses paraphrases.
- [VectorMemory][fms_agent.memory.VectorMemory]: every text kept as an embedding, ranked by cosine
  similarity to the query's embedding.

**BM25.** For a query $q$ and a document $d$ of length $|d|$ (in tokens) in a collection of $N$
documents of mean length $\overline{|d|}$, with $f(t, d)$ the count of term $t$ in $d$ and $n_t$
the number of documents holding $t$:

$$
\mathrm{BM25}(q, d) = \sum_{t \in q} \mathrm{idf}(t)\,
\frac{f(t, d)\,(k_1 + 1)}{f(t, d) + k_1 \left(1 - b + b\,|d| / \overline{|d|}\right)}
$$

The fraction saturates: a term's tenth occurrence adds far less than its first ($k_1$ sets how
fast, 1.2 to 2), and $b$ discounts long documents. Two inverse document frequencies are in use:
Robertson and Spärck Jones' $\log\frac{N - n_t + 0.5}{n_t + 0.5}$ (`idf="okapi"`), negative for a
term in more than half the documents, which `rank_bm25` floors at $\epsilon$ times the mean idf;
and Lucene's $\log\left(1 + \frac{N - n_t + 0.5}{n_t + 0.5}\right)$ (`idf="lucene"`, the default),
always positive, so a common term never lowers a score.

**Embeddings.** [HashedNgramEmbedder][fms_agent.memory.HashedNgramEmbedder] maps a text to the
counts of its character n-grams (within words padded by spaces), each n-gram hashed by
MurmurHash3 into one of $D$ buckets with a sign from the hash, then L2-normalised: the
"hashing trick", equal to scikit-learn's `HashingVectorizer(analyzer="char_wb")`. It is chosen
over an encoder from the layers below because such an encoder would have to be trained here
first (no weights are downloaded) and a small one trained on little text gives no better notion
of meaning than shared fragments; n-grams need no weights, are deterministic, and match
inflections (`parked` and `park` share `par`, `ark`) that BM25's whole words miss. Any function
from texts to unit vectors can replace it (`VectorMemory(embed=...)`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from fms_agent.llm import Backend

__all__ = [
    "SUMMARY_PROMPT",
    "BM25Memory",
    "BufferMemory",
    "HashedNgramEmbedder",
    "Memory",
    "SummaryMemory",
    "VectorMemory",
    "count_tokens",
    "murmurhash3_32",
    "tokenize",
]

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_M32 = 0xFFFFFFFF


def tokenize(text: str) -> list[str]:
    """Lower-cased words and numbers (hyphenated and apostrophe forms kept whole)."""
    return _WORD.findall(text.lower())


def count_tokens(text: str) -> int:
    """An approximate token count: the number of [tokenize][fms_agent.memory.tokenize] words.

    A BPE tokenizer gives about 1.3 tokens a word of English; pass its `len(encode(text))` as
    `count` to the memories for exact budgets.
    """
    return len(tokenize(text))


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


@runtime_checkable
class Memory(Protocol):
    """What every memory offers."""

    def remember(self, text: str) -> None:
        """Keep `text` (one turn or fact)."""
        ...

    def recall(self, query: str, k: int = 5) -> list[str]:
        """The `k` kept texts most likely to answer `query`, best first."""
        ...


def _check_k(k: int) -> None:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


class BufferMemory:
    """The most recent texts whose token counts sum to at most `max_tokens`.

    The newest text is always kept, even when it alone is over the budget.

    Args:
        max_tokens: the budget.
        count: tokens in a text ([count_tokens][fms_agent.memory.count_tokens] by default).
    """

    def __init__(self, max_tokens: int, count: Callable[[str], int] = count_tokens) -> None:
        _positive("max_tokens", max_tokens)
        self.max_tokens = max_tokens
        self.count = count
        self.items: list[str] = []
        self._sizes: list[int] = []

    @property
    def tokens(self) -> int:
        """Tokens held now."""
        return sum(self._sizes)

    def remember(self, text: str) -> None:
        """Append `text`, then evict the oldest texts until the budget holds."""
        self.add(text)
        self.evict()

    def add(self, text: str) -> None:
        """Append `text` without evicting."""
        self.items.append(text)
        self._sizes.append(self.count(text))

    def evict(self, budget: int | None = None) -> list[str]:
        """Drop the oldest texts until at most `budget` tokens (`max_tokens` by default) are
        held; returns them, oldest first."""
        budget = self.max_tokens if budget is None else budget
        gone: list[str] = []
        while len(self.items) > 1 and self.tokens > budget:
            gone.append(self.items.pop(0))
            self._sizes.pop(0)
        return gone

    def recall(self, query: str, k: int = 5) -> list[str]:
        """The `k` newest texts, newest first (a buffer does not read the query)."""
        _check_k(k)
        return self.items[::-1][:k]


SUMMARY_PROMPT = (
    "You keep the running summary of a conversation. Rewrite the summary so far together with "
    "the new lines into one updated summary of at most {max_tokens} words. Keep names, numbers, "
    "dates and anything the user asked to remember; drop small talk. Answer with the summary only."
)
"""The summariser's system prompt; `{max_tokens}` is the summary's budget."""


class SummaryMemory:
    """A token-budget buffer whose evicted texts are folded into a running summary.

    When the recent texts pass `max_tokens`, the oldest are evicted down to half the budget and
    sent, with the summary so far, to `backend` with [SUMMARY_PROMPT][fms_agent.memory.SUMMARY_PROMPT];
    its reply is the new summary. One model call per eviction, not per turn.

    Args:
        backend: the summariser.
        max_tokens: the budget of the recent texts.
        summary_tokens: the summary's budget, stated in the prompt (a model may exceed it).
        count: tokens in a text.
    """

    def __init__(
        self,
        backend: Backend,
        max_tokens: int,
        summary_tokens: int = 200,
        count: Callable[[str], int] = count_tokens,
    ) -> None:
        _positive("max_tokens", max_tokens)
        _positive("summary_tokens", summary_tokens)
        self.backend = backend
        self.summary_tokens = summary_tokens
        self.buffer = BufferMemory(max_tokens, count)
        self.summary = ""
        self.calls = 0

    def remember(self, text: str) -> None:
        """Keep `text`; fold the oldest recent texts into the summary when over budget."""
        self.buffer.add(text)
        if self.buffer.tokens > self.buffer.max_tokens:
            self.fold(self.buffer.evict(self.buffer.max_tokens // 2))

    def fold(self, lines: Sequence[str]) -> str:
        """Ask the back end for the summary of the summary so far plus `lines`."""
        prompt = SUMMARY_PROMPT.format(max_tokens=self.summary_tokens)
        user = f"Summary so far:\n{self.summary or '(empty)'}\n\nNew lines:\n" + "\n".join(lines)
        reply = self.backend.complete(
            [{"role": "system", "content": prompt}, {"role": "user", "content": user}]
        )
        self.calls += 1
        self.summary = (reply.content or "").strip()
        return self.summary

    def recall(self, query: str, k: int = 5) -> list[str]:
        """The summary (when there is one), then the newest texts: `k` in all."""
        _check_k(k)
        head = [self.summary] if self.summary else []
        return (head + self.buffer.recall(query, k))[:k]


class BM25Memory:
    """Every text kept, ranked by BM25 (see the module's docstring for the formula).

    Args:
        k1: term-frequency saturation.
        b: length normalisation (0: none, 1: full).
        idf: `"lucene"` ($\\log(1 + \\ldots)$, always positive) or `"okapi"` (with
            `rank_bm25`'s floor at `epsilon` times the mean idf).
        epsilon: the okapi floor's factor.
        tokenizer: text to terms.
    """

    def __init__(
        self,
        k1: float = 1.5,
        b: float = 0.75,
        idf: Literal["lucene", "okapi"] = "lucene",
        epsilon: float = 0.25,
        tokenizer: Callable[[str], list[str]] = tokenize,
    ) -> None:
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"need k1 >= 0 and 0 <= b <= 1, got k1={k1!r}, b={b!r}")
        if idf not in ("lucene", "okapi"):
            raise ValueError(f"idf must be 'lucene' or 'okapi', got {idf!r}")
        self.k1, self.b, self.idf_kind, self.epsilon = k1, b, idf, epsilon
        self.tokenizer = tokenizer
        self.texts: list[str] = []
        self._tf: list[Counter[str]] = []
        self._df: Counter[str] = Counter()
        self._len: list[int] = []

    def remember(self, text: str) -> None:
        """Index `text`."""
        terms = self.tokenizer(text)
        tf = Counter(terms)
        self.texts.append(text)
        self._tf.append(tf)
        self._df.update(tf.keys())
        self._len.append(len(terms))

    def idf(self) -> dict[str, float]:
        """The inverse document frequency of every indexed term."""
        n = len(self.texts)
        if self.idf_kind == "lucene":
            return {t: math.log1p((n - d + 0.5) / (d + 0.5)) for t, d in self._df.items()}
        raw = {t: math.log(n - d + 0.5) - math.log(d + 0.5) for t, d in self._df.items()}
        if not raw:
            return raw
        floor = self.epsilon * sum(raw.values()) / len(raw)
        return {t: (v if v >= 0 else floor) for t, v in raw.items()}

    def scores(self, query: str) -> NDArray[np.float64]:
        """The BM25 score of every kept text for `query` (a repeated query term counts again)."""
        out = np.zeros(len(self.texts))
        if not self.texts:
            return out
        idf = self.idf()
        lengths = np.asarray(self._len, dtype=np.float64)
        avgdl = lengths.mean() if lengths.mean() > 0 else 1.0
        norm = self.k1 * (1 - self.b + self.b * lengths / avgdl)
        for term in self.tokenizer(query):
            if term not in idf:
                continue
            f = np.array([tf.get(term, 0) for tf in self._tf], dtype=np.float64)
            out += idf[term] * f * (self.k1 + 1) / (f + norm)
        return out

    def recall(self, query: str, k: int = 5) -> list[str]:
        """The `k` best-scoring texts (ties: the newer first)."""
        _check_k(k)
        return _top(self.scores(query), self.texts, k)


def _top(scores: NDArray[np.float64], texts: Sequence[str], k: int) -> list[str]:
    # stable sort on (-score, -index): best first, and among equals the newest
    order = np.lexsort((-np.arange(len(texts)), -scores))
    return [texts[i] for i in order[:k]]


def _rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def murmurhash3_32(key: bytes, seed: int = 0) -> int:
    """MurmurHash3 (x86, 32-bit) of `key` as a signed 32-bit integer, as scikit-learn returns it.

    Four-byte little-endian blocks are mixed into the state (multiply, rotate, multiply, xor,
    rotate, multiply-add), the 1-3 tail bytes mixed once, and the length and a final avalanche
    (`fmix32`) spread every input bit over the output.
    """
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed & _M32
    n = len(key)
    body = n - n % 4
    for i in range(0, body, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (_rotl32((k * c1) & _M32, 15) * c2) & _M32
        h = (_rotl32(h ^ k, 13) * 5 + 0xE6546B64) & _M32
    tail = key[body:]
    if tail:
        k = int.from_bytes(tail, "little")
        h ^= (_rotl32((k * c1) & _M32, 15) * c2) & _M32
    h = _fmix32(h ^ n)
    return h - (1 << 32) if h >= 1 << 31 else h


_SPACES = re.compile(r"\s\s+")


def _char_wb_ngrams(text: str, lo: int, hi: int) -> list[str]:
    grams: list[str] = []
    for word in _SPACES.sub(" ", text.lower()).split():
        w = f" {word} "
        for n in range(lo, hi + 1):
            if len(w) <= n:  # a word shorter than n counts once, whole
                grams.append(w)
                break
            grams.extend(w[i : i + n] for i in range(len(w) - n + 1))
    return grams


class HashedNgramEmbedder:
    """Texts to L2-normalised signed counts of hashed character n-grams.

    Equal to `sklearn.feature_extraction.text.HashingVectorizer(analyzer="char_wb",
    ngram_range=ngram_range, n_features=n_features, alternate_sign=alternate_sign)`.

    Args:
        n_features: the embedding's dimension $D$ (buckets).
        ngram_range: the smallest and largest n.
        alternate_sign: give each n-gram the sign of its hash, so that collisions cancel in
            expectation instead of adding up.
    """

    def __init__(
        self,
        n_features: int = 2**12,
        ngram_range: tuple[int, int] = (3, 5),
        alternate_sign: bool = True,
    ) -> None:
        _positive("n_features", n_features)
        lo, hi = ngram_range
        if not 1 <= lo <= hi:
            raise ValueError(f"ngram_range must be (lo, hi) with 1 <= lo <= hi, got {ngram_range}")
        self.n_features, self.ngram_range, self.alternate_sign = (
            n_features,
            ngram_range,
            alternate_sign,
        )
        self._bucket = lru_cache(maxsize=2**16)(self._bucket_uncached)

    def _bucket_uncached(self, gram: str) -> tuple[int, float]:
        h = murmurhash3_32(gram.encode("utf-8"))
        # abs(INT32_MIN) overflows in scikit-learn's C code; it maps that one value this way
        index = (
            (2**31 - 1 - (self.n_features - 1)) % self.n_features
            if h == -(2**31)
            else abs(h) % self.n_features
        )
        sign = (1.0 if h >= 0 else -1.0) if self.alternate_sign else 1.0
        return index, sign

    def __call__(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """One row per text; a text with no n-gram is the zero vector."""
        out = np.zeros((len(texts), self.n_features))
        for row, text in enumerate(texts):
            for gram in _char_wb_ngrams(text, *self.ngram_range):
                index, sign = self._bucket(gram)
                out[row, index] += sign
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


class VectorMemory:
    """Every text kept as an embedding; recall by cosine similarity to the query's.

    Args:
        embed: texts to unit-norm rows ([HashedNgramEmbedder][fms_agent.memory.HashedNgramEmbedder]
            by default).
    """

    def __init__(self, embed: Callable[[Sequence[str]], NDArray[np.float64]] | None = None) -> None:
        self.embed = embed if embed is not None else HashedNgramEmbedder()
        self.texts: list[str] = []
        self._rows: list[NDArray[np.float64]] = []

    def remember(self, text: str) -> None:
        """Embed and keep `text`."""
        self.texts.append(text)
        self._rows.append(self.embed([text])[0])

    def similarities(self, query: str) -> NDArray[np.float64]:
        """Cosine similarity of the query to every kept text."""
        if not self.texts:
            return np.zeros(0)
        sims: NDArray[np.float64] = np.stack(self._rows) @ self.embed([query])[0]
        return sims

    def recall(self, query: str, k: int = 5) -> list[str]:
        """The `k` most similar texts (ties: the newer first)."""
        _check_k(k)
        return _top(self.similarities(query), self.texts, k)
