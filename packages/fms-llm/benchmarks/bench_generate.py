"""Generation speed: our cached decoding against our uncached decoding and transformers' generate.

Greedy decoding of `--new` tokens (256 by default) after a 16-token prompt, batch 1, on the same
weights (ours loaded from the transformers model's files). The tokens are checked to be identical
across the three, then the median wall time of `--repeats` runs gives tokens/s and the ratios:
cached / transformers and cached / uncached.

    python packages/fms-llm/benchmarks/bench_generate.py [--quick] [--new 256]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
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


def _time(
    fns: dict[str, Callable[[], torch.Tensor]], repeats: int
) -> dict[str, tuple[float, float, torch.Tensor]]:
    """Median wall-clock and process-CPU seconds of each function and its output.

    The functions are interleaved (A, B, C, A, B, C, ...) so that load from other processes on a
    shared machine hits them alike.
    """
    outs = {k: fn() for k, fn in fns.items()}  # warm-up
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            outs[k] = fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k]), outs[k]) for k in fns}


@torch.no_grad()
def bench(family: str, d: int, layers: int, heads: int, new: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    hf = _hf(family, d, layers, heads, ctx=16 + new)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = load_pretrained(tmp).eval()
    prompt = torch.randint(0, 2048, (1, 16))
    r = _time(
        {
            "cached": lambda: generate(ours, prompt, new, temperature=0, use_cache=True),
            "uncached": lambda: generate(ours, prompt, new, temperature=0, use_cache=False),
            "hf": lambda: hf.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                min_new_tokens=new, do_sample=False, pad_token_id=0,
            ),
        },
        repeats,
    )  # fmt: skip
    (t_cached, c_cached, a), (t_plain, c_plain, b), (t_hf, c_hf, c) = (
        r["cached"], r["uncached"], r["hf"],
    )  # fmt: skip
    same = bool(torch.equal(a, b) and torch.equal(a, c))
    return {
        "cached": new / t_cached,
        "uncached": new / t_plain,
        "hf": new / t_hf,
        "cpu_vs_hf": c_hf / c_cached,
        "cpu_vs_uncached": c_plain / c_cached,
        "same": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller model, fewer repeats")
    parser.add_argument("--new", type=int, default=256, help="new tokens")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else 5
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, "
          f"greedy, batch 1, 16-token prompt, {args.new} new tokens\n")  # fmt: skip
    print("| model | d x layers | cached tok/s | uncached tok/s | transformers tok/s | "
          "cached / transformers (wall, CPU) | cached / uncached (wall, CPU) | same tokens |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    shapes = [(128, 4, 4)] if args.quick else [(256, 6, 8)]
    for family, (d, layers, heads) in [(f, s) for s in shapes for f in ("gpt", "llama")]:
        r = bench(family, d, layers, heads, args.new, repeats)
        name = "GPT-2" if family == "gpt" else "Llama (GQA)"
        print(
            f"| {name} | {d} x {layers} | {r['cached']:,.0f} | {r['uncached']:,.0f} | "
            f"{r['hf']:,.0f} | {r['cached'] / r['hf']:.2f}x, {r['cpu_vs_hf']:.2f}x | "
            f"{r['cached'] / r['uncached']:.2f}x, {r['cpu_vs_uncached']:.2f}x | "
            f"{'yes' if r['same'] else 'NO'} |"
        )


if __name__ == "__main__":
    main()
