r"""Sound as a sequence of vectors: the short-time Fourier transform, the mel scale, log-mel
spectrograms and an audio encoder.

**STFT.** A waveform $x$ is cut into overlapping frames of $n$ samples, $h$ apart (the hop),
each multiplied by a window $w$ (Hann: $w_t = \sin^2(\pi t / n)$, periodic) that fades it in and
out so the frame's edges do not show up as spurious high frequencies, and each frame goes through
the discrete Fourier transform:

$$X_{f, m} = \sum_{t=0}^{n-1} w_t\, x_{m h + t}\, e^{-2\pi i f t / n}, \qquad f = 0, \dots, n/2.$$

With `center=True` the signal is first padded by $n/2$ on each side, so frame $m$ is centred on
sample $m h$. $|X|^2$ is the power spectrogram.

**The mel scale.** Pitch perception is roughly linear in frequency below 1 kHz and logarithmic
above. Slaney's mel scale (librosa's and Whisper's default) is exactly that:

$$m(f) = \begin{cases} 3f/200 & f < 1000 \\ 15 + 27\,\ln(f/1000)/\ln 6.4 & f \ge 1000.\end{cases}$$

`mel_filters` places $M + 2$ points evenly in mel between `fmin` and `fmax`, maps them back to
Hz and builds $M$ triangles between consecutive triples; with Slaney normalisation each triangle
is scaled by $2 / (f_{i+2} - f_i)$ so every filter has the same area. The mel spectrogram is the
filter matrix times the power spectrogram: few coarse bands at high frequencies, many narrow ones
at low, as the ear resolves them.

**Why the log.** Loudness is perceived on a log scale and the power of speech spans many orders
of magnitude; the log compresses that range, turns the multiplicative gain of a microphone into
an additive offset, and gives a network inputs of a sensible size. Whisper takes
$\log_{10}$, clamps to 8 (80 dB) below the maximum and rescales by $(x + 4)/4$; librosa's
`power_to_db` takes $10 \log_{10}$ and clamps to `top_db` below the maximum.

**The encoder** ([`AudioEncoder`][fms_mm.audio.AudioEncoder]) is Whisper's: two 1-D convolutions
over time (the second with stride 2, halving the frame rate) with GELU, sinusoidal positions and
a stack of bidirectional [`EncoderBlock`][fms_transformer.blocks.EncoderBlock]s; for
classification the final LayerNorm's frames are averaged and a linear layer reads the class.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fms_mm._files import ModelFileError, load_exact, read_model_dir, write_model_dir
from fms_transformer.blocks import EncoderBlock
from fms_transformer.ffn import gelu
from fms_transformer.norm import LayerNorm
from fms_transformer.positional import SinusoidalPositionalEncoding

__all__ = [
    "WHISPER_SAMPLE_RATE",
    "AudioConfig",
    "AudioEncoder",
    "AudioInputError",
    "check_audio",
    "hann_window",
    "hz_to_mel",
    "log_mel_spectrogram",
    "mel_filters",
    "mel_to_hz",
    "stft",
]

WHISPER_SAMPLE_RATE = 16000
"""Whisper's sample rate in Hz; its log-mel front end is defined at this rate only."""


class AudioInputError(ValueError):
    """Audio that is empty, clipped, of the wrong shape or at the wrong sample rate."""


def check_audio(audio: Tensor, owner: str, *, min_samples: int = 1) -> None:
    """Raise an `AudioInputError` unless `audio` is a float `(samples,)` or `(batch, samples)`
    tensor with at least `min_samples` samples, finite, within $[-1, 1]$ and not clipped
    (more than 1% of samples at full scale)."""
    if not isinstance(audio, Tensor) or not audio.is_floating_point():
        got = audio.dtype if isinstance(audio, Tensor) else type(audio).__name__
        raise AudioInputError(f"{owner}: audio must be a float tensor in [-1, 1], got {got}")
    if audio.ndim not in (1, 2):
        raise AudioInputError(
            f"{owner}: audio must be (samples,) or (batch, samples), got shape {tuple(audio.shape)}"
        )
    if audio.shape[-1] < min_samples:
        raise AudioInputError(
            f"{owner}: audio has {audio.shape[-1]} samples, expected at least {min_samples}"
        )
    if audio.ndim == 2 and audio.shape[0] == 0:
        raise AudioInputError(f"{owner}: the batch of audio is empty, shape {tuple(audio.shape)}")
    lo, hi = torch.aminmax(audio)  # one pass; NaN propagates into both
    peak = max(-float(lo), float(hi))
    if not math.isfinite(peak):
        raise AudioInputError(f"{owner}: audio holds NaN or infinite samples")
    if peak > 1.0:
        raise AudioInputError(
            f"{owner}: audio peaks at {peak:.4g}, expected samples in [-1, 1] "
            "(16-bit PCM must be divided by 32768)"
        )
    if peak < 0.999:  # nothing at full scale: the clipping count below would find none
        return
    share = (audio.abs() >= 0.999).float().mean(-1).reshape(-1)  # per clip
    worst = int(share.argmax())
    if float(share[worst]) > 0.01:
        where = f" (row {worst} of the batch)" if audio.ndim == 2 else ""
        raise AudioInputError(
            f"{owner}: audio is clipped{where}: {100 * float(share[worst]):.1f}% of samples sit "
            "at full scale (expected under 1%); lower the gain before recording or synthesis"
        )


def _check_sample_rate(sample_rate: object, owner: str) -> None:
    if (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, int | float)
        or not math.isfinite(sample_rate)
        or sample_rate <= 0
    ):
        raise AudioInputError(
            f"{owner}: sample_rate must be a positive number of samples a second, "
            f"got {sample_rate!r}"
        )


def hann_window(n: int, *, periodic: bool = True, dtype: torch.dtype = torch.float32) -> Tensor:
    r"""The Hann window $w_t = \sin^2(\pi t / N)$, $N = n$ (periodic, for spectral analysis, as
    `torch.hann_window` and `scipy.signal.get_window("hann")`) or $N = n - 1$ (symmetric)."""
    if n < 1:
        raise ValueError(f"window length must be >= 1, got {n}")
    denom = n if periodic else max(n - 1, 1)
    t = torch.arange(n, dtype=torch.float64)
    return torch.sin(math.pi * t / denom).pow(2).to(dtype)


def stft(
    x: Tensor,
    n_fft: int,
    hop_length: int | None = None,
    *,
    window: Tensor | None = None,
    center: bool = True,
    pad_mode: Literal["reflect", "constant"] = "reflect",
) -> Tensor:
    """The short-time Fourier transform, `(..., samples)` -> complex `(..., n_fft // 2 + 1, frames)`.

    Frames `n_fft` samples long, `hop_length` apart (default `n_fft // 4`), each times `window`
    (default periodic Hann of length `n_fft`), then a real FFT. With `center` the signal is padded
    by `n_fft // 2` on both sides (`pad_mode` "reflect" as torch and Whisper, "constant" as
    librosa >= 0.10). Same output as `torch.stft(..., return_complex=True)`.
    """
    spectrum = _stft_frames(x, n_fft, hop_length, window=window, center=center, pad_mode=pad_mode)
    return spectrum.transpose(-1, -2)


def _stft_frames(
    x: Tensor,
    n_fft: int,
    hop_length: int | None = None,
    *,
    window: Tensor | None = None,
    center: bool = True,
    pad_mode: Literal["reflect", "constant"] = "reflect",
) -> Tensor:
    """[`stft`][fms_mm.audio.stft] frame-major: complex `(..., frames, n_fft // 2 + 1)`, each
    frame's spectrum contiguous (the layout the real FFT writes, and the one the mel matmul
    reads fastest)."""
    hop = n_fft // 4 if hop_length is None else hop_length
    if n_fft < 1 or hop < 1:
        raise ValueError(f"n_fft and hop_length must be >= 1, got {n_fft} and {hop}")
    win = hann_window(n_fft, dtype=x.dtype) if window is None else window.to(x.dtype)
    if win.shape != (n_fft,):
        raise ValueError(f"window must have shape ({n_fft},), got {tuple(win.shape)}")
    if center:
        pad = n_fft // 2
        if pad_mode == "reflect" and x.shape[-1] <= pad:
            raise AudioInputError(
                f"stft: {x.shape[-1]} samples are too short to reflect-pad by {pad} "
                f"(need more than n_fft // 2 = {pad})"
            )
        shape = x.shape
        x = F.pad(x.reshape(-1, 1, shape[-1]), (pad, pad), mode=pad_mode).reshape(
            *shape[:-1], shape[-1] + 2 * pad
        )
    if x.shape[-1] < n_fft:
        raise AudioInputError(f"stft: {x.shape[-1]} samples are fewer than n_fft={n_fft}")
    frames = x.unfold(-1, n_fft, hop) * win  # (..., frames, n_fft)
    spectrum: Tensor = torch.fft.rfft(frames, dim=-1)
    return spectrum


def hz_to_mel(f: Tensor, *, htk: bool = False) -> Tensor:
    r"""Hz to mel: Slaney's (linear below 1 kHz, logarithmic above) or HTK's
    $2595 \log_{10}(1 + f/700)$."""
    if htk:
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0
    return torch.where(
        f >= min_log_hz,
        min_log_mel + torch.log(torch.clamp(f, min=min_log_hz) / min_log_hz) / logstep,
        f / f_sp,
    )


def mel_to_hz(m: Tensor, *, htk: bool = False) -> Tensor:
    """The inverse of [`hz_to_mel`][fms_mm.audio.hz_to_mel]."""
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0
    return torch.where(
        m >= min_log_mel, min_log_hz * torch.exp(logstep * (m - min_log_mel)), f_sp * m
    )


def mel_filters(
    sample_rate: int,
    n_fft: int,
    n_mels: int = 128,
    *,
    fmin: float = 0.0,
    fmax: float | None = None,
    htk: bool = False,
    norm: Literal["slaney"] | None = "slaney",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Triangular mel filters `(n_mels, n_fft // 2 + 1)`, computed in float64 (as librosa's
    `filters.mel`, whose defaults these are; Whisper's are `n_fft=400, n_mels=80` at 16 kHz)."""
    _check_sample_rate(sample_rate, "mel_filters")
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(
            f"need 0 <= fmin < fmax <= sample_rate / 2 = {sample_rate / 2}, got fmin={fmin}, "
            f"fmax={fmax}"
        )
    if n_mels < 1:
        raise ValueError(f"n_mels must be >= 1, got {n_mels}")
    fft_freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lo, hi = hz_to_mel(torch.tensor([fmin, fmax], dtype=torch.float64), htk=htk)
    mel_f = mel_to_hz(
        torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64), htk=htk
    )
    fdiff = mel_f.diff()
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)
    if norm == "slaney":
        weights = weights * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    elif norm is not None:
        raise ValueError(f"norm must be 'slaney' or None, got {norm!r}")
    return weights.to(dtype)


def log_mel_spectrogram(
    audio: Tensor,
    sample_rate: int,
    *,
    convention: Literal["whisper", "librosa"] = "whisper",
    n_mels: int | None = None,
    n_fft: int | None = None,
    hop_length: int | None = None,
    pad_to: int | None = None,
    top_db: float | None = 80.0,
    filters: Tensor | None = None,
) -> Tensor:
    """Log-mel features `(n_mels, frames)` (or `(batch, n_mels, frames)`) of `audio` in [-1, 1].

    `convention="whisper"` (transformers' `WhisperFeatureExtractor`): 16 kHz only, `n_fft=400`,
    `hop_length=160`, `n_mels=80`, the signal zero-padded or cut to `pad_to` samples (30 s by
    default, `pad_to=0` for none), reflect-padded STFT, the last frame dropped,
    $\\log_{10}$ clamped to 8 below each example's maximum, then $(x + 4)/4$.

    `convention="librosa"` (`power_to_db(melspectrogram(y))`): any rate, `n_fft=2048`,
    `hop_length=512`, `n_mels=128`, zero-padded STFT, $10 \\log_{10}$ of the power clamped at
    $10^{-10}$ and to `top_db` below each example's maximum.
    """
    check_audio(audio, "log_mel_spectrogram")
    _check_sample_rate(sample_rate, "log_mel_spectrogram")
    audio = audio if audio.dtype == torch.float64 else audio.float()
    if convention == "whisper":
        if sample_rate != WHISPER_SAMPLE_RATE:
            raise AudioInputError(
                f"log_mel_spectrogram: Whisper's features are defined at {WHISPER_SAMPLE_RATE} Hz, "
                f"got sample_rate={sample_rate}; resample first or use convention='librosa'"
            )
        n_fft, hop, n_mels = n_fft or 400, hop_length or 160, n_mels or 80
        target = 30 * WHISPER_SAMPLE_RATE if pad_to is None else pad_to
        if not isinstance(target, int) or isinstance(target, bool) or target < 0:
            raise ValueError(
                f"log_mel_spectrogram: pad_to must be a non-negative int of samples "
                f"(0 for no padding), got {pad_to!r}"
            )
        if target:
            length = audio.shape[-1]
            audio = F.pad(audio, (0, target - length)) if length < target else audio[..., :target]
        pad_mode: Literal["reflect", "constant"] = "reflect"
    elif convention == "librosa":
        n_fft, hop, n_mels = n_fft or 2048, hop_length or 512, n_mels or 128
        pad_mode = "constant"
    else:
        raise ValueError(f"convention must be 'whisper' or 'librosa', got {convention!r}")
    if filters is None:
        bank = mel_filters(sample_rate, n_fft, n_mels)
    elif filters.shape != (n_mels, n_fft // 2 + 1):
        raise ValueError(
            f"log_mel_spectrogram: filters must be (n_mels, n_fft // 2 + 1) = "
            f"({n_mels}, {n_fft // 2 + 1}), got {tuple(filters.shape)}"
        )
    else:
        bank = filters
    spectrum = _stft_frames(audio, n_fft, hop, pad_mode=pad_mode)  # (..., frames, freq)
    # |X|^2 as re^2 + im^2: a complex abs takes a square root (hypot) only for .pow(2) to undo
    # it, and was half the cost of the whole pipeline
    power = spectrum.real.square() + spectrum.imag.square()
    if convention == "whisper":
        power = power[..., :-1, :]
    # (frames, freq) @ (freq, mels) reads each frame's spectrum contiguously
    mel = (power @ bank.to(power.dtype).T).transpose(-1, -2)
    peak_axes = (-2, -1)
    if convention == "whisper":
        log_spec = torch.clamp(mel, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.amax(dim=peak_axes, keepdim=True) - 8.0)
        return ((log_spec + 4.0) / 4.0).contiguous()
    db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
    if top_db is not None:
        db = torch.maximum(db, db.amax(dim=peak_axes, keepdim=True) - top_db)
    return db.contiguous()


# --------------------------------------------------------------------------------------------------
# the encoder
# --------------------------------------------------------------------------------------------------


@dataclass
class AudioConfig:
    """The shape of an [`AudioEncoder`][fms_mm.audio.AudioEncoder].

    Attributes:
        n_mels: Input mel bands.
        d_model: Width.
        n_layers: Encoder blocks.
        n_heads: Heads per block.
        d_ff: MLP hidden size.
        num_labels: Classes of the classifier on the mean frame (0 for none).
        dropout: Dropout in the blocks.
    """

    n_mels: int = 80
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128
    num_labels: int = 0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("n_mels", "d_model", "n_layers", "n_heads", "d_ff"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"AudioConfig.{name} must be a positive int, got {value!r}")
        if self.d_model % self.n_heads or self.d_model % 2:
            raise ValueError(
                f"AudioConfig: d_model={self.d_model} must be even and divisible by "
                f"n_heads={self.n_heads}"
            )


class AudioEncoder(nn.Module):
    """Whisper's encoder shape: conv front end (stride 2) + sinusoidal positions + transformer.

    Example:
        >>> enc = AudioEncoder(AudioConfig(n_mels=8, d_model=16, n_layers=1, n_heads=2, d_ff=32))
        >>> enc(torch.zeros(2, 8, 10)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, config: AudioConfig) -> None:
        super().__init__()
        self.config = c = config
        self.conv1 = nn.Conv1d(c.n_mels, c.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(c.d_model, c.d_model, kernel_size=3, stride=2, padding=1)
        self.positions = SinusoidalPositionalEncoding(c.d_model)
        self.blocks = nn.ModuleList(
            EncoderBlock(c.d_model, c.n_heads, c.d_ff, dropout=c.dropout, ffn="gelu_mlp")
            for _ in range(c.n_layers)
        )
        self.norm = LayerNorm(c.d_model)
        self.classifier = nn.Linear(c.d_model, c.num_labels) if c.num_labels else None

    def forward(self, features: Tensor) -> Tensor:
        """Log-mel `(batch, n_mels, frames)` -> hidden states `(batch, ceil(frames / 2), d)`."""
        if features.ndim != 3 or features.shape[1] != self.config.n_mels:
            raise AudioInputError(
                f"AudioEncoder: features must be (batch, {self.config.n_mels}, frames), "
                f"got shape {tuple(features.shape)}"
            )
        x = gelu(self.conv2(gelu(self.conv1(features)))).transpose(1, 2)
        x = x + self.positions(torch.arange(x.shape[1], device=x.device)).to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)  # type: ignore[no-any-return]

    def logits(self, features: Tensor) -> Tensor:
        """Class logits from the mean of the final frames, `(batch, num_labels)`."""
        if self.classifier is None:
            raise ValueError("this AudioEncoder has no classifier (num_labels=0)")
        return self.classifier(self(features).mean(dim=1))  # type: ignore[no-any-return]

    def save_pretrained(self, directory: str | Path) -> Path:
        """`config.json` (the `AudioConfig`) and `model.safetensors`, written atomically."""
        config = {"model_type": "fms_mm_audio", **asdict(self.config)}
        return write_model_dir(directory, config, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> AudioEncoder:
        """An encoder from a `save_pretrained` directory."""
        hf, state = read_model_dir(directory)
        if hf.pop("model_type", None) != "fms_mm_audio":
            raise ModelFileError(f"{directory}: config.json is not an fms-mm audio encoder")
        model = cls(AudioConfig(**hf))
        load_exact(model, state, str(directory))
        return model
