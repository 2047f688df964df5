"""LoRA training step time against peft on the same model, with trainable parameters and memory.

One transformers `LlamaForCausalLM` built from a random config is adapted twice, by peft
(`LoraConfig(r, lora_alpha, target_modules=all seven projections)`) and by
[apply_lora][fms_llm.finetune.lora.apply_lora] with the same rank, scaling and targets, so only
the LoRA implementation differs. A third contender is fms-llm's own Llama with the same weights
and our LoRA: the whole fms stack. One step = forward, the mean cross-entropy of the next
tokens, backward, `torch.optim.AdamW` on the adapters. Steps are interleaved round by round and
the speed-up is the median over rounds of peft's step time / ours in process CPU time, with a
95% bootstrap interval (`_timing.py`); > 1 means ours is faster.

Also reported: trainable parameters, and the optimiser's state in bytes (AdamW's two moments
per trainable parameter, measured from the optimiser after a step) for LoRA against full
fine-tuning of the same model.

    python packages/fms-llm/benchmarks/bench_lora.py [--quick] [--rounds N] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import os
import warnings
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn.functional as F
from _timing import fmt_ci, interleave, paired_ratio, positive_int, rounds_arg
from torch import Tensor, nn

from fms_llm.finetune.lora import LoRAConfig, apply_lora, trainable_parameters
from fms_llm.models import Llama
from fms_llm.models.hf import config_from_hf, from_hf_state_dict

HF_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FMS_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "gate_proj", "up_proj", "down_proj"]


def optimizer_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes held by the optimiser's state tensors (after at least one step)."""
    return sum(
        t.numel() * t.element_size()
        for state in opt.state.values()
        for t in state.values()
        if isinstance(t, Tensor) and t.dim() > 0
    )


def make_step(
    model: nn.Module, x: Tensor, y: Tensor, logits_of: Callable[[nn.Module, Tensor], Tensor]
) -> tuple[Callable[[], float], torch.optim.Optimizer]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        logits = logits_of(model, x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step, opt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small model and 3 rounds (smoke)")
    ap.add_argument("--rounds", type=rounds_arg, default=15)
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--rank", type=positive_int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig as HFLlamaConfig
    from transformers import LlamaForCausalLM

    width, layers, batch, seq = (64, 2, 4, 32) if a.quick else (256, 4, 8, 128)
    rounds = 3 if a.quick else a.rounds
    torch.manual_seed(0)
    cfg = HFLlamaConfig(
        vocab_size=2048, hidden_size=width, intermediate_size=width * 8 // 3 // 16 * 16,
        num_hidden_layers=layers, num_attention_heads=width // 32, num_key_value_heads=width // 64,
        max_position_embeddings=seq, rope_theta=10000.0, bos_token_id=0, eos_token_id=0,
        tie_word_embeddings=False,
    )  # fmt: skip
    base = LlamaForCausalLM(cfg)
    fms = Llama(config_from_hf(cfg.to_dict()))
    fms.load_state_dict(from_hf_state_dict(fms.config, base.state_dict()))
    full = copy.deepcopy(base)  # full fine-tuning, for the memory comparison
    hf_ours = copy.deepcopy(base)
    peft_model = get_peft_model(
        copy.deepcopy(base),
        LoraConfig(r=a.rank, lora_alpha=2 * a.rank, target_modules=HF_TARGETS, lora_dropout=0.0),
    )
    apply_lora(hf_ours, LoRAConfig(r=a.rank, alpha=2 * a.rank, targets=HF_TARGETS))
    apply_lora(fms, LoRAConfig(r=a.rank, alpha=2 * a.rank, targets=FMS_TARGETS))
    for m in (peft_model, hf_ours, fms, full):
        m.train()
    ids = torch.randint(cfg.vocab_size, (batch, seq + 1))
    x, y = ids[:, :-1], ids[:, 1:]

    def hf_logits(m: nn.Module, inp: Tensor) -> Tensor:
        out: Tensor = m(input_ids=inp).logits
        return out

    def fms_logits(m: nn.Module, inp: Tensor) -> Tensor:
        out: Tensor = m(inp)
        return out

    steps = {}
    opts = {}
    steps["peft"], opts["peft"] = make_step(peft_model, x, y, hf_logits)
    steps["ours (same HF model)"], opts["ours (same HF model)"] = make_step(
        hf_ours, x, y, hf_logits
    )
    steps["ours (fms Llama)"], opts["ours (fms Llama)"] = make_step(fms, x, y, fms_logits)
    times, _ = interleave(steps, rounds, warmup=2)
    full_step, full_opt = make_step(full, x, y, hf_logits)
    full_step()

    print(
        f"LoRA r={a.rank} on all 7 projections of a Llama: width {width}, {layers} layers, "
        f"vocab {cfg.vocab_size}, batch {batch} x {seq} tokens, {a.threads} thread(s), "
        f"{rounds} interleaved rounds, torch {torch.__version__}"
    )
    print()
    print(
        "| contender | speed-up vs peft (CPU time) | step CPU s (median) | step wall s (median) |"
    )
    print("|---|---|---|---|")
    peft_cpu = times["peft"]["cpu"]
    for name, t in times.items():
        cpu = sorted(t["cpu"])[len(t["cpu"]) // 2]
        wall = sorted(t["wall"])[len(t["wall"]) // 2]
        ratio = "1 (reference)" if name == "peft" else fmt_ci(paired_ratio(peft_cpu, t["cpu"]))
        print(f"| {name} | {ratio} | {cpu:.4f} | {wall:.4f} |")
    print()
    print("| model | trainable parameters | of total | AdamW state (MiB) |")
    print("|---|---|---|---|")
    rows = [
        ("full fine-tuning", full, full_opt),
        ("peft LoRA", peft_model, opts["peft"]),
        ("ours LoRA (same HF model)", hf_ours, opts["ours (same HF model)"]),
        ("ours LoRA (fms Llama)", fms, opts["ours (fms Llama)"]),
    ]
    for name, m, opt in rows:
        n_train, n_total = trainable_parameters(m)
        mib = optimizer_bytes(opt) / 2**20
        print(f"| {name} | {n_train:,} | {n_train / n_total:.2%} | {mib:.3f} |")


if __name__ == "__main__":
    main()
