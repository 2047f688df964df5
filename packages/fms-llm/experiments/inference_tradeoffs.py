"""Two trade-offs of serving, measured through the continuous-batching engine: speculative
decoding's speed-up against the draft's acceptance rate (alone and with 8 requests in the batch),
and throughput against the number of concurrent requests.

For each seed a byte-level Llama target (128 x 6, `--steps` steps) and a draft (64 x 1, trained
twice as many steps and saved after 1/20, 1/5 and all of them: three qualities) are trained on the synthetic stories
(`benchmarks/_story_lm.py`; the seed sets the initialisations and the batches). Prompts are the
first 48 bytes of held-out stories (a different set per seed); decoding is greedy.

1. **Speculative decoding.** `Engine(target)` against `Engine(target, draft=..., k)` on the same
   1 or 8 prompts, `--new` tokens each, interleaved round by round (`benchmarks/_timing.py`);
   the speed-up is the median over rounds of plain / speculative process CPU time, the acceptance
   rate the engine's accepted / proposed draft tokens, and a request gains
   1 + accepted / rounds tokens per target pass. Both engines must give the same tokens
   (checked).
2. **Concurrency.** `c` prompts at once through `Engine(target)` (and with the best draft)
   against `fms_llm.generate.generate` on each prompt in turn: generated tokens per CPU second.

Per seed one figure per cell; the table and the figure give the mean over seeds with a 95%
Student-t interval ([fms_ml.experiment.t_ci][]). Prefix caching is off, so every round computes
its prompts. One thread.

    python packages/fms-llm/experiments/inference_tradeoffs.py [--seeds 3] [--rounds 3]

Writes `docs/figures/fms-llm/inference_tradeoffs.png` and `inference_tradeoffs.json`. The run in
the inference chapter (`--rounds 2 --new 32 --steps 120 --concurrency 1 4 16`) took 166 s of
CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from _story_lm import story_bytes, train_llama
from _timing import interleave, positive_int, rounds_arg

from fms_llm.generate import generate
from fms_llm.inference import Engine, SamplingParams
from fms_ml.experiment import t_ci

ROOT = Path(__file__).resolve().parents[3]
FIGURES = ROOT / "docs" / "figures" / "fms-llm"


def _engine(target: torch.nn.Module, draft: torch.nn.Module | None, k: int) -> Engine:
    return Engine(target, max_num_seqs=32, prefix_caching=False, draft=draft,
                  num_speculative_tokens=k)  # fmt: skip


def one_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    docs = story_bytes(2000)
    target, _ = train_llama(128, 6, docs, args.steps, seed=seed)
    draft_steps = 2 * args.steps
    points = (draft_steps // 20, draft_steps // 5, draft_steps)
    draft, snaps = train_llama(64, 1, docs, draft_steps, seed=100 + seed, snapshots=points)
    stories = story_bytes(max(args.concurrency), start=10_000 + 1000 * seed)
    prompts = [list(s[:48]) for s in stories]
    greedy = SamplingParams(max_tokens=args.new, temperature=0)
    spec: list[dict[str, Any]] = []
    for step in points:
        draft.load_state_dict(snaps[step])
        for c in (1, 8):
            batch = prompts[:c]
            plain_engine, spec_engine = _engine(target, None, 1), _engine(target, draft, args.k)
            times, outs = interleave(
                {"plain": lambda e=plain_engine, b=batch: e.generate(b, greedy),
                 "spec": lambda e=spec_engine, b=batch: e.generate(b, greedy)},
                args.rounds,
            )  # fmt: skip
            assert outs["plain"] == outs["spec"], "speculative output differs from the target's"
            ratios = np.asarray(times["plain"]["cpu"]) / np.asarray(times["spec"]["cpu"])
            s = spec_engine.stats
            spec.append({"draft_steps": step, "concurrency": c,
                         "speedup": float(np.median(ratios)),
                         "acceptance": s.acceptance_rate,
                         "tokens_per_target_pass": 1 + s.accepted_tokens / max(s.speculative_rounds, 1)})  # fmt: skip
            print(f"  seed {seed} draft {step} c={c}: speed-up {spec[-1]['speedup']:.2f}x, "
                  f"acceptance {s.acceptance_rate:.2f}", flush=True)  # fmt: skip
    draft.load_state_dict(snaps[draft_steps])
    conc: list[dict[str, Any]] = []
    for c in args.concurrency:
        batch = prompts[:c]
        engine, spec_engine = _engine(target, None, 1), _engine(target, draft, args.k)
        fns = {
            "sequential": lambda b=batch: [
                generate(target, torch.tensor([p]), args.new, temperature=0) for p in b
            ],
            "engine": lambda e=engine, b=batch: e.generate(b, greedy),
            "engine+draft": lambda e=spec_engine, b=batch: e.generate(b, greedy),
        }
        times, _ = interleave(fns, args.rounds)
        tps = {n: float(np.median(c * args.new / np.asarray(t["cpu"]))) for n, t in times.items()}
        conc.append({"concurrency": c, "tokens_per_cpu_second": tps})
        print(f"  seed {seed} c={c}: " + ", ".join(f"{n} {v:,.0f} tok/s" for n, v in tps.items()),
              flush=True)  # fmt: skip
    return {"seed": seed, "speculative": spec, "concurrency": conc}


def _ci(values: list[float]) -> list[float]:
    ci = t_ci(values)
    return [ci.estimate, ci.low, ci.high]


def summarise(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    spec_rows = []
    for i, row in enumerate(runs[0]["speculative"]):
        cells = [r["speculative"][i] for r in runs]
        spec_rows.append({"draft_steps": row["draft_steps"], "concurrency": row["concurrency"],
                          **{key: _ci([c[key] for c in cells])
                             for key in ("speedup", "acceptance", "tokens_per_target_pass")}})  # fmt: skip
    conc_rows = []
    for i, row in enumerate(runs[0]["concurrency"]):
        cells = [r["concurrency"][i]["tokens_per_cpu_second"] for r in runs]
        out: dict[str, Any] = {"concurrency": row["concurrency"]}
        for name in cells[0]:
            out[name] = _ci([c[name] for c in cells])
        out["engine_vs_sequential"] = _ci([c["engine"] / c["sequential"] for c in cells])
        out["draft_vs_engine"] = _ci([c["engine+draft"] / c["engine"] for c in cells])
        conc_rows.append(out)
    return {"speculative": spec_rows, "concurrency": conc_rows}


def figure(summary: dict[str, Any], path: Path, k: int) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for c, marker in ((1, "o"), (8, "s")):
        rows = [r for r in summary["speculative"] if r["concurrency"] == c]
        x = np.array([r["acceptance"] for r in rows])
        y = np.array([r["speedup"] for r in rows])
        left.errorbar(x[:, 0], y[:, 0], xerr=[x[:, 0] - x[:, 1], x[:, 2] - x[:, 0]],
                      yerr=[y[:, 0] - y[:, 1], y[:, 2] - y[:, 0]], marker=marker, capsize=3,
                      label=f"{c} request{'s' if c > 1 else ''} in the batch")  # fmt: skip
    left.axhline(1.0, color="grey", lw=0.8, ls="--")
    left.set_xlabel("acceptance rate (accepted / proposed drafts)")
    left.set_ylabel(f"speed-up over the target alone (k = {k})")
    left.set_title("Speculative decoding in the engine")
    left.legend()
    rows = summary["concurrency"]
    cs = [r["concurrency"] for r in rows]
    for name in ("sequential", "engine", "engine+draft"):
        v = np.array([r[name] for r in rows])
        right.errorbar(cs, v[:, 0], yerr=[v[:, 0] - v[:, 1], v[:, 2] - v[:, 0]], marker="o",
                       capsize=3, label=name)  # fmt: skip
    right.set_xscale("log", base=2)
    right.set_xlabel("concurrent requests")
    right.set_ylabel("generated tokens per CPU second")
    right.set_title("Throughput against concurrency")
    right.legend()
    fig.suptitle("mean over seeds, 95% t intervals; 1 thread, shared 2-core CPU", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=rounds_arg, default=3, help="training seeds (>= 2)")
    parser.add_argument("--rounds", type=positive_int, default=3, help="timed rounds per cell")
    parser.add_argument("--new", type=positive_int, default=48, help="new tokens per request")
    parser.add_argument("--k", type=positive_int, default=4, help="draft tokens per round")
    parser.add_argument("--steps", type=positive_int, default=200, help="target training steps")
    parser.add_argument("--concurrency", type=positive_int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--out", type=Path, default=FIGURES)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    runs = []
    for seed in range(args.seeds):
        runs.append(one_seed(seed, args))
    summary = summarise(runs, args)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "seeds": args.seeds, "rounds": args.rounds,
            "new": args.new, "k": args.k, "steps": args.steps, "cpu_seconds": cpu,
            "wall_seconds": wall, "load_average": os.getloadavg()[0]}  # fmt: skip
    (args.out / "inference_tradeoffs.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2) + "\n"
    )
    figure(summary, args.out / "inference_tradeoffs.png", args.k)

    def f(v: list[float], unit: str = "x") -> str:
        return f"{v[0]:.2f}{unit} [{v[1]:.2f}, {v[2]:.2f}]"

    print(f"\n{args.seeds} seeds, {args.rounds} rounds, {args.new} tokens, k={args.k}; "
          f"{cpu:.0f} s CPU, {wall:.0f} s wall, load average {meta['load_average']:.1f}")  # fmt: skip
    print(
        "| draft steps | requests | acceptance [95% CI] | speed-up [95% CI] | tokens per target pass |"
    )
    print("| --- | --- | --- | --- | --- |")
    for r in summary["speculative"]:
        print(f"| {r['draft_steps']} | {r['concurrency']} | {f(r['acceptance'], '')} | "
              f"{f(r['speedup'])} | {r['tokens_per_target_pass'][0]:.2f} |")  # fmt: skip
    print(
        "\n| requests | sequential tok/s | engine tok/s | engine+draft tok/s | engine / sequential | draft / engine |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for r in summary["concurrency"]:
        print(f"| {r['concurrency']} | {r['sequential'][0]:,.0f} | {r['engine'][0]:,.0f} | "
              f"{r['engine+draft'][0]:,.0f} | {f(r['engine_vs_sequential'])} | "
              f"{f(r['draft_vs_engine'])} |")  # fmt: skip


if __name__ == "__main__":
    main()
