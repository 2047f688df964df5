"""The spoken-digit recipe: augmentation, the validation split that keeps the test voices unseen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fms_ml.metrics import confusion_matrix
from fms_mm.train import (
    AUDIO_SAMPLES,
    AudioAugment,
    TrainSettings,
    _augmented_batch,
    _speed_variants,
    train_audio,
)


def test_speed_variants_scale_length_and_batches_stay_in_range() -> None:
    g = np.random.default_rng(0)
    clip = (0.5 * np.sin(np.arange(8000) * 0.05)).astype(np.float32)
    (versions,) = _speed_variants([clip], (0.9, 1.0, 1.25), 16000)
    assert [len(v) for v in versions] == [8889, 8000, 6400]  # 8000 / r samples
    assert versions[1] is clip
    long = np.full(20000, 0.3, dtype=np.float32)  # longer than the window: a random cut
    aug = AudioAugment(gain_db=(6.0, 6.0), snr_db=(60.0, 60.0))
    batch = _augmented_batch([versions, [long]], np.array([0, 0, 1, 0]), g, aug)
    assert batch.shape == (4, AUDIO_SAMPLES)
    assert batch.dtype == np.float32
    assert float(np.abs(batch).max()) <= 0.99
    assert float(np.abs(batch[0]).max()) == pytest.approx(0.95, abs=0.01)  # gain capped at 0.95
    plain = AudioAugment(shift=False, gain_db=(0.0, 0.0), snr_db=(80.0, 80.0))
    fixed = _augmented_batch([[clip]], np.array([0]), g, plain)
    np.testing.assert_allclose(fixed[0, :8000], clip, atol=1e-3)  # at offset 0, unchanged
    assert np.abs(fixed[0, 8000:]).max() < 1e-3  # and only faint noise after it


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"speeds": ()}, "speeds must be in"),
        ({"speeds": (0.2,)}, r"got \(0.2,\)"),
        ({"gain_db": (6.0, -6.0)}, r"gain_db must be \(low, high\)"),
        ({"time_masks": -1}, "time_masks must be >= 0"),
    ],
)
def test_bad_augmentation_is_named(kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=match):
        AudioAugment(**kwargs)


def test_confusion_matrix_counts_true_by_predicted() -> None:
    m = confusion_matrix(
        np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), labels=np.arange(3)
    ).tolist()
    assert m == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_validation_holds_out_m4_f4_and_reports_no_test_accuracy(tmp_path: Path) -> None:
    tiny = TrainSettings(steps=2, batch_size=8)
    voices = ["en-us+m1", "en-us+m4", "en-us+f5"]
    _, metrics = train_audio(tiny, voices=voices, cache_dir=tmp_path, validation=True)
    assert metrics["validation_voices"] == ["en-us+m4"]
    assert not any(k.startswith("test") for k in metrics)
    assert metrics["n_train"] == metrics["n_validation"] == 40
    assert np.sum(metrics["validation_confusion"]) == 40
    _, tested = train_audio(tiny, voices=voices, cache_dir=tmp_path)
    assert tested["test_voices"] == ["en-us+f5"]
    assert tested["n_train"] == 80
    with pytest.raises(ValueError, match="needs training voices with the variants"):
        train_audio(tiny, voices=["en-us+m1", "en-us+f5"], cache_dir=tmp_path, validation=True)
