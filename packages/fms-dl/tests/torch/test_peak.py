"""The peak FLOP/s behind MFU is an upper bound: read from the hardware, never below a matmul."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fms_dl.torch.peak import cpu_peak, measured_matmul_flops, peak_flops

SPR = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
cpu MHz\t\t: 2600.000
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw
"""


def test_avx512_core_issues_64_float32_flops_a_cycle(tmp_path: Path) -> None:
    p = cpu_peak(1, cpuinfo=SPR, machine="x86_64", sys_cpu=tmp_path)
    assert p is not None
    assert (p.isa, p.flops_per_cycle, p.cores, p.hz) == ("avx512", 64, 1, 2.6e9)
    assert p.flops == pytest.approx(1 * 2.6e9 * 64)


@pytest.mark.parametrize(
    ("flags", "isa", "fpc"),
    [("sse2 avx avx2 fma", "avx2+fma", 32), ("sse2 avx", "avx", 16), ("sse2", "sse2", 8)],
)
def test_instruction_set_levels(tmp_path: Path, flags: str, isa: str, fpc: int) -> None:
    text = f"model name\t: Some CPU @ 3.00GHz\nflags\t: {flags}\n"
    p = cpu_peak(1, cpuinfo=text, machine="x86_64", sys_cpu=tmp_path)
    assert p is not None
    assert (p.isa, p.flops_per_cycle, p.hz) == (isa, fpc, 3.0e9)


def test_the_largest_reported_clock_wins(tmp_path: Path) -> None:
    """cpufreq's maximum (turbo) is above `cpu MHz` (the nominal clock): the bound takes it."""
    (tmp_path / "cpu0" / "cpufreq").mkdir(parents=True)
    (tmp_path / "cpu0" / "cpufreq" / "cpuinfo_max_freq").write_text("3800000\n")  # kHz
    p = cpu_peak(1, cpuinfo=SPR, machine="x86_64", sys_cpu=tmp_path)
    assert p is not None
    assert p.hz == 3.8e9


def test_arm_and_the_unreadable(tmp_path: Path) -> None:
    arm = cpu_peak(1, cpuinfo="Features\t: fp asimd\ncpu MHz\t: 3000\n", machine="aarch64",
                   sys_cpu=tmp_path)  # fmt: skip
    assert arm is not None
    assert arm.flops_per_cycle == 32
    assert cpu_peak(1, cpuinfo=SPR, machine="riscv64", sys_cpu=tmp_path) is None  # no table
    assert cpu_peak(1, cpuinfo="flags\t: avx2 fma\n", machine="x86_64", sys_cpu=tmp_path) is None


def test_threads_count_at_most_the_logical_cpus(tmp_path: Path) -> None:
    p = cpu_peak(10_000, cpuinfo=SPR, machine="x86_64", sys_cpu=tmp_path)
    assert p is not None
    assert 1 <= p.cores < 10_000


def test_this_machines_bound_is_read_right() -> None:
    """The bound read from this machine's /proc/cpuinfo is within a factor of two of the best
    measured matmul on the same threads: a misread instruction set or clock (a factor of 2 or
    more: AVX2 for AVX-512, MHz for GHz) fails here. The bound may be the lower of the two (a
    virtual machine reporting its base clock while the cores boost), which is why
    `peak_flops` takes the larger."""
    threads = torch.get_num_threads()
    bound = cpu_peak(threads)
    if bound is None:
        pytest.skip("this CPU's instruction set or clock is not readable: peak_flops measures")
    best = max(measured_matmul_flops(torch.device("cpu"), n=n, seconds=0.2) for n in (512, 1024))
    assert 0.5 <= bound.flops / best <= 8.0, (bound, best)  # above: a step reads a low MFU


def test_a_loaded_machine_cannot_lower_the_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under load the matmul measures slow (here: 1 GFLOP/s); the peak stays the hardware's
    bound, so a step timed later on a quiet machine does not read above 100%."""
    import fms_dl.torch.peak as peak

    bound = cpu_peak(2)
    if bound is None:
        pytest.skip("this CPU's instruction set or clock is not readable: peak_flops measures")
    monkeypatch.setattr(peak, "measured_matmul_flops", lambda device, **kw: 1e9)
    assert peak_flops("cpu", threads=2) == bound.flops
    monkeypatch.setattr(peak, "measured_matmul_flops", lambda device, **kw: 10 * bound.flops)
    assert peak_flops("cpu", threads=2) == 10 * bound.flops  # a faster measurement raises it
