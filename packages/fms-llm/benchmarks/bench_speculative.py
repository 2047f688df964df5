"""Speculative decoding against plain decoding of the same target: speed-up and acceptance.

A byte-level Llama target (`--target-d` x `--target-layers`) and a small draft (`--draft-d` x
`--draft-layers`) are trained here on the synthetic stories (`_story_lm.py`), the draft saved at
several points of its training so that drafts of several qualities give the curve of speed-up
against acceptance. Greedy decoding of `--new` bytes after a held-out story's first 48 bytes:
`fms_llm.generate.generate(target)` and `SpeculativeDecoder(target, draft, k).generate`, checked
to give the same tokens, interleaved round by round (`_timing.py`). The speed-up is plain time /
speculative time, the median over rounds of the per-round ratio of process CPU times with a 95%
bootstrap interval; acceptance is accepted / proposed draft tokens over all rounds.

    python packages/fms-llm/benchmarks/bench_speculative.py [--quick] [--rounds 5] [--k 3 5]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from _story_lm import story_bytes, train_llama
from _timing import fmt_ci, interleave, paired_ratio, positive_int, rounds_arg

from fms_llm.generate import generate
from fms_llm.inference.speculative import SpeculativeDecoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller models, fewer steps")
    parser.add_argument("--rounds", type=rounds_arg, default=5, help="timed rounds")
    parser.add_argument("--new", type=positive_int, default=128, help="new tokens per prompt")
    parser.add_argument("--k", type=positive_int, nargs="+", default=[3, 5])
    parser.add_argument("--target-d", type=positive_int, default=128)
    parser.add_argument("--target-layers", type=positive_int, default=6)
    parser.add_argument("--draft-d", type=positive_int, default=64)
    parser.add_argument("--draft-layers", type=positive_int, default=1)
    parser.add_argument("--steps", type=positive_int, default=200, help="target training steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.target_d, args.target_layers, args.steps, args.new = 64, 2, 40, 32
    docs = story_bytes(2000)
    target, _ = train_llama(args.target_d, args.target_layers, docs, args.steps, seed=0)
    draft_steps = args.steps * 2
    checkpoints = (draft_steps // 20, draft_steps // 5, draft_steps)
    draft, snaps = train_llama(args.draft_d, args.draft_layers, docs, draft_steps, seed=1,
                               snapshots=checkpoints)  # fmt: skip
    prompt = torch.tensor([list(story_bytes(1, start=10_000)[0][:48])])
    print(f"torch {torch.__version__}, 1 thread, CPU; target {args.target_d} x "
          f"{args.target_layers}, draft {args.draft_d} x {args.draft_layers}, {args.new} new "
          f"tokens, greedy, {args.rounds} rounds")  # fmt: skip
    print("| draft steps | k | speed-up [95% CI] | acceptance | tokens per target pass | "
          "plain tok/s | speculative tok/s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for step in checkpoints:
        draft.load_state_dict(snaps[step])
        for k in args.k:
            decoder = SpeculativeDecoder(target, draft, k=k)
            times, outs = interleave(
                {
                    "plain": lambda: generate(target, prompt, args.new, temperature=0),
                    "spec": lambda d=decoder: d.generate(prompt, args.new, temperature=0),
                },
                args.rounds,
            )
            plain = outs["plain"][0, prompt.shape[1] :].tolist()
            spec, stats = outs["spec"]
            same = "" if plain == spec else " (NOT the same tokens)"
            r = paired_ratio(times["plain"]["cpu"], times["spec"]["cpu"])
            tps = [args.new / min(times[n]["wall"]) for n in ("plain", "spec")]
            print(f"| {step} | {k} | {fmt_ci(r)} | {stats.acceptance_rate:.2f} | "
                  f"{stats.tokens_per_round:.2f} | {tps[0]:,.0f} | {tps[1]:,.0f} |{same}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
