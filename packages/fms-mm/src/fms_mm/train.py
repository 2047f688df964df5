"""Training recipes for the four models on the package's own data, and their evaluations.

Each `train_*` function seeds everything (fms-dl's `seed_everything`), builds its data set, trains
with fms-dl's AdamW under a warm-up + cosine schedule, and returns the model and its metrics on
held-out data; `evaluate` reloads a saved model directory and measures it again. The CLI
(`fms-mm train ...`, `fms-mm eval ...`) and the experiment scripts call these.

| task | data | held out | metric |
|---|---|---|---|
| `vit` | scikit-learn digits | a stratified 25% | test accuracy |
| `clip` | procedural scenes | colour-shape pairs never seen together | zero-shot accuracy, recall@1/5 |
| `audio` | espeak-ng spoken digits | voices never heard | test accuracy |
| `vlm` | scenes, captioned by a frozen fms-llm decoder | new scenes; held-out pairs | exact-caption accuracy |
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fms_dl.torch import AdamW, cosine_with_warmup, seed_everything, set_lr
from fms_llm.models import GPT, GPTConfig
from fms_ml.metrics import confusion_matrix
from fms_mm.audio import AudioConfig, AudioEncoder, log_mel_spectrogram
from fms_mm.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig, zero_shot_classifier
from fms_mm.data import (
    COLOURS,
    SHAPES,
    SceneSet,
    Vocab,
    all_scenes,
    caption,
    load_digits,
    make_scenes,
    resample,
    spoken_digits,
)
from fms_mm.vision import ViT, ViTConfig
from fms_mm.vlm import VLM

__all__ = [
    "AudioAugment",
    "TrainSettings",
    "audio_digits_config",
    "audio_features",
    "clip_metrics",
    "evaluate",
    "train_audio",
    "train_clip",
    "train_vit",
    "train_vlm",
]

CONTEXT = 12
"""Caption context in tokens: `<bos>`, at most seven words, `<eos>`, with room to spare."""


@dataclass
class TrainSettings:
    """What every recipe shares.

    Attributes:
        steps: Optimiser steps.
        batch_size: Examples a step.
        lr: Peak learning rate (after a linear warm-up over 5% of the steps, cosine to 0).
        weight_decay: AdamW's decoupled weight decay.
        seed: Seeds the data, the initialisation and the batches.
        device: `"cpu"`, `"cuda"` or `None` for CUDA when present.
    """

    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0
    device: str | None = "cpu"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainSettings.{name} must be a positive int, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainSettings.lr must be > 0, got {self.lr!r}")


def _device(settings: TrainSettings) -> torch.device:
    if settings.device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(settings.device)


def _fit(
    model: nn.Module,
    settings: TrainSettings,
    loss_of: Callable[[Tensor], Tensor],
    n: int,
    after_step: Callable[[], None] | None = None,
) -> list[float]:
    """The shared loop: random batches of indices into `n` examples, AdamW, warm-up + cosine."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    gen = torch.Generator().manual_seed(settings.seed)
    warmup = max(1, settings.steps // 20)
    losses = []
    model.train()
    for step in range(settings.steps):
        set_lr(
            opt,
            cosine_with_warmup(
                step, max_lr=settings.lr, warmup_steps=warmup, total_steps=settings.steps
            ),
        )
        idx = torch.randint(0, n, (min(settings.batch_size, n),), generator=gen)
        loss = loss_of(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        if after_step is not None:
            after_step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def _batched(fn: Callable[[Tensor], Tensor], x: Tensor, size: int = 256) -> Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i : i + size]) for i in range(0, len(x), size)])


# -- ViT on digits ---------------------------------------------------------------------------


def digits_vit_config(
    patch_size: int = 4,
    hidden_size: int = 64,
    num_hidden_layers: int = 4,
    dropout: float = 0.1,
    initializer_range: float = 0.1,
) -> ViTConfig:
    """The digits ViT: `patch_size` patches of the 8x8 image (4: 4 tokens + class), width
    `hidden_size` with `hidden_size / 16` heads of 16 and an MLP of twice the width,
    `num_hidden_layers` blocks, weights drawn with standard deviation `initializer_range`.

    The defaults are what `experiments/vit_search.py` chose on a validation split (1,500 steps
    each): the initialisation mattered most (transformers' 0.02 learns slowly at this size:
    90.3% validation accuracy against 94.8% at 0.1, and 68.8% at 0.4), then 4x4 patches (95.9%)
    over 2x2 ones (94.8%)."""
    return ViTConfig(
        image_size=8,
        patch_size=patch_size,
        num_channels=1,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=max(1, hidden_size // 16),
        intermediate_size=2 * hidden_size,
        hidden_dropout_prob=dropout,
        num_labels=10,
        initializer_range=initializer_range,
    )


def random_shifts(x: Tensor, max_shift: int, gen: torch.Generator) -> Tensor:
    r"""Each image of `(batch, C, H, W)` moved by its own random offset of up to `max_shift`
    pixels in each direction, the uncovered border filled with zeros (the digits' background).

    A crop of the zero-padded image: $x'_{c,i,j} = \tilde x_{c,\, i + s + d_y,\, j + s + d_x}$
    with $\tilde x$ padded by $s$ = `max_shift` and $d_y, d_x$ uniform on $\{-s, ..., s\}$.
    """
    if max_shift == 0:
        return x
    b, _, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))
    dy, dx = torch.randint(0, 2 * s + 1, (2, b, 1), generator=gen).to(x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, :, None]  # (b, h, 1)
    cols = (dx + torch.arange(w, device=x.device))[:, None, :]  # (b, 1, w)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def train_vit(
    settings: TrainSettings,
    config: ViTConfig | None = None,
    label_smoothing: float = 0.1,
    max_shift: int = 1,
    validation: float = 0.0,
) -> tuple[ViT, dict[str, Any]]:
    """A ViT classifier on scikit-learn's digits (split seeded by `settings.seed`).

    Each training image is moved by its own random shift of up to `max_shift` pixels (see
    `random_shifts`); the loss is cross-entropy with `label_smoothing`; AdamW with decoupled
    `settings.weight_decay` under a linear warm-up (5% of the steps) and a cosine to 0. With
    `validation` > 0 that fraction of each class of the training split is held out of training
    and its accuracy reported too (for choosing hyper-parameters without the test set).
    Returns the model and its test accuracy.
    """
    if not 0.0 <= validation < 1.0:
        raise ValueError(f"validation must be in [0, 1), got {validation!r}")
    if not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift must be an int >= 0, got {max_shift!r}")
    seed_everything(settings.seed)
    dev = _device(settings)
    data = load_digits(seed=settings.seed)
    x_np, y_np = data.x_train, data.y_train
    val_mask = np.zeros(len(y_np), dtype=bool)
    if validation:
        rng = np.random.default_rng(settings.seed + 7)
        for k in range(10):
            idx = rng.permutation(np.flatnonzero(y_np == k))
            val_mask[idx[: round(validation * len(idx))]] = True
    x = torch.from_numpy(x_np[~val_mask]).to(dev)
    y = torch.from_numpy(y_np[~val_mask]).to(dev)
    model = ViT(config or digits_vit_config()).to(dev)
    gen = torch.Generator().manual_seed(settings.seed + 1)

    def loss_of(idx: Tensor) -> Tensor:
        xb = random_shifts(x[idx.to(dev)], max_shift, gen)
        return F.cross_entropy(model.logits(xb), y[idx.to(dev)], label_smoothing=label_smoothing)

    losses = _fit(model, settings, loss_of, len(y))
    metrics: dict[str, Any] = {
        "test_accuracy": vit_accuracy(model, data.x_test, data.y_test),
        "loss": losses[-1],
    }
    if validation:
        metrics["validation_accuracy"] = vit_accuracy(model, x_np[val_mask], y_np[val_mask])
    return model, metrics


def vit_accuracy(model: ViT, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of `model.logits` on `(n, C, H, W)` images `x` with labels `y`."""
    dev = next(model.parameters()).device
    pred = _batched(model.logits, torch.from_numpy(x).to(dev)).argmax(-1).cpu().numpy()
    return float((pred == y).mean())


# -- CLIP on scenes --------------------------------------------------------------------------


def scenes_clip_config(vocab_size: int) -> CLIPConfig:
    """The scenes CLIP: 4x4 patches of 32x32 images, both towers width 64 with 3 blocks."""
    return CLIPConfig(
        CLIPTextConfig(
            vocab_size=vocab_size,
            max_position_embeddings=CONTEXT,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            eos_token_id=Vocab.eos_id,
            bos_token_id=Vocab.bos_id,
            pad_token_id=Vocab.pad_id,
        ),
        CLIPVisionConfig(
            image_size=32,
            patch_size=4,
            num_channels=3,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
        ),
        projection_dim=64,
    )


def train_clip(
    settings: TrainSettings, n_train: int = 6000, n_test: int = 1000
) -> tuple[CLIP, dict[str, Any]]:
    """CLIP on `n_train` scenes whose colour-shape pairs exclude the held-out ones; metrics on
    `n_test` scenes of only held-out pairs (see `clip_metrics`)."""
    seed_everything(settings.seed)
    dev = _device(settings)
    vocab = Vocab.for_scenes()
    train = make_scenes(n_train, seed=settings.seed, split="train")
    ids, mask = (torch.from_numpy(a).to(dev) for a in vocab.encode(train.captions, CONTEXT))
    images = torch.from_numpy(train.images).to(dev)
    model = CLIP(scenes_clip_config(len(vocab))).to(dev)

    def loss_of(idx: Tensor) -> Tensor:
        idx = idx.to(dev)
        # one image a distinct caption: duplicates in a batch would be false negatives
        _, first = np.unique(ids[idx].cpu().numpy(), axis=0, return_index=True)
        idx = idx[torch.from_numpy(np.sort(first)).to(dev)]
        out = model(images[idx], ids[idx], mask[idx], return_loss=True)
        loss: Tensor = out.loss
        return loss

    losses = _fit(model, settings, loss_of, len(images), after_step=model.clamp_logit_scale)
    test = make_scenes(n_test, seed=settings.seed + 10_000, split="test")
    return model, {**clip_metrics(model, test, vocab), "loss": losses[-1]}


def _class_prompts(vocab: Vocab, dev: torch.device) -> tuple[list[Tensor], list[Tensor]]:
    """For each of the 16 colour-shape classes, every caption that names it (12 prompts)."""
    prompts, masks = [], []
    for colour in COLOURS:
        for shape in SHAPES:
            texts = [caption(s) for s in all_scenes() if (s.colour, s.shape) == (colour, shape)]
            ids, mask = vocab.encode(texts, CONTEXT)
            prompts.append(torch.from_numpy(ids).to(dev))
            masks.append(torch.from_numpy(mask).to(dev))
    return prompts, masks


def clip_metrics(model: CLIP, scenes: SceneSet, vocab: Vocab) -> dict[str, float]:
    """Zero-shot colour-shape accuracy (16 classes, prompt-ensembled captions, chance 1/16) and
    retrieval recall@1/@5 both ways on `scenes`: image to caption ranks all 384 captions for each
    image (a hit is its exact caption); caption to image ranks the images of `scenes` for each
    distinct caption among them (a hit is an image with exactly that caption)."""
    dev = next(model.parameters()).device
    images = torch.from_numpy(scenes.images).to(dev)
    prompts, masks = _class_prompts(vocab, dev)
    classifier = zero_shot_classifier(model, prompts, masks)
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    truth = np.array([pairs.index((s.colour, s.shape)) for s in scenes.scenes])
    pred = _batched(classifier, images).argmax(-1).cpu().numpy()
    texts = [caption(s) for s in all_scenes()]
    ids, mask = (torch.from_numpy(a).to(dev) for a in vocab.encode(texts, CONTEXT))
    with torch.no_grad():
        t = F.normalize(model.text_features(ids, mask), dim=-1)
        u = F.normalize(_batched(model.image_features, images), dim=-1)
    sims = (u @ t.T).cpu()
    rank = sims.argsort(dim=-1, descending=True).numpy()
    target = np.array([texts.index(c) for c in scenes.captions])
    hits = rank == target[:, None]
    present = sorted(set(target.tolist()))
    by_caption = sims[:, present].T.argsort(dim=-1, descending=True)[:, :5].numpy()  # (q, 5)
    found = target[by_caption] == np.array(present)[:, None]
    return {
        "zero_shot_accuracy": float((pred == truth).mean()),
        "chance": 1 / len(pairs),
        "recall_at_1": float(hits[:, :1].any(1).mean()),
        "recall_at_5": float(hits[:, :5].any(1).mean()),
        "text_recall_at_1": float(found[:, :1].any(1).mean()),
        "text_recall_at_5": float(found[:, :5].any(1).mean()),
    }


# -- audio encoder on spoken digits ----------------------------------------------------------

TEST_VOICES_PER_ACCENT = ("m5", "f5")
"""The variants held out in every accent: their 12 voices are never heard in training."""
VALIDATION_VOICES_PER_ACCENT = ("m4", "f4")
"""The variants `train_audio(validation=True)` holds out of training to tune the recipe on."""
AUDIO_SAMPLES = 16000  # one second at 16 kHz


def audio_features(audio: np.ndarray) -> Tensor:
    """Whisper-convention log-mel of `(n, samples)` 16 kHz audio, 40 mel bands: `(n, 40, 100)`."""
    return log_mel_spectrogram(
        torch.from_numpy(audio), 16000, convention="whisper", n_mels=40, pad_to=AUDIO_SAMPLES
    )


@dataclass
class AudioAugment:
    r"""Waveform and spectrogram augmentation for [`train_audio`][fms_mm.train.train_audio],
    drawn afresh for every clip of every batch.

    Attributes:
        speeds: Speed factors $r$: each training clip is also resampled (Fourier method) to
            $1/r$ of its length, which plays it $r$ times faster and scales its pitch and
            formants by $r$, much as a shorter or longer vocal tract would.
        gain_db: Range of a uniform gain in dB (capped so the peak stays below 0.95).
        snr_db: Range of the signal-to-noise ratio of extra white noise, in dB.
        shift: Place each clip at a uniform offset in the one-second window (else at 0).
        freq_masks: Bands of up to `freq_width` mel bins zeroed (SpecAugment), per clip.
        freq_width: Widest frequency mask in mel bins.
        time_masks: Spans of up to `time_width` frames zeroed, per clip.
        time_width: Widest time mask in frames (10 ms each).
    """

    speeds: tuple[float, ...] = (0.88, 0.94, 1.0, 1.06, 1.12)
    gain_db: tuple[float, float] = (-12.0, 6.0)
    snr_db: tuple[float, float] = (15.0, 40.0)
    shift: bool = True
    freq_masks: int = 2
    freq_width: int = 5
    time_masks: int = 2
    time_width: int = 8

    def __post_init__(self) -> None:
        if not self.speeds or any(not 0.5 <= r <= 2.0 for r in self.speeds):
            raise ValueError(f"AudioAugment.speeds must be in [0.5, 2], got {self.speeds!r}")
        for name in ("gain_db", "snr_db"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"AudioAugment.{name} must be (low, high), got {(lo, hi)!r}")
        for name in ("freq_masks", "freq_width", "time_masks", "time_width"):
            if getattr(self, name) < 0:
                raise ValueError(f"AudioAugment.{name} must be >= 0, got {getattr(self, name)}")


def audio_digits_config() -> AudioConfig:
    """The spoken-digit encoder: 40 mel bands, width 64, 3 blocks of 4 heads, 10 classes."""
    return AudioConfig(
        n_mels=40, d_model=64, n_layers=3, n_heads=4, d_ff=128, num_labels=10, dropout=0.1
    )


def _speed_variants(
    clips: list[np.ndarray], speeds: tuple[float, ...], rate: int
) -> list[list[np.ndarray]]:
    """Every clip at every speed: resampled to `rate / r` and played back at `rate`."""
    return [[a if r == 1.0 else resample(a, rate, round(rate / r)) for r in speeds] for a in clips]


def _augmented_batch(
    variants: list[list[np.ndarray]], idx: np.ndarray, rng: np.random.Generator, aug: AudioAugment
) -> np.ndarray:
    """`(len(idx), AUDIO_SAMPLES)` float32: a random speed, window offset, gain and noise each."""
    out = np.zeros((len(idx), AUDIO_SAMPLES), dtype=np.float32)
    for row, i in enumerate(idx):
        versions = variants[int(i)]
        clip = versions[int(rng.integers(len(versions)))]
        if len(clip) > AUDIO_SAMPLES:
            start = int(rng.integers(len(clip) - AUDIO_SAMPLES + 1))
            clip = clip[start : start + AUDIO_SAMPLES]
        offset = int(rng.integers(AUDIO_SAMPLES - len(clip) + 1)) if aug.shift else 0
        peak = float(np.abs(clip).max()) or 1.0
        gain = min(10 ** (rng.uniform(*aug.gain_db) / 20), 0.95 / peak)
        x = clip * gain
        power = float(np.mean(x.astype(np.float64) ** 2)) or 1e-12
        std = np.sqrt(power / 10 ** (rng.uniform(*aug.snr_db) / 10))
        out[row, offset : offset + len(x)] = x
        out[row] += rng.normal(0.0, std, AUDIO_SAMPLES).astype(np.float32)
    return np.clip(out, -0.99, 0.99)


def _spec_mask(features: Tensor, rng: np.random.Generator, aug: AudioAugment) -> Tensor:
    """SpecAugment's frequency and time masking (Park et al., 2019), set to each clip's mean."""
    x = features.clone()
    n, bands, frames = x.shape
    for row in range(n):
        fill = x[row].mean()
        for _ in range(aug.freq_masks):
            w = int(rng.integers(aug.freq_width + 1))
            f0 = int(rng.integers(bands - w + 1))
            x[row, f0 : f0 + w, :] = fill
        for _ in range(aug.time_masks):
            w = int(rng.integers(aug.time_width + 1))
            t0 = int(rng.integers(frames - w + 1))
            x[row, :, t0 : t0 + w] = fill
    return x


def train_audio(
    settings: TrainSettings,
    voices: list[str] | None = None,
    cache_dir: str | Path | None = None,
    *,
    augment: AudioAugment | None = None,
    config: AudioConfig | None = None,
    validation: bool = False,
) -> tuple[AudioEncoder, dict[str, Any]]:
    """An `AudioEncoder` digit classifier on espeak-ng digits, tested on held-out voices.

    The test voices (variants m5 and f5 of every accent) are never heard in training. With
    `validation` the m4 and f4 voices are held out of training as well and the metrics hold
    the accuracy on them *instead of* the test accuracy, so a recipe is tuned without ever
    seeing the test voices. `augment` (default `AudioAugment()`) draws speed, offset, gain,
    noise and SpecAugment masks for every clip of every batch; `config` defaults to
    `audio_digits_config()`.
    """
    seed_everything(settings.seed)
    aug = AudioAugment() if augment is None else augment
    dev = _device(settings)
    data = spoken_digits(voices=voices, seed=settings.seed, cache_dir=cache_dir)
    test_voices = sorted({v for v in data.voices if v.endswith(TEST_VOICES_PER_ACCENT)})
    if not test_voices:  # a custom voice list: hold out the last voice
        test_voices = [sorted(set(data.voices))[-1]]
    train, test = data.split(test_voices)
    if validation:
        val_voices = sorted({v for v in train.voices if v.endswith(VALIDATION_VOICES_PER_ACCENT)})
        if not val_voices or len(val_voices) == len(set(train.voices)):
            raise ValueError(
                "train_audio(validation=True) needs training voices with the variants "
                f"{VALIDATION_VOICES_PER_ACCENT} and others besides, got {sorted(set(train.voices))}"
            )
        train, test = train.split(val_voices)
    variants = _speed_variants(train.audio, aug.speeds, data.sample_rate)
    y = torch.from_numpy(train.labels).to(dev)
    model = AudioEncoder(audio_digits_config() if config is None else config).to(dev)
    rng = np.random.default_rng(settings.seed + 1)

    def loss_of(idx: Tensor) -> Tensor:
        batch = _augmented_batch(variants, idx.numpy(), rng, aug)
        xb = _spec_mask(audio_features(batch), rng, aug).to(dev)
        return F.cross_entropy(model.logits(xb), y[idx.to(dev)])

    losses = _fit(model, settings, loss_of, len(y))
    xt = audio_features(test.padded(AUDIO_SAMPLES)).to(dev)
    pred = _batched(model.logits, xt).argmax(-1).cpu().numpy()
    name = "validation" if validation else "test"
    metrics = {
        f"{name}_accuracy": float((pred == test.labels).mean()),
        f"{name}_voices": sorted(set(test.voices)),
        f"{name}_confusion": confusion_matrix(test.labels, pred, labels=np.arange(10)).tolist(),
        "n_train": len(train.labels),
        f"n_{name}": len(test.labels),
        "loss": losses[-1],
    }
    return model, metrics


# -- VLM on scenes ---------------------------------------------------------------------------


def caption_lm(vocab: Vocab, settings: TrainSettings, steps: int = 400) -> GPT:
    """A small GPT pretrained on the scene captions alone (the decoder the VLM then freezes)."""
    seed_everything(settings.seed)
    dev = _device(settings)
    lm = GPT(GPTConfig(vocab_size=len(vocab), n_layers=2, d_model=64, n_heads=4, max_seq_len=32))
    lm.to(dev)
    texts = [caption(s) for s in all_scenes()]
    ids = torch.from_numpy(vocab.encode(texts, CONTEXT)[0]).to(dev)
    targets = torch.roll(ids, -1, 1)
    targets[targets == Vocab.pad_id] = -100
    targets[:, -1] = -100
    lm_settings = TrainSettings(steps=steps, batch_size=64, lr=3e-3, seed=settings.seed)
    _fit(lm, lm_settings, lambda idx: lm(ids[idx.to(dev)], targets[idx.to(dev)]), len(ids))
    return lm


def scenes_vlm_vit() -> ViTConfig:
    """The VLM's image encoder: 8x8 patches of 32x32 scenes (16 soft tokens), width 64."""
    return ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=128,
    )


def train_vlm(
    settings: TrainSettings,
    n_train: int = 6000,
    n_test: int = 500,
    lora_rank: int = 0,
    lm_steps: int = 400,
) -> tuple[VLM, dict[str, Any]]:
    """Caption scenes with a frozen caption LM (or with LoRA of rank `lora_rank` on its
    attention); the image encoder and projector train. The caption LM is pretrained first for
    `lm_steps` on the 384 captions. Exact-caption accuracy on new scenes of training
    combinations and on held-out colour-shape pairs."""
    from fms_llm.finetune.lora import LoRAConfig

    vocab = Vocab.for_scenes()
    lm = caption_lm(vocab, settings, lm_steps)
    seed_everything(settings.seed)
    dev = _device(settings)
    vlm = VLM(ViT(scenes_vlm_vit()), lm).to(dev)
    if lora_rank:
        vlm.add_lora(LoRAConfig(r=lora_rank, alpha=2.0 * lora_rank))
    else:
        vlm.freeze_decoder()
    train = make_scenes(n_train, seed=settings.seed, split="train")
    ids = torch.from_numpy(vocab.encode(train.captions, CONTEXT)[0]).to(dev)
    targets = torch.roll(ids, -1, 1)
    targets[targets == Vocab.pad_id] = -100
    targets[:, -1] = -100
    images = torch.from_numpy(train.images).to(dev)
    losses = _fit(
        vlm,
        settings,
        lambda idx: vlm.loss(images[idx.to(dev)], ids[idx.to(dev)], targets[idx.to(dev)]),
        len(ids),
    )
    metrics: dict[str, Any] = {"loss": losses[-1]}
    for split in ("train", "test"):
        scenes = make_scenes(n_test, seed=settings.seed + 20_000, split=split)
        metrics[f"caption_accuracy_{'new_scenes' if split == 'train' else 'held_out_pairs'}"] = (
            caption_accuracy(vlm, scenes, vocab)
        )
    return vlm, metrics


def caption_accuracy(vlm: VLM, scenes: SceneSet, vocab: Vocab) -> float:
    """The fraction of `scenes` whose greedy caption is exactly right."""
    return float(
        np.mean(
            [
                a == b
                for a, b in zip(generate_captions(vlm, scenes, vocab), scenes.captions, strict=True)
            ]
        )
    )


def generate_captions(vlm: VLM, scenes: SceneSet, vocab: Vocab) -> list[str]:
    """Greedy captions of `scenes` from the `<bos>` prompt."""
    dev = next(vlm.parameters()).device
    out: list[str] = []
    for i in range(0, len(scenes.scenes), 256):
        pixels = torch.from_numpy(scenes.images[i : i + 256]).to(dev)
        prompt = torch.full((len(pixels), 1), Vocab.bos_id, device=dev)
        gen = vlm.generate(pixels, prompt, CONTEXT - 1, eos_id=Vocab.eos_id)
        out += [vocab.decode(row) for row in gen.tolist()]
    return out


# -- evaluation of saved models --------------------------------------------------------------


def evaluate(task: str, directory: str | Path, seed: int = 0) -> dict[str, Any]:
    """Reload a model saved by `fms-mm train TASK` and measure it on that task's held-out data
    (drawn with `seed`, as training with that seed held it out)."""
    directory = Path(directory)
    if task == "vit":
        model = ViT.from_pretrained(directory).eval()
        data = load_digits(seed=seed)
        return {"test_accuracy": vit_accuracy(model, data.x_test, data.y_test)}
    if task == "clip":
        clip = CLIP.from_pretrained(directory).eval()
        return clip_metrics(
            clip, make_scenes(1000, seed=seed + 10_000, split="test"), Vocab.for_scenes()
        )
    if task == "audio":
        enc = AudioEncoder.from_pretrained(directory).eval()
        speech = spoken_digits(seed=seed)
        held = sorted({v for v in speech.voices if v.endswith(TEST_VOICES_PER_ACCENT)})
        _, test = speech.split(held)
        pred = _batched(enc.logits, audio_features(test.padded(AUDIO_SAMPLES))).argmax(-1).numpy()
        return {"test_accuracy": float((pred == test.labels).mean())}
    if task == "vlm":
        vlm = VLM.from_pretrained(directory).eval()
        vocab = Vocab.for_scenes()
        return {
            f"caption_accuracy_{name}": caption_accuracy(
                vlm, make_scenes(500, seed=seed + 20_000, split=split), vocab
            )
            for name, split in (("new_scenes", "train"), ("held_out_pairs", "test"))
        }
    raise ValueError(f"task must be one of vit, clip, audio, vlm; got {task!r}")


def write_metrics(directory: str | Path, metrics: dict[str, Any], settings: TrainSettings) -> Path:
    """`metrics.json` (the metrics and the settings) next to a saved model, atomically."""
    from fms_llm.models.hf import _atomic_dir

    body = json.dumps({"metrics": metrics, "settings": asdict(settings)}, indent=2) + "\n"
    directory = Path(directory)

    def write(tmp: Path) -> None:
        (tmp / "metrics.json").write_text(body, encoding="utf-8")

    _atomic_dir(directory, write)
    return directory / "metrics.json"
