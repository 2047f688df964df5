"""What the special-token check and the regex time budget cost on normal encoding (issue 15).

    python packages/fms-llm/benchmarks/tokenizer/bench_pattern_guard.py [--rounds 7] [--mb 1]

`encode` now refuses disallowed special-token text by default (tiktoken's rule, which tiktoken
pays too), and a custom pattern runs under the `regex` module's `timeout`. On the King James
Bible (chapter documents, `--mb` megabytes, a 2,000-token vocabulary, warm pre-token cache, one
thread), interleaved rounds measure, in CPU time:

- `encode` (the default check) against `encode_ordinary` (no check: the old path on text with no
  special tokens), and tiktoken's `encode` against ours (the benchmark page's ratio);
- a custom pattern (GPT-2's with a never-matching alternative, so it is not recognised as the
  built-in) with the time budget against the same pattern with `pattern_timeout=None`.

Prints speed-ups (reference time / our time, >1: ours faster) with 95% bootstrap intervals.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _timing import fmt_ci, interleave, paired_ratio, rounds_arg
from bench_tokenizer import kjv_documents

from fms_llm.tokenizer import GPT2_PATTERN, BPETokenizer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rounds", type=rounds_arg, default=7, help="interleaved rounds")
    parser.add_argument("--mb", type=float, default=1.0, help="megabytes of text")
    args = parser.parse_args()
    torch.set_num_threads(1)
    docs = kjv_documents(int(args.mb * 1e6))
    tok = BPETokenizer.train(docs, 2000, ["<|endoftext|>"], progress=False, num_workers=1)
    enc = tok.to_tiktoken()
    custom = GPT2_PATTERN + "|(?!x)x"
    timed = BPETokenizer(tok.vocab, tok.merges, list(tok.special_tokens), pattern=custom)
    untimed = BPETokenizer(
        tok.vocab, tok.merges, list(tok.special_tokens), pattern=custom, pattern_timeout=None
    )
    expected = [enc.encode(d) for d in docs]
    for t in (tok, timed, untimed):
        assert [t.encode(d) for d in docs] == expected, "a contender disagrees with tiktoken"
    fns = {
        "tiktoken encode": lambda: [enc.encode(d) for d in docs],
        "ours encode": lambda: [tok.encode(d) for d in docs],
        "ours encode_ordinary": lambda: [tok.encode_ordinary(d) for d in docs],
        "custom pattern, timed": lambda: [timed.encode(d) for d in docs],
        "custom pattern, untimed": lambda: [untimed.encode(d) for d in docs],
    }
    times, _ = interleave(fns, args.rounds)
    cpu = {k: v["cpu"] for k, v in times.items()}
    mb = sum(len(d.encode()) for d in docs) / 1e6
    print(
        f"{mb:.2f} MB, {len(docs)} documents, {args.rounds} rounds, {platform.processor() or platform.machine()}"
    )
    print("| comparison | speed-up [95% CI] |\n|---|---|")
    print(
        f"| tiktoken encode / ours encode | {fmt_ci(paired_ratio(cpu['tiktoken encode'], cpu['ours encode']))} |"
    )
    print(
        f"| ours encode_ordinary / ours encode (the special check) | {fmt_ci(paired_ratio(cpu['ours encode_ordinary'], cpu['ours encode']))} |"
    )
    print(
        f"| untimed / timed custom pattern (the regex budget) | {fmt_ci(paired_ratio(cpu['custom pattern, untimed'], cpu['custom pattern, timed']))} |"
    )
    for name, values in cpu.items():
        print(f"  {name}: median {sorted(values)[len(values) // 2] * 1e3:.1f} ms CPU")


if __name__ == "__main__":
    main()
