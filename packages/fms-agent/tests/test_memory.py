"""`fms_agent.memory`: BM25 equals rank_bm25's BM25Okapi (1e-10), the hashed n-gram embedding
equals scikit-learn's HashingVectorizer(analyzer="char_wb") (1e-12) and MurmurHash3 equals
scikit-learn's bit for bit; the buffer keeps its token budget; the summary memory folds evicted
turns through a (scripted) model call."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fms_agent.llm import AssistantMessage, Message, ScriptedBackend
from fms_agent.memory import (
    BM25Memory,
    BufferMemory,
    HashedNgramEmbedder,
    Memory,
    SummaryMemory,
    VectorMemory,
    count_tokens,
    murmurhash3_32,
    tokenize,
)

CORPUS = [
    "The wifi password is tulip-42, please remember it.",
    "I parked the car on level four of the garage.",
    "We talked about the weather and the weather again.",
    "My sister Alice lives in Lisbon.",
    "The weather is nice today, the sun is out.",
    "Remember that the dentist appointment is on Tuesday.",
    "the the the the weather",
]
QUERIES = ["what is the wifi password", "where did I park the car", "weather today", "Alice", "zzz"]


def test_bm25_okapi_equals_rank_bm25() -> None:
    """Scores equal rank_bm25.BM25Okapi (negative idf floored at epsilon * mean idf) within 1e-10."""
    from rank_bm25 import BM25Okapi

    for k1, b in ((1.5, 0.75), (1.2, 0.3), (2.0, 1.0)):
        ours = BM25Memory(k1=k1, b=b, idf="okapi")
        for text in CORPUS:
            ours.remember(text)
        ref = BM25Okapi([tokenize(t) for t in CORPUS], k1=k1, b=b, epsilon=0.25)
        for q in QUERIES:
            np.testing.assert_allclose(ours.scores(q), ref.get_scores(tokenize(q)), atol=1e-10)


def test_bm25_lucene_idf_is_positive_and_ranks_the_fact_first() -> None:
    m = BM25Memory()
    for text in CORPUS:
        m.remember(text)
    assert min(m.idf().values()) > 0  # "the" is in most documents and still does not subtract
    assert m.recall("what is the wifi password", k=1) == [CORPUS[0]]
    assert m.recall("Alice", k=1) == [CORPUS[3]]


def test_murmurhash3_equals_scikit_learn() -> None:
    from sklearn.utils import murmurhash3_32 as ref

    keys = [
        b"",
        b"a",
        b"ab",
        b"abc",
        b"abcd",
        b"abcde",
        "caf\u00e9 \u00fc".encode(),
        bytes(range(256)),
    ]
    for key in keys:
        for seed in (0, 1, 2**31 + 7):
            assert murmurhash3_32(key, seed) == ref(key, seed=seed, positive=False)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 2**32 - 1))
def test_murmurhash3_equals_scikit_learn_on_random_bytes(key: bytes, seed: int) -> None:
    from sklearn.utils import murmurhash3_32 as ref

    assert murmurhash3_32(key, seed) == ref(key, seed=seed, positive=False)


@pytest.mark.parametrize(
    ("n_features", "ngram_range", "sign"),
    [(2**12, (3, 5), True), (97, (1, 3), False), (2**10, (4, 4), True)],
)
def test_hashed_ngrams_equal_hashing_vectorizer(
    n_features: int, ngram_range: tuple[int, int], sign: bool
) -> None:
    """Rows equal HashingVectorizer(analyzer="char_wb", norm="l2") within 1e-12."""
    from sklearn.feature_extraction.text import HashingVectorizer

    texts = [*CORPUS, "a I", "", "Straße  naïve\tcafé", "x"]
    ref = (
        HashingVectorizer(
            analyzer="char_wb", ngram_range=ngram_range, n_features=n_features, alternate_sign=sign
        )
        .transform(texts)
        .toarray()
    )
    ours = HashedNgramEmbedder(n_features, ngram_range, sign)(texts)
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_vector_memory_matches_inflections_bm25_misses() -> None:
    """ "park" shares n-grams with "parked"; BM25's whole words do not match."""
    v, b = VectorMemory(), BM25Memory()
    for text in CORPUS:
        v.remember(text)
        b.remember(text)
    query = "usual parking spot"
    assert v.recall(query, k=1) == [CORPUS[1]]
    assert b.scores(query)[1] == 0  # no word in common: BM25 cannot rank it
    assert CORPUS[1] not in b.recall(query, k=1)


def test_buffer_keeps_the_newest_texts_within_budget() -> None:
    m = BufferMemory(max_tokens=10)
    for i in range(20):
        m.remember(f"turn {i} has four")  # 4 tokens
    assert m.tokens <= 10
    assert m.items == ["turn 18 has four", "turn 19 has four"]
    assert m.recall("anything", k=5) == ["turn 19 has four", "turn 18 has four"]
    m.remember("one very long text " * 5)  # alone over budget: kept, the rest evicted
    assert m.items == ["one very long text " * 5]


def test_summary_memory_folds_evicted_turns_through_the_backend() -> None:
    seen: list[str] = []

    def summarise(messages: list[Message]) -> AssistantMessage:
        seen.append(messages[-1]["content"])
        lines = messages[-1]["content"].replace(" | ", "\n").splitlines()
        return AssistantMessage(" | ".join(line for line in lines if "code is" in line))

    m = SummaryMemory(ScriptedBackend([summarise] * 10), max_tokens=12, summary_tokens=50)
    m.remember("the door code is 4471")  # 5 tokens
    for i in range(6):
        m.remember(f"small talk {i}")  # 3 tokens
    assert m.calls >= 1
    assert "4471" in m.summary
    assert "Summary so far:\n(empty)" in seen[0]
    assert m.recall("door code", k=5)[0] == m.summary
    assert m.buffer.tokens <= 12
    assert len(m.recall("door code", k=2)) == 2


def test_all_memories_share_the_protocol_and_check_k() -> None:
    mems: list[object] = [
        BufferMemory(5),
        SummaryMemory(ScriptedBackend([]), 5),
        BM25Memory(),
        VectorMemory(),
    ]
    for m in mems:
        assert isinstance(m, Memory)
        with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
            m.recall("q", k=0)  # type: ignore[attr-defined]
        assert m.recall("q") == []  # type: ignore[attr-defined]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="max_tokens must be > 0, got 0"):
        BufferMemory(0)
    with pytest.raises(ValueError, match="idf must be 'lucene' or 'okapi', got 'bm11'"):
        BM25Memory(idf="bm11")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ngram_range"):
        HashedNgramEmbedder(ngram_range=(3, 2))
    assert count_tokens("Hello, world: tulip-42!") == 3
