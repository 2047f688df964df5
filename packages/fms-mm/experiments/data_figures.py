"""Figures of the layer's data, no training: scenes with their captions, and spoken-digit spectrograms.

uv run python packages/fms-mm/experiments/data_figures.py
# writes docs/figures/fms-mm/scenes.png and docs/figures/fms-mm/spectrograms.png
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from fms_mm.audio import log_mel_spectrogram
from fms_mm.data import make_scenes, spoken_digits

FIGURES = Path(__file__).resolve().parents[3] / "docs" / "figures" / "fms-mm"


def scenes() -> None:
    train = make_scenes(6, seed=0, split="train")
    test = make_scenes(2, seed=0, split="test")
    fig, axes = plt.subplots(1, 8, figsize=(13, 2.4), dpi=100)
    for ax, img, text, split in zip(
        axes,
        [*train.images, *test.images],
        [*train.captions, *test.captions],
        ["train"] * 6 + ["held out"] * 2,
        strict=True,
    ):
        ax.imshow(img.transpose(1, 2, 0))
        words = text.split()
        ax.set_title(f"{' '.join(words[:3])}\n{' '.join(words[3:])}\n({split})", fontsize=7)
        ax.axis("off")
    fig.savefig(FIGURES / "scenes.png", bbox_inches="tight")


def spectrograms() -> None:
    voices = ["en-us+m1", "en-gb+f2", "en-gb-scotland+m3"]
    data = spoken_digits(voices=voices, words=("seven",), speeds=(160,), pitches=(50,), snr_db=20)
    fig, axes = plt.subplots(2, 3, figsize=(11, 4.6), dpi=100)
    for i, (audio, voice) in enumerate(zip(data.audio, data.voices, strict=True)):
        x = torch.from_numpy(audio)
        whisper = log_mel_spectrogram(x, 16000, convention="whisper", pad_to=0)
        rosa = log_mel_spectrogram(x, 16000, convention="librosa", n_fft=512, hop_length=160)
        axes[0, i].imshow(whisper.numpy(), origin="lower", aspect="auto", cmap="magma")
        axes[0, i].set_title(f'"seven", {voice}: Whisper log10 (80 mels)', fontsize=8)
        axes[1, i].imshow(rosa.numpy(), origin="lower", aspect="auto", cmap="magma")
        axes[1, i].set_title("librosa power_to_db (128 mels)", fontsize=8)
        for a in axes[:, i]:
            a.set_xlabel("frame (10 ms)", fontsize=7)
            a.set_ylabel("mel band", fontsize=7)
            a.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(FIGURES / "spectrograms.png", bbox_inches="tight")


if __name__ == "__main__":
    FIGURES.mkdir(parents=True, exist_ok=True)
    scenes()
    spectrograms()
