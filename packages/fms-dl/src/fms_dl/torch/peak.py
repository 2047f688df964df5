r"""The peak FLOP/s of a device: the denominator of model FLOPs utilisation (MFU).

$$
\mathrm{MFU} = \frac{\text{tokens/s} \times \text{FLOPs per token}}{\text{peak FLOP/s}}
$$

MFU is only meaningful, and only at most 100%, when the peak is an *upper bound* on what the
device can do. A measured rate is not one: timed on a machine that other processes share, a
matrix multiply runs slower than the chip can, and a training step timed later, when the
machine is quiet, then reads above 100%. So the peak here is the hardware's own arithmetic
limit, as a datasheet states it, and a measured rate only ever raises it:

* **CUDA**: the dense bf16 tensor-core peak of the datasheet for known GPUs (the precision
  fast training uses; a float32 run reads a lower MFU, as it should).
* **CPU**: cores times clock times FLOPs a core can issue per cycle,
  $P = n_\text{cores} \cdot f_\text{max} \cdot 2 \cdot \text{lanes} \cdot \text{FMA units}$,
  where a fused multiply-add counts 2 FLOPs, `lanes` is the float32 SIMD width (16 for
  AVX-512, 8 for AVX2, 4 for SSE and NEON) and the count of FMA units is the most any core of
  that instruction set has (2 on x86 with FMA, 4 128-bit pipes on the widest Arm cores), so
  that factor errs high, never low. $f_\text{max}$ is the largest clock the system reports (the
  cpufreq maximum, `cpu MHz`, the frequency in the model name); $n_\text{cores}$ is the number
  of threads used, at most the logical CPUs.
* Anything else, or a CPU whose instruction set or clock cannot be read: the best measured
  rate of a large matrix multiply, the only figure there is (and then documented as such).

In every case the result is `max(bound, measured)`. The two fail in opposite conditions, which
is why both are taken: a virtual machine often reports only the base clock while its cores run
faster (seen on the 2-core Xeon this was written on: `cpu MHz` 2600, yet one thread multiplied
1024 x 1024 matrices at 177 GFLOP/s, 2.77 GHz worth of AVX-512), and then the quiet measurement
is the higher; on a loaded machine the measurement falls, and the bound, which no load can
lower, holds MFU down. A step that read above 100% would have to outrun both a large matmul
and the chip's arithmetic at its reported clock.
"""

from __future__ import annotations

import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["KNOWN_GPU_BF16_PEAK", "CPUPeak", "cpu_peak", "measured_matmul_flops", "peak_flops"]

KNOWN_GPU_BF16_PEAK: dict[str, float] = {  # dense bf16 tensor-core FLOP/s, datasheets (SXM parts)
    "B200": 2250e12,
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "4090": 165e12,
}
"""Datasheet peaks, matched by substring of `torch.cuda.get_device_name` (first match wins)."""


@dataclass(frozen=True)
class CPUPeak:
    """A CPU's arithmetic bound and what it was read from.

    Attributes:
        flops: The bound in float32 FLOP/s, `cores * hz * flops_per_cycle`.
        cores: The cores counted.
        hz: The clock used, in Hz.
        flops_per_cycle: float32 FLOPs one core issues per cycle at most.
        isa: The instruction set the count comes from (`"avx512"`, `"avx2+fma"`, ...).
    """

    flops: float
    cores: int
    hz: float
    flops_per_cycle: int
    isa: str


# (isa, float32 FLOPs per cycle per core): 2 FLOPs an FMA x lanes x FMA units, the most any core
# of that instruction set has; without FMA, a multiply and an add issue on two ports.
_X86_LEVELS: tuple[tuple[str, frozenset[str], int], ...] = (
    ("avx512", frozenset({"avx512f"}), 2 * 16 * 2),
    ("avx2+fma", frozenset({"avx2", "fma"}), 2 * 8 * 2),
    ("avx", frozenset({"avx"}), 8 * 2),
    ("sse2", frozenset({"sse2"}), 4 * 2),
)
_ARM_FLOPS_PER_CYCLE = 2 * 4 * 4  # four 128-bit FMA pipes (Neoverse V1/V2, Apple M-series)


def _flops_per_cycle(flags: set[str], machine: str) -> tuple[str, int] | None:
    machine = machine.lower()
    if machine in {"aarch64", "arm64"}:
        return "neon", _ARM_FLOPS_PER_CYCLE
    if machine in {"x86_64", "amd64", "i686", "i386"}:
        for isa, needs, fpc in _X86_LEVELS:
            if needs <= flags:
                return isa, fpc
    return None


def _max_hz(cpuinfo: str, sys_cpu: Path) -> float | None:
    rates: list[float] = []
    for f in sys_cpu.glob("cpu[0-9]*/cpufreq/cpuinfo_max_freq"):
        try:
            rates.append(float(f.read_text().strip()) * 1e3)  # kHz
        except (OSError, ValueError):
            continue
    rates += [float(m) * 1e6 for m in re.findall(r"^cpu MHz\s*:\s*([0-9.]+)", cpuinfo, re.M)]
    rates += [float(g) * 1e9 for g in re.findall(r"@\s*([0-9.]+)\s*GHz", cpuinfo)]
    rates = [r for r in rates if r > 0]
    return max(rates) if rates else None


def cpu_peak(
    threads: int | None = None,
    *,
    cpuinfo: str | None = None,
    machine: str | None = None,
    sys_cpu: str | Path = "/sys/devices/system/cpu",
) -> CPUPeak | None:
    """The float32 arithmetic bound of this CPU over `threads` cores, or None if unreadable.

    Args:
        threads: Cores counted (default `torch.get_num_threads()`), at most the logical CPUs.
        cpuinfo: The text of `/proc/cpuinfo` (read from the system when None).
        machine: The architecture (`platform.machine()` when None).
        sys_cpu: Where cpufreq's `cpuinfo_max_freq` files live.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    machine = platform.machine() if machine is None else machine
    flags: set[str] = set()
    for line in re.findall(r"^(?:flags|Features)\s*:(.*)$", cpuinfo, re.M):
        flags.update(line.split())
    level = _flops_per_cycle(flags, machine)
    hz = _max_hz(cpuinfo, Path(sys_cpu))
    if level is None or hz is None:
        return None
    logical = os.cpu_count() or 1
    cores = max(1, min(threads if threads is not None else torch.get_num_threads(), logical))
    isa, fpc = level
    return CPUPeak(flops=cores * hz * fpc, cores=cores, hz=hz, flops_per_cycle=fpc, isa=isa)


def measured_matmul_flops(
    device: torch.device, *, n: int | None = None, seconds: float = 0.3
) -> float:
    """The best rate of an $n \\times n$ float32 matrix multiply (`2 n^3` FLOPs) over `seconds`.

    A lower bound on the device's peak (what it reached, under whatever else was running).
    """
    n = n if n is not None else (1024 if device.type == "cpu" else 4096)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = 0.0
    a @ b  # warm-up
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == 0.0:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, 2 * n**3 / max(time.perf_counter() - t0, 1e-9))
    return best


def peak_flops(device: torch.device | str, *, threads: int | None = None) -> float:
    """Peak FLOP/s for MFU: an upper bound on the device's arithmetic (see the module docstring).

    Args:
        device: The device a run trains on.
        threads: CPU threads the run uses (default `torch.get_num_threads()`).

    Returns:
        The datasheet bf16 peak for known GPUs; on CPU the larger of the core-clock-SIMD bound
        and a measured matmul; otherwise the measured matmul.
    """
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in KNOWN_GPU_BF16_PEAK.items():
            if key in name:
                return peak
    measured = measured_matmul_flops(device)
    if device.type == "cpu":
        bound = cpu_peak(threads)
        if bound is not None:
            return max(bound.flops, measured)
    return measured
