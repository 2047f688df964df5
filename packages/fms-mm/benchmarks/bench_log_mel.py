"""Log-mel throughput: fms_mm's `log_mel_spectrogram` against transformers, openai-whisper and
librosa, paired by round, on 30-second clips and batches of them.

Two conventions, each against the pipelines users run for it:

- **whisper** (16 kHz, 80 mels, `n_fft=400`, hop 160): ours against transformers'
  `WhisperFeatureExtractor(...)(x, sampling_rate=16000)` (its torch path, `torch.stft`) and, where
  the `openai-whisper` package is installed, against
  `whisper.log_mel_spectrogram(whisper.pad_or_trim(x))` (also `torch.stft`; its mel filters ship
  inside the package, nothing is downloaded; its clamp is 8 decades below the maximum of the
  whole batch rather than of each clip, so batches are compared where neither clamp acts).
- **librosa** (22.05 kHz, 128 mels, `n_fft=2048`, hop 512):
  ours against `librosa.power_to_db(librosa.feature.melspectrogram(y=x, sr=22050), top_db=80)`.

Each round calls every contender once on the same float32 batch, in a rotating order, one
thread each; a round's ratio is the reference's CPU time over ours (above 1: ours is faster), and
the rounds' ratios are summarised by their median with a 95% percentile-bootstrap interval
(`fms_ml.experiment.bootstrap_ci`). Times are the thread's CPU time (`time.thread_time`), which
other tenants of a shared machine do not inflate. Every contender's output is also checked
against ours before timing.

    uv run python packages/fms-mm/benchmarks/bench_log_mel.py [--rounds 20] [--batches 1,8] [--quick]
    # writes packages/fms-mm/benchmarks/results/bench_log_mel.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fms_ml.experiment import bootstrap_ci, environment
from fms_mm.audio import log_mel_spectrogram

RESULTS = Path(__file__).resolve().parent / "results" / "bench_log_mel.json"


def _speechlike(rate: int, seconds: float, batch: int, seed: int = 0) -> np.ndarray:
    """`(batch, samples)` float32: rising chirps under a 3 Hz envelope, with a little noise."""
    g = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    rows = []
    for b in range(batch):
        f0 = 150 + 40 * b
        y = 0.3 * np.sin(2 * np.pi * (f0 + 200 * t / seconds) * t) * (1 + np.sin(6 * np.pi * t)) / 2
        rows.append(y + 0.02 * g.standard_normal(t.size))
    return np.asarray(rows, dtype=np.float32)


def _whisper_contenders(x: np.ndarray) -> dict[str, Callable[[], np.ndarray]]:
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor()
    out: dict[str, Callable[[], np.ndarray]] = {
        "fms_mm": lambda: log_mel_spectrogram(torch.from_numpy(x), 16000).numpy(),
        "transformers": lambda: fe(x, sampling_rate=16000, return_tensors="np").input_features,
    }
    try:
        import whisper  # openai-whisper
    except ImportError:
        pass
    else:
        # whisper's own recipe: pad or cut to 30 s, then the features
        out["openai-whisper"] = lambda: whisper.log_mel_spectrogram(
            whisper.pad_or_trim(torch.from_numpy(x))
        ).numpy()
    return out


def _librosa_contenders(x: np.ndarray) -> dict[str, Callable[[], np.ndarray]]:
    import librosa

    def ref() -> np.ndarray:
        mel = librosa.feature.melspectrogram(y=x, sr=22050)
        # power_to_db's top_db clamps below the array's maximum: per clip, as ours
        return np.stack([librosa.power_to_db(m, ref=1.0, amin=1e-10, top_db=80.0) for m in mel])

    return {
        "fms_mm": lambda: log_mel_spectrogram(
            torch.from_numpy(x), 22050, convention="librosa"
        ).numpy(),
        "librosa": ref,
    }


def _run(
    fns: dict[str, Callable[[], np.ndarray]], rounds: int, tolerance: float
) -> dict[str, list[float]]:
    ours = fns["fms_mm"]()
    for name, fn in fns.items():  # warm-up and agreement
        theirs = fn()
        if name == "openai-whisper" and len(ours) > 1:
            # whisper clamps 8 decades below the maximum of the whole batch, not of each clip
            unclamped = ours > ours.max() - 2.0 + 1e-6  # 8 decades are 2 in (x + 4) / 4
            err = float(np.abs(theirs - ours)[unclamped].max())
        else:
            err = float(np.abs(theirs - ours).max())
        if err > tolerance:
            raise SystemExit(f"{name} differs from fms_mm by {err:.3g} (> {tolerance})")
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            c0 = time.thread_time()
            fns[name]()
            cpu[name].append(time.thread_time() - c0)
    return cpu


def _ci(ref: list[float], ours: list[float]) -> dict[str, float]:
    ci = bootstrap_ci(np.asarray(ref) / np.asarray(ours), np.median, random_state=0)
    return {"median": ci.estimate, "low": ci.low, "high": ci.high}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each clip")
    parser.add_argument("--quick", action="store_true", help="6 rounds, batch 1, 10 s clips")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.batches, args.seconds = 6, "1", 10.0
    if args.rounds < 2:
        parser.error(
            f"--rounds must be at least 2 (an interval needs two ratios), got {args.rounds}"
        )
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        parser.error(f"--batches must be comma-separated ints, got {args.batches!r}")
    if any(b < 1 for b in batches):
        parser.error(f"--batches must be positive, got {args.batches!r}")
    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits  # ships with scikit-learn and librosa

    threadpool_limits(1)
    load = os.getloadavg()
    rows = []
    for convention, rate, make, tol in (
        ("whisper", 16000, _whisper_contenders, 1e-4),
        ("librosa", 22050, _librosa_contenders, 1e-3),
    ):
        for batch in batches:
            x = _speechlike(rate, args.seconds, batch)
            cpu = _run(make(x), args.rounds, tol)
            ms = {k: 1e3 * float(np.median(v)) for k, v in cpu.items()}
            audio_s = batch * args.seconds
            rows.append(
                {
                    "convention": convention,
                    "batch": batch,
                    "seconds": args.seconds,
                    "ms": ms,
                    "realtime": {k: audio_s / (v / 1e3) for k, v in ms.items()},
                    "speedup": {k: _ci(cpu[k], cpu["fms_mm"]) for k in cpu if k != "fms_mm"},
                }
            )
    record = {
        "rounds": args.rounds,
        "threads": 1,
        "timer": "time.thread_time",
        "loadavg_before": load,
        "loadavg_after": os.getloadavg(),
        "environment": environment(),
        "rows": rows,
    }
    print(f"machine: {platform.processor() or platform.machine()}; 1 thread; load {load[0]:.1f}")
    print(f"log-mel, {args.rounds} paired rounds, CPU time; speed-up = reference / ours, median")
    print("[95% bootstrap CI]\n")
    print("| convention | clips | reference | speed-up | ours ms | reference ms |")
    print("|---|---:|---|---:|---:|---:|")
    for row in rows:
        for ref, s in row["speedup"].items():
            print(
                f"| {row['convention']} | {row['batch']} | {ref} | "
                f"{s['median']:.2f}x [{s['low']:.2f}, {s['high']:.2f}] | "
                f"{row['ms']['fms_mm']:.1f} | {row['ms'][ref]:.1f} |"
            )
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
