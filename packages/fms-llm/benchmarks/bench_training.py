"""Training throughput: fms-llm's GPT and Llama against transformers' models of the same config.

For each shape, both models get the same weights (ours are loaded from the transformers model's
saved files), the same batch of random token ids, the same loss (mean next-token cross-entropy on
the logits, computed outside the model) and the same optimiser (`torch.optim.AdamW`, foreach), so
only the models differ. One training step = forward, backward, optimiser step. Steps of the two
models are interleaved (A, B, A, B, ...) so that load from other processes hits both alike; the
table reports the median wall-clock step time as tokens/s, the ratio ours / transformers, and the
same ratio in process CPU time (robust on a shared machine, exact with `--threads 1`).

    python packages/fms-llm/benchmarks/bench_training.py [--quick] [--threads N]
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
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from fms_llm.models import load_pretrained


def _hf_model(
    family: str, vocab: int, d: int, layers: int, heads: int, seq: int
) -> torch.nn.Module:
    if family == "gpt":
        cfg = GPT2Config(
            vocab_size=vocab, n_positions=seq, n_embd=d, n_layer=layers, n_head=heads,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
        )  # fmt: skip
        cfg._attn_implementation = "sdpa"
        return GPT2LMHeadModel(cfg)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=d, intermediate_size=32 * -(-8 * d // 3 // 32),
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=seq, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg)


def _step_fn(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, hf: bool
) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)

    def step() -> None:
        logits = model(x).logits if hf else model(x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench(family: str, vocab: int, d: int, layers: int, heads: int, batch: int, seq: int,
          steps: int) -> dict[str, float]:  # fmt: skip
    torch.manual_seed(0)
    hf = _hf_model(family, vocab, d, layers, heads, seq).train()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = load_pretrained(tmp).train()
    x = torch.randint(0, vocab, (batch, seq))
    y = torch.randint(0, vocab, (batch, seq))
    fns = {"ours": _step_fn(ours, x, y, hf=False), "hf": _step_fn(hf, x, y, hf=True)}
    for fn in fns.values():  # warm-up
        fn()
        fn()
    times: dict[str, list[float]] = {"ours": [], "hf": []}
    cpu: dict[str, list[float]] = {"ours": [], "hf": []}
    for _ in range(steps):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    tokens = batch * seq
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    return {
        "ours_tok_s": tokens / med["ours"],
        "hf_tok_s": tokens / med["hf"],
        "ratio": med["hf"] / med["ours"],
        "cpu_ratio": med_cpu["hf"] / med_cpu["ours"],
        "params": sum(p.numel() for p in ours.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few steps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        shapes = [("gpt", 2048, 128, 4, 4, 8, 128, 10), ("llama", 2048, 128, 4, 4, 8, 128, 10)]
    else:
        shapes = [("gpt", 8192, 256, 6, 8, 8, 256, 20), ("llama", 8192, 256, 6, 8, 8, 256, 20)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU\n")
    print(
        "| model | d x layers | batch x seq | params | ours tok/s | transformers tok/s | "
        "ratio (wall) | ratio (CPU time) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for family, vocab, d, layers, heads, batch, seq, steps in shapes:
        r = bench(family, vocab, d, layers, heads, batch, seq, steps)
        name = "GPT-2" if family == "gpt" else "Llama (GQA)"
        print(
            f"| {name} | {d} x {layers} | {batch} x {seq} | {r['params'] / 1e6:.2f}M | "
            f"{r['ours_tok_s']:,.0f} | {r['hf_tok_s']:,.0f} | {r['ratio']:.2f}x | "
            f"{r['cpu_ratio']:.2f}x |"
        )


if __name__ == "__main__":
    main()
