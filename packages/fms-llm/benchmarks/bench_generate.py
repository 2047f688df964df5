"""Generation speed: our cached decoding against our uncached decoding and transformers' generate.

Greedy decoding of `--new` tokens (256 by default) after a 16-token prompt, batch 1, on the same
weights (ours loaded from the transformers model's files). The tokens are checked to be identical
across the three. The three run interleaved, round by round; the median wall time gives tokens/s,
and the speed-ups (transformers' time / our cached time, uncached / cached) are medians over
rounds of the per-round ratio of process CPU times, with 95% bootstrap intervals (`_timing.py`).

    python packages/fms-llm/benchmarks/bench_generate.py [--quick] [--new 256] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from statistics import median

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from _timing import fmt_ci, interleave, paired_ratio, rounds_arg
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from fms_llm.generate import generate
from fms_llm.models import load_pretrained


def _hf(family: str, d: int, layers: int, heads: int, ctx: int) -> torch.nn.Module:
    if family == "gpt":
        cfg = GPT2Config(vocab_size=2048, n_positions=ctx, n_embd=d, n_layer=layers, n_head=heads,
                         bos_token_id=0, eos_token_id=0)  # fmt: skip
        cfg._attn_implementation = "sdpa"
        return GPT2LMHeadModel(cfg).eval()
    cfg = LlamaConfig(vocab_size=2048, hidden_size=d, intermediate_size=32 * -(-8 * d // 3 // 32),
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=max(1, heads // 2), max_position_embeddings=ctx,
                      bos_token_id=0, eos_token_id=0)  # fmt: skip
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg).eval()


@torch.no_grad()
def bench(
    family: str, d: int, layers: int, heads: int, new: int, repeats: int
) -> dict[str, object]:
    torch.manual_seed(0)
    hf = _hf(family, d, layers, heads, ctx=16 + new)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = load_pretrained(tmp).eval()
    prompt = torch.randint(0, 2048, (1, 16))
    times, outs = interleave(
        {
            "cached": lambda: generate(ours, prompt, new, temperature=0, use_cache=True),
            "uncached": lambda: generate(ours, prompt, new, temperature=0, use_cache=False),
            "hf": lambda: hf.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                min_new_tokens=new, do_sample=False, pad_token_id=0,
            ),
        },
        rounds=repeats,
    )  # fmt: skip
    a, b, c = outs["cached"], outs["uncached"], outs["hf"]
    same = bool(torch.equal(a, b) and torch.equal(a, c))
    return {
        "cached": new / median(times["cached"]["wall"]),
        "uncached": new / median(times["uncached"]["wall"]),
        "hf": new / median(times["hf"]["wall"]),
        "vs_hf": paired_ratio(times["hf"]["cpu"], times["cached"]["cpu"]),
        "vs_uncached": paired_ratio(times["uncached"]["cpu"], times["cached"]["cpu"]),
        "same": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller model, fewer repeats")
    parser.add_argument("--new", type=int, default=256, help="new tokens")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=rounds_arg, default=None, help="timed rounds per model")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.rounds or (12 if args.quick else 10)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, "
          f"greedy, batch 1, 16-token prompt, {args.new} new tokens, {repeats} rounds\n")  # fmt: skip
    print("| model | d x layers | vs transformers [95% CI] | vs uncached [95% CI] | "
          "cached tok/s | uncached tok/s | transformers tok/s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    shapes = [(128, 4, 4)] if args.quick else [(256, 6, 8)]
    for family, (d, layers, heads) in [(f, s) for s in shapes for f in ("gpt", "llama")]:
        r = bench(family, d, layers, heads, args.new, repeats)
        name = "GPT-2" if family == "gpt" else "Llama (GQA)"
        print(
            f"| {name} | {d} x {layers} | {fmt_ci(r['vs_hf'])} | "  # type: ignore[arg-type]
            f"{fmt_ci(r['vs_uncached'])} | {r['cached']:,.0f} | {r['uncached']:,.0f} | "  # type: ignore[arg-type]
            f"{r['hf']:,.0f} |",
            flush=True,
        )
        if not r["same"]:
            print(f"  ({name}: NOT the same tokens from the three decoders)", flush=True)


if __name__ == "__main__":
    main()
