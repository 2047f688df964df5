"""Engine throughput: continuous batching against sequential decoding and transformers'
`generate_batch` (its continuous batching), on the same Llama weights.

For each concurrency C (1, 8, 32 by default), C prompts of 16 tokens are decoded greedily for
`--new` tokens each by: our [Engine][fms_llm.inference.engine.Engine] (all C at once),
`fms_llm.generate.generate` one prompt after the other (sequential), and
`transformers`' `model.generate_batch` (when it runs on this machine). The engine's tokens are
checked equal to the sequential ones. The contenders run interleaved round by round; speed-ups
(the other's time / the engine's) are medians of per-round ratios of process CPU time with 95%
bootstrap intervals (`_timing.py`); tokens/s is from the median wall time.

    python packages/fms-llm/benchmarks/bench_engine.py [--quick] [--new 32] [--rounds N]

Goals (issue 17): at least 3x sequential at C = 8, at least 1.0x transformers.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from statistics import median
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from _timing import fmt_ci, interleave, paired_ratio, rounds_arg
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from fms_llm.generate import generate
from fms_llm.inference.engine import Engine, SamplingParams
from fms_llm.models import load_pretrained


def _hf(d: int, layers: int, heads: int, ctx: int) -> LlamaForCausalLM:
    cfg = LlamaConfig(vocab_size=2048, hidden_size=d, intermediate_size=32 * -(-8 * d // 3 // 32),
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=max(1, heads // 2), max_position_embeddings=ctx,
                      bos_token_id=0, eos_token_id=None, pad_token_id=0)  # fmt: skip
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg).eval()


def _hf_batch(hf: LlamaForCausalLM, prompts: list[list[int]], new: int) -> list[list[int]] | None:
    config = GenerationConfig(max_new_tokens=new, do_sample=False, eos_token_id=None,
                              pad_token_id=0)  # fmt: skip
    try:
        out = hf.generate_batch(prompts, generation_config=config, progress_bar=False)
    except Exception as exc:  # transformers' continuous batching may not run on this device
        print(f"  transformers generate_batch did not run here: {type(exc).__name__}: {exc}")
        return None
    return [list(o.generated_tokens) for o in out.values()]


@torch.no_grad()
def bench(conc: int, new: int, rounds: int, d: int, layers: int, with_hf: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    hf = _hf(d, layers, max(1, d // 64), ctx=16 + new + 1)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = load_pretrained(tmp).eval()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, 2048, (16,), generator=g).tolist() for _ in range(conc)]
    params = SamplingParams(max_tokens=new, temperature=0)

    def engine() -> list[list[int]]:
        return Engine(ours, block_size=16, max_num_seqs=max(conc, 1)).generate(prompts, params)

    def sequential() -> list[list[int]]:
        return [
            generate(ours, torch.tensor([p]), new, temperature=0)[0, 16:].tolist() for p in prompts
        ]

    fns: dict[str, Any] = {"engine": engine, "sequential": sequential}
    if with_hf and _hf_batch(hf, prompts[:1], 2) is not None:
        fns["hf_generate_batch"] = lambda: _hf_batch(hf, prompts, new)
    times, outs = interleave(fns, rounds)
    assert outs["engine"] == outs["sequential"], "the engine's tokens differ from sequential"
    row: dict[str, Any] = {"C": conc}
    for name in fns:
        row[f"{name}_tok_s"] = conc * new / median(times[name]["wall"])
    row["vs_sequential"] = paired_ratio(times["sequential"]["cpu"], times["engine"]["cpu"])
    if "hf_generate_batch" in fns:
        row["vs_hf"] = paired_ratio(times["hf_generate_batch"]["cpu"], times["engine"]["cpu"])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small model, 2 rounds, C = 1, 8")
    parser.add_argument("--new", type=int, default=32, help="tokens per request (32)")
    parser.add_argument("--rounds", type=rounds_arg, default=5, help="interleaved rounds (5)")
    parser.add_argument("--d-model", type=int, default=256, help="model width (256)")
    parser.add_argument("--layers", type=int, default=4, help="layers (4)")
    parser.add_argument(
        "--no-hf", action="store_true",
        help="skip transformers' generate_batch (minutes a call on a CPU)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    concs, rounds = ([1, 8], 2) if args.quick else ([1, 8, 32], args.rounds)
    d = 128 if args.quick else args.d_model
    print(f"Llama d_model={d} layers={args.layers}, 16-token prompts, {args.new} new tokens, "
          f"greedy, {rounds} rounds, 1 thread")  # fmt: skip
    print("| C | speed-up vs sequential | speed-up vs transformers generate_batch | engine tok/s | sequential tok/s | transformers tok/s |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for conc in concs:
        r = bench(conc, args.new, rounds, d, args.layers, not args.no_hf)
        vs_hf = fmt_ci(r["vs_hf"]) if "vs_hf" in r else "did not run"
        hf_tok = f"{r['hf_generate_batch_tok_s']:.0f}" if "hf_generate_batch_tok_s" in r else "-"
        print(f"| {conc} | {fmt_ci(r['vs_sequential'])} | {vs_hf} | {r['engine_tok_s']:.0f} | "
              f"{r['sequential_tok_s']:.0f} | {hf_tok} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
