"""Training throughput: fms-llm's GPT and Llama against transformers' models of the same config.

For each shape both models get the same weights (ours are loaded from the transformers model's
saved files), the same batch of random token ids and the same optimiser,
`torch.optim.AdamW(fused=True)` (the default of transformers' `Trainer`), so only the models
differ. One training step = forward, loss, backward, optimiser step, with the loss computed two
ways:

- **own**: each library's own training call, `model(x, y)` for ours (the head and the
  cross-entropy fused, [fms_llm.models.fused.linear_cross_entropy][]) and
  `model(x, labels=y, shift_labels=y).loss` for transformers (logits, then its
  `ForCausalLMLoss`); the same mean cross-entropy of the same targets;
- **shared**: both return logits and one `F.cross_entropy` follows, isolating the network.

Steps of the two models are interleaved round by round, and the speed-up is the median over
rounds of transformers' step time / ours in process CPU time, with a 95% bootstrap interval
(`_timing.py`). On a GPU (`--device cuda`) the ratio is of wall time (each step ends with a
synchronisation), `--precision bf16` runs both models under bf16 autocast, and the table adds
model FLOPs utilisation (MFU, against the datasheet bf16 peak of the GPU,
[fms_llm.train.pretrain.estimate_peak_flops][]). `--size` picks the shapes: `quick` and `default`
(the `tiny` and `small` presets' widths), `medium` (width 512, 8 layers, Llama 2's vocabulary of
32,000) and `gpt2` (GPT-2 small: width 768, 12 layers, 50,257 tokens, 8 x 1024 per batch);
`--family` runs one of the two models. Our Llama trains with fms-llm's C kernels for RMSNorm,
RoPE and SwiGLU where they build ([fms_llm.models.cpu_kernels][]; `FMS_LLM_CPU_KERNELS=0` runs
PyTorch's path instead); the header says which. `--compile`
wraps each library's forward and loss in `torch.compile` (both sides; the first calls, which
compile, are warm-up and not timed).

    python packages/fms-llm/benchmarks/bench_training.py [--quick] [--threads N] [--steps N]
        [--device cpu|cuda] [--precision fp32|bf16] [--size quick|default|medium|gpt2]
        [--family gpt|llama|both] [--compile]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from statistics import median

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import contextlib

import torch
import torch.nn.functional as F
from _timing import fmt_ci, interleave, paired_ratio, rounds_arg
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from fms_llm.models import cpu_kernels, load_pretrained
from fms_llm.train.pretrain import estimate_peak_flops

SHAPES = {  # family, vocab, d, layers, heads, batch, seq, rounds
    "quick": [("gpt", 2048, 128, 4, 4, 8, 128, 20), ("llama", 2048, 128, 4, 4, 8, 128, 20)],
    "default": [("gpt", 8192, 256, 6, 8, 8, 256, 20), ("llama", 8192, 256, 6, 8, 8, 256, 20)],
    "medium": [("gpt", 32000, 512, 8, 8, 8, 512, 10), ("llama", 32000, 512, 8, 8, 8, 512, 10)],
    "gpt2": [("gpt", 50257, 768, 12, 12, 8, 1024, 20), ("llama", 50257, 768, 12, 12, 8, 1024, 20)],
}


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


def _model_pair(
    family: str, vocab: int, d: int, layers: int, heads: int, seq: int
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """`(ours, transformers')` in training mode: transformers' model with seeded random weights,
    and ours loaded from the files it saved (the same weights)."""
    torch.manual_seed(0)
    hf = _hf_model(family, vocab, d, layers, heads, seq).train()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = load_pretrained(tmp).train()
    return ours, hf


def _step_fn(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    hf: bool,
    own_loss: bool,
    bf16: bool,
    compiled: bool = False,
) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    device = x.device

    def forward_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if own_loss:  # each library's own training call
            loss: torch.Tensor = model(x, labels=y, shift_labels=y).loss if hf else model(x, y)
            return loss
        logits = model(x).logits if hf else model(x)  # logits out, one shared loss
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())

    forward = torch.compile(forward_loss) if compiled else forward_loss

    def step() -> None:
        autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        )
        with autocast:
            loss = forward(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def bench(family: str, vocab: int, d: int, layers: int, heads: int, batch: int, seq: int,
          steps: int, own_loss: bool, device: torch.device, bf16: bool,
          compiled: bool = False) -> dict[str, object]:  # fmt: skip
    ours, hf = _model_pair(family, vocab, d, layers, heads, seq)
    ours, hf = ours.to(device), hf.to(device)
    x = torch.randint(0, vocab, (batch, seq), device=device)
    y = torch.randint(0, vocab, (batch, seq), device=device)
    times, _ = interleave(
        {
            "ours": _step_fn(ours, x, y, hf=False, own_loss=own_loss, bf16=bf16, compiled=compiled),
            "hf": _step_fn(hf, x, y, hf=True, own_loss=own_loss, bf16=bf16, compiled=compiled),
        },
        rounds=steps,
        warmup=3 if compiled else 2,  # compiling happens in the first calls
    )
    tokens = batch * seq
    clock = "cpu" if device.type == "cpu" else "wall"  # CPU time says nothing of a GPU's work
    return {
        "ours_tok_s": tokens / median(times["ours"]["wall"]),
        "hf_tok_s": tokens / median(times["hf"]["wall"]),
        "speedup": paired_ratio(times["hf"][clock], times["ours"][clock]),
        "params": sum(p.numel() for p in ours.parameters()),
        "flops_per_token": ours.flops_per_token(seq),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the same as --size quick")
    parser.add_argument("--size", choices=sorted(SHAPES), default="default", help="model shapes")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--steps", type=rounds_arg, default=None, help="timed rounds per shape")
    parser.add_argument(
        "--family", choices=("gpt", "llama", "both"), default="both", help="which models to run"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument(
        "--loss", choices=("own", "shared", "both"), default="both",
        help="own: each library's training call; shared: logits out, one F.cross_entropy",
    )  # fmt: skip
    parser.add_argument(
        "--compile", action="store_true",
        help="torch.compile each library's forward and loss (both sides; compiling is not timed)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    shapes = SHAPES["quick" if args.quick else args.size]
    modes = {"own": [True], "shared": [False], "both": [True, False]}[args.loss]
    peak = estimate_peak_flops(device) if gpu else None
    where = torch.cuda.get_device_name(device) if gpu else "CPU"
    clock = "wall" if gpu else "CPU time"
    print(
        f"torch {torch.__version__}, {where}, {torch.get_num_threads()} threads, {args.precision}"
        + (", torch.compile" if args.compile else "")
        + f"\nfms-llm CPU kernels (FMS_LLM_CPU_KERNELS): {cpu_kernels.status()}\n"
    )
    print(
        "| model | loss | d x layers | batch x seq | params | ours tok/s | transformers tok/s | "
        f"speed-up, {clock} [95% CI] |" + (" MFU ours | MFU transformers |" if gpu else "")
    )
    print("| --- " * (10 if gpu else 8) + "|")
    for family, vocab, d, layers, heads, batch, seq, steps in shapes:
        if args.family not in ("both", family):
            continue
        for own_loss in modes:
            r = bench(family, vocab, d, layers, heads, batch, seq, args.steps or steps, own_loss,
                      device, args.precision == "bf16", args.compile)  # fmt: skip
            name = "GPT-2" if family == "gpt" else "Llama (GQA)"
            row = (
                f"| {name} | {'own' if own_loss else 'shared'} | {d} x {layers} | {batch} x {seq} "
                f"| {r['params'] / 1e6:.2f}M | {r['ours_tok_s']:,.0f} | {r['hf_tok_s']:,.0f} | "  # type: ignore[operator]
                f"{fmt_ci(r['speedup'])} |"  # type: ignore[arg-type]
            )
            if peak is not None:
                fpt = float(r["flops_per_token"])  # type: ignore[arg-type]
                row += (
                    f" {fpt * float(r['ours_tok_s']) / peak:.1%} |"  # type: ignore[arg-type]
                    f" {fpt * float(r['hf_tok_s']) / peak:.1%} |"  # type: ignore[arg-type]
                )
            print(row, flush=True)


if __name__ == "__main__":
    main()
