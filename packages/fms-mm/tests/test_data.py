"""The data sets: digits split, scene captions and held-out combinations, spoken digits."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest

from fms_mm import data
from fms_mm.data import (
    DataError,
    Scene,
    Vocab,
    caption,
    held_out_pairs,
    load_digits,
    make_scenes,
    resample,
    spoken_digits,
)


def test_digits_split_is_stratified_disjoint_and_seeded() -> None:
    d = load_digits(test_fraction=0.25, seed=3)
    assert d.x_train.shape[1:] == (1, 8, 8)
    assert len(d.y_train) + len(d.y_test) == 1797
    assert d.x_train.min() >= 0.0
    assert d.x_train.max() <= 1.0
    counts = np.bincount(d.y_test, minlength=10) / np.bincount(
        np.concatenate([d.y_train, d.y_test]), minlength=10
    )
    np.testing.assert_allclose(counts, 0.25, atol=0.01)
    again = load_digits(test_fraction=0.25, seed=3)
    np.testing.assert_array_equal(d.x_test, again.x_test)
    assert not np.array_equal(load_digits(test_fraction=0.25, seed=4).x_test, d.x_test)


def test_digits_without_scikit_learn_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_sklearn(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(DataError, match=r"fms-mm\[data\]"):
        load_digits()


def test_captions_are_exact() -> None:
    assert caption(Scene("circle", "red", "small", "left", 1)) == "one small red circle on the left"
    assert caption(Scene("cross", "blue", "large", "right", 3)) == (
        "three large blue crosses on the right"
    )
    with pytest.raises(DataError, match="colour must be one of"):
        Scene("circle", "purple", "small", "left", 1)


def test_held_out_pairs_never_in_train_and_each_attribute_still_seen() -> None:
    held = held_out_pairs()
    train = make_scenes(400, seed=0, split="train")
    test = make_scenes(100, seed=1, split="test")
    train_pairs = {(s.colour, s.shape) for s in train.scenes}
    assert not train_pairs & held
    assert {(s.colour, s.shape) for s in test.scenes} <= held
    assert {c for c, _ in train_pairs} == set(data.COLOURS)
    assert {s for _, s in train_pairs} == set(data.SHAPES)


def test_scenes_are_seeded_and_draw_what_the_caption_says() -> None:
    a, b = make_scenes(20, seed=5), make_scenes(20, seed=5)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.captions == b.captions
    clean = make_scenes(60, seed=2, noise=0.0)
    for img, scene in zip(clean.images, clean.scenes, strict=True):
        lit = img.max(axis=0) > 0.3  # shape pixels; the background is 0.1
        cols = np.flatnonzero(lit.any(axis=0))
        half = "left" if cols.max() < 16 else "right"
        assert cols.min() >= 16 or half == "left"
        assert half == scene.position
        colour = np.array(data.COLOURS[scene.colour])
        mean = img[:, lit].mean(axis=1)
        assert np.argmax(mean) == np.argmax(colour)
        # components of the lit mask = the count (4-connected flood fill)
        seen = np.zeros_like(lit)
        components = 0
        for y, x in zip(*np.nonzero(lit), strict=True):
            if seen[y, x]:
                continue
            components += 1
            stack = [(y, x)]
            while stack:
                cy, cx = stack.pop()
                if 0 <= cy < 32 and 0 <= cx < 32 and lit[cy, cx] and not seen[cy, cx]:
                    seen[cy, cx] = True
                    stack += [(cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)]
        assert components == scene.count, caption(scene)


def test_vocab_round_trips_and_names_a_caption_longer_than_the_context() -> None:
    vocab = Vocab.for_scenes()
    text = "two large yellow squares on the right"
    ids, mask = vocab.encode([text], length=10)
    assert ids[0, 0] == vocab.bos_id
    assert int(mask.sum()) == 9
    assert vocab.decode(ids[0].tolist()) == text
    with pytest.raises(DataError, match="longer than the context length=5"):
        vocab.encode([text], length=5)


def test_resample_keeps_a_tone_and_matches_scipy() -> None:
    from scipy.signal import resample as sp_resample

    t = np.arange(2205) / 22050
    x = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    ours = resample(x, 22050, 16000)
    assert len(ours) == 1600
    np.testing.assert_allclose(ours, sp_resample(x.astype(np.float64), 1600), atol=1e-5)


def test_spoken_digits_cached_split_by_voice_and_noisy(tmp_path: Path) -> None:
    voices = ["en-us+m1", "en-gb+f2"]
    kw = {"voices": voices, "words": ("zero", "seven"), "speeds": (175,), "pitches": (50,)}
    first = spoken_digits(**kw, cache_dir=tmp_path, snr_db=None)  # type: ignore[arg-type]
    files = list(tmp_path.iterdir())
    assert len(files) == 1
    assert files[0].suffix == ".npz"
    assert first.labels.tolist() == [0, 1, 0, 1]
    assert all(len(a) > 1600 for a in first.audio)  # more than 0.1 s of speech at 16 kHz
    again = spoken_digits(**kw, cache_dir=tmp_path, snr_db=None)  # type: ignore[arg-type]
    for a, b in zip(first.audio, again.audio, strict=True):
        np.testing.assert_array_equal(a, b)
    noisy = spoken_digits(**kw, cache_dir=tmp_path, snr_db=10.0, seed=1)  # type: ignore[arg-type]
    noise = noisy.audio[0] - first.audio[0]
    snr = 10 * np.log10(np.mean(first.audio[0] ** 2) / np.mean(noise**2))
    assert 8.0 < snr < 12.0
    train, test = first.split(["en-gb+f2"])
    assert set(train.voices) == {"en-us+m1"}
    assert set(test.voices) == {"en-gb+f2"}
    assert first.padded(800).shape == (4, 800)
    with pytest.raises(DataError, match="not in this data set"):
        first.split(["en-us+f9"])


def test_spoken_digits_without_espeak_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data.shutil, "which", lambda _name: None)
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        spoken_digits(voices=["en-us"], words=("one",))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros(100, np.float32), 0, 16000), "rate_in must be a positive int of Hz, got 0"),
        ((np.zeros(100, np.float32), 22050, 16000.0), "rate_out must be a positive int"),
        ((np.zeros(0, np.float32), 22050, 16000), r"non-empty 1-d waveform, got shape \(0,\)"),
        ((np.zeros((2, 100), np.float32), 22050, 16000), r"got shape \(2, 100\)"),
    ],
)
def test_resample_names_a_bad_rate_or_waveform(args: tuple, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(DataError, match=match):
        resample(*args)


def test_spoken_digits_names_a_bad_sample_rate() -> None:
    with pytest.raises(DataError, match="sample_rate must be a positive int of Hz, got 0"):
        spoken_digits(voices=["en-us"], words=("one",), sample_rate=0)
