"""The audio front end against librosa, torch.stft and transformers' WhisperFeatureExtractor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fms_mm.audio import (
    AudioConfig,
    AudioEncoder,
    AudioInputError,
    log_mel_spectrogram,
    mel_filters,
    stft,
)


def _speechlike(sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A rising chirp with a 3 Hz amplitude envelope and a little noise, float32."""
    g = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    y = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    return (y + 0.02 * g.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize(
    ("sr", "n_fft", "n_mels", "kw"),
    [
        (16000, 400, 80, {}),
        (16000, 400, 128, {}),
        (22050, 2048, 128, {}),
        (8000, 256, 40, {"fmin": 50.0, "fmax": 3500.0}),
        (22050, 1024, 64, {"htk": True}),
        (22050, 1024, 64, {"norm": None}),
    ],
)
def test_mel_filters_equal_librosa_1e6(sr: int, n_fft: int, n_mels: int, kw: dict) -> None:  # type: ignore[type-arg]
    import librosa

    ours = mel_filters(sr, n_fft, n_mels, dtype=torch.float64, **kw).numpy()
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, dtype=np.float64, **kw)
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("n_fft", "hop", "length"), [(400, 160, 16000), (512, 128, 4321)])
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_stft_equals_torch_stft_1e5(n_fft: int, hop: int, length: int, pad_mode: str) -> None:
    x = torch.randn(2, length, generator=torch.Generator().manual_seed(0)) * 0.2
    ours = stft(x, n_fft, hop, pad_mode=pad_mode)  # type: ignore[arg-type]
    ref = torch.stft(
        x, n_fft, hop, window=torch.hann_window(n_fft), pad_mode=pad_mode, return_complex=True
    )
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_log_mel_equals_whisper_feature_extractor_1e4() -> None:
    """7.3 s of a speech-like signal, padded to Whisper's 30 s: (80, 3000) features within 1e-4
    of transformers' extractor (measured about 1e-5), for a batch of two lengths as well."""
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor()
    a, b = _speechlike(16000, 7.3), _speechlike(16000, 12.0, seed=1)
    ref = fe([a, b], sampling_rate=16000, return_tensors="np").input_features
    ours = torch.stack([log_mel_spectrogram(torch.from_numpy(y), 16000) for y in (a, b)])
    assert ours.shape == (2, 80, 3000)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4, rtol=0)
    batch = log_mel_spectrogram(torch.from_numpy(np.stack([a, a])), 16000)
    np.testing.assert_allclose(batch[1].numpy(), ref[0], atol=1e-4, rtol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_mel_equals_librosa_power_to_db_1e4(dtype: type) -> None:
    """4.1 s at 22.05 kHz: `power_to_db(melspectrogram(y), top_db=80)` within 1e-4 dB
    (measured 5e-5 in float32, 4e-7 in float64)."""
    import librosa

    y = _speechlike(22050, 4.1).astype(dtype)
    mel = librosa.feature.melspectrogram(y=y, sr=22050)
    ref = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80.0)
    ours = log_mel_spectrogram(torch.from_numpy(y), 22050, convention="librosa")
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4, rtol=0)


def test_bad_audio_is_named() -> None:
    with pytest.raises(AudioInputError, match="0 samples"):
        log_mel_spectrogram(torch.zeros(0), 16000)
    with pytest.raises(AudioInputError, match="sample_rate=22050"):
        log_mel_spectrogram(torch.zeros(1000), 22050)
    with pytest.raises(AudioInputError, match="peaks at 3"):
        log_mel_spectrogram(torch.full((1000,), 3.0), 16000)
    clipped = torch.sin(torch.linspace(0, 100, 8000)) * 2
    with pytest.raises(AudioInputError, match="clipped"):
        log_mel_spectrogram(clipped.clamp(-1, 1), 16000)
    with pytest.raises(AudioInputError, match="float tensor"):
        log_mel_spectrogram(torch.zeros(1000, dtype=torch.int16), 16000)
    with pytest.raises(AudioInputError, match="too short"):
        stft(torch.zeros(100), 400, 160)


@pytest.mark.parametrize(
    ("audio", "kwargs", "match"),
    [
        (torch.zeros(0, 1000), {}, r"batch of audio is empty, shape \(0, 1000\)"),
        (torch.zeros(2, 0), {}, "0 samples"),
        (torch.zeros(3, 2, 100), {}, r"got shape \(3, 2, 100\)"),
        (torch.tensor([0.0, float("nan"), 0.1]), {}, "NaN or infinite"),
        (torch.tensor([0.0, float("-inf"), 0.1]), {}, "NaN or infinite"),
        (
            torch.zeros(1000),
            {"sample_rate": 0},
            "sample_rate must be a positive number of samples a second, got 0",
        ),
        (torch.zeros(1000), {"sample_rate": -8000, "convention": "librosa"}, "got -8000"),
        (torch.zeros(1000), {"sample_rate": "16000"}, "got '16000'"),
        (torch.zeros(1000), {"sample_rate": 8000}, "sample_rate=8000; resample first"),
        (torch.zeros(1000), {"pad_to": -1}, "pad_to must be a non-negative int"),
        (torch.zeros(1000), {"filters": torch.zeros(80, 200)}, r"\(80, 201\), got \(80, 200\)"),
    ],
)
def test_bad_audio_arguments_are_named(audio: torch.Tensor, kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    kw = {"sample_rate": 16000, **kwargs}
    with pytest.raises(ValueError, match=match):
        log_mel_spectrogram(audio, **kw)


def test_clipped_row_of_a_batch_is_named_and_full_scale_speech_passes() -> None:
    """A clip whose peaks touch full scale a few times is fine; one flattened at full scale
    for over 1% of its samples is named with its row."""
    t = torch.linspace(0, 200, 16000)
    loud = torch.sin(t) * 0.5
    loud[::4000] = 1.0  # 4 samples at full scale: 0.025%
    log_mel_spectrogram(torch.stack([loud, loud]), 16000)
    clipped = (torch.sin(t) * 1.5).clamp(-1, 1)  # flat tops: about half the samples
    with pytest.raises(AudioInputError, match=r"clipped \(row 1 of the batch\): \d+\.\d% "):
        log_mel_spectrogram(torch.stack([loud, clipped]), 16000)
    pcm = torch.from_numpy((np.clip(np.sin(np.arange(8000.0)) * 2, -1, 1) * 32767).astype(np.int16))
    with pytest.raises(AudioInputError, match="clipped"):
        log_mel_spectrogram(pcm.float() / 32768, 16000)
    with pytest.raises(AudioInputError, match="peaks at 3277, expected samples in"):
        log_mel_spectrogram(pcm.float() / 10, 16000)  # int16 PCM not divided by 32768


def test_audio_encoder_halves_frames_and_round_trips(tmp_path: Path) -> None:
    enc = AudioEncoder(
        AudioConfig(n_mels=16, d_model=32, n_layers=1, n_heads=4, d_ff=64, num_labels=3)
    )
    x = torch.randn(2, 16, 21)
    assert enc(x).shape == (2, 11, 32)
    assert enc.logits(x).shape == (2, 3)
    enc.save_pretrained(tmp_path / "enc")
    back = AudioEncoder.from_pretrained(tmp_path / "enc")
    torch.testing.assert_close(back.logits(x), enc.logits(x), atol=0, rtol=0)
    with pytest.raises(AudioInputError, match=r"\(batch, 16, frames\)"):
        enc(torch.randn(2, 8, 21))
