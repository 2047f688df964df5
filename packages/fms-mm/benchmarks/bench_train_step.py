"""Training step: fms-mm's ViT and CLIP against transformers' models of the same config.

For each shape both models get the same weights (ours loaded from the files transformers' model
saved), the same batch and the same optimiser (`torch.optim.AdamW`, its default foreach path),
so only the models differ. One step = forward, loss, backward, optimiser step:

- **ViT**: our `ViT.logits` against `ViTForImageClassification(...).logits`, one shared
  `F.cross_entropy` on the class token's logits;
- **CLIP**: each library's own contrastive loss, `CLIP(..., return_loss=True).loss` against
  `CLIPModel(..., return_loss=True).loss` (the same symmetric InfoNCE of the same logits), on
  images and right-padded captions with their attention mask.

Steps of the two models are interleaved round by round (ours, then transformers', then ours...),
so a slow minute of a shared machine slows both alike, and the speed-up is the median over
rounds of transformers' step time / ours in process CPU time (which time-sharing does not
inflate), with a 95% percentile-bootstrap interval ([fms_ml.experiment.bootstrap_ci][]). Shapes:
`recipe` are the ones `fms-mm train vit` and `fms-mm train clip` use (8x8 digits in 2x2 patches;
32x32 scenes with 12-token captions); `larger` widens them (ViT on 32x32 RGB in 4x4 patches,
width 192, 6 blocks; CLIP towers of width 128 with 4 blocks).

    python packages/fms-mm/benchmarks/bench_train_step.py [--quick] [--threads N] [--rounds N]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
import transformers

from fms_ml.experiment import bootstrap_ci
from fms_mm.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from fms_mm.vision import ViT, ViTConfig

VIT_SHAPES = {  # name: (ViTConfig fields, batch)
    "recipe": (
        {"image_size": 8, "patch_size": 2, "num_channels": 1, "hidden_size": 64,
         "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 128},
        64,
    ),
    "larger": (
        {"image_size": 32, "patch_size": 4, "num_channels": 3, "hidden_size": 192,
         "num_hidden_layers": 6, "num_attention_heads": 3, "intermediate_size": 768},
        32,
    ),
}  # fmt: skip
CLIP_SHAPES = {  # name: (tower width, MLP, blocks, heads, image, patch, context, batch)
    "recipe": (64, 128, 3, 4, 32, 4, 12, 128),
    "larger": (128, 512, 4, 4, 32, 4, 16, 64),
}


def interleave(fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 2) -> dict[str, Any]:
    """`warmup` untimed calls of each, then `rounds` rounds in which each runs once, in turn;
    returns `{name: {"cpu": [...], "wall": [...]}}` in seconds, one entry a round."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, Any] = {name: {"cpu": [], "wall": []} for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name]["wall"].append(time.perf_counter() - t0)
            times[name]["cpu"].append(time.process_time() - c0)
    return times


def paired_ratio(reference: list[float], ours: list[float]) -> tuple[float, float, float]:
    """Median over rounds of reference / ours (the speed-up) with its 95% bootstrap interval."""
    ratios = np.asarray(reference) / np.asarray(ours)
    ci = bootstrap_ci(ratios, np.median, n_resamples=2000, random_state=0)
    return ci.estimate, ci.low, ci.high


def _step(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def vit_pair(shape: str) -> tuple[dict[str, Callable[[], None]], dict[str, Any]]:
    """Step functions of our ViT and transformers' `ViTForImageClassification`, same weights."""
    fields, batch = VIT_SHAPES[shape]
    torch.manual_seed(0)
    hf_cfg = transformers.ViTConfig(
        **fields, num_labels=10, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    hf = transformers.ViTForImageClassification(hf_cfg).train()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = ViT.from_pretrained(tmp).train()
    assert ours.config == ViTConfig(**fields, num_labels=10), "config did not round-trip"
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, fields["num_channels"], fields["image_size"], fields["image_size"], generator=g)  # fmt: skip
    y = torch.randint(0, 10, (batch,), generator=g)
    with torch.no_grad():  # the same function before any step: the pair is a fair one
        torch.testing.assert_close(ours.logits(x), hf(pixel_values=x).logits, atol=1e-5, rtol=0)
    fns = {
        "ours": _step(ours, lambda: F.cross_entropy(ours.logits(x), y)),
        "hf": _step(hf, lambda: F.cross_entropy(hf(pixel_values=x).logits, y)),
    }
    info = {
        "model": "ViT",
        "shape": shape,
        "config": f"{fields['image_size']}px/{fields['patch_size']}, "
        f"d {fields['hidden_size']} x {fields['num_hidden_layers']}",
        "batch": batch,
        "tokens": fields["image_size"] ** 2 // fields["patch_size"] ** 2 + 1,
        "params": sum(p.numel() for p in ours.parameters()),
        "hf_attention": hf.config._attn_implementation,
    }
    return fns, info


def clip_pair(shape: str) -> tuple[dict[str, Callable[[], None]], dict[str, Any]]:
    """Step functions of our CLIP and transformers' `CLIPModel` (each its own loss), same weights."""
    d, ff, layers, heads, image, patch, ctx, batch = CLIP_SHAPES[shape]
    vocab = 40
    cfg = CLIPConfig(
        CLIPTextConfig(vocab_size=vocab, max_position_embeddings=ctx, hidden_size=d,
                       intermediate_size=ff, num_hidden_layers=layers, num_attention_heads=heads,
                       eos_token_id=3, bos_token_id=1, pad_token_id=0),
        CLIPVisionConfig(image_size=image, patch_size=patch, num_channels=3, hidden_size=d,
                         intermediate_size=ff, num_hidden_layers=layers, num_attention_heads=heads),
        projection_dim=d,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = transformers.CLIPModel(transformers.CLIPConfig(**cfg.to_hf())).train()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = CLIP.from_pretrained(tmp).train()
    g = torch.Generator().manual_seed(1)
    pixels = torch.rand(batch, 3, image, image, generator=g)
    lengths = torch.randint(3, ctx + 1, (batch,), generator=g)
    ids = torch.randint(4, vocab, (batch, ctx), generator=g)
    ids[:, 0] = 1
    mask = (torch.arange(ctx)[None] < lengths[:, None]).long()
    ids[torch.arange(batch), lengths - 1] = 3  # end-of-text closes each caption
    ids = ids * mask
    with torch.no_grad():
        a = ours(pixels, ids, mask, return_loss=True).loss
        b = hf(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True).loss
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    fns = {
        "ours": _step(ours, lambda: ours(pixels, ids, mask, return_loss=True).loss),
        "hf": _step(
            hf,
            lambda: (
                hf(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True).loss
            ),
        ),
    }
    info = {
        "model": "CLIP",
        "shape": shape,
        "config": f"{image}px/{patch} + {ctx} tokens, d {d} x {layers} (both towers)",
        "batch": batch,
        "tokens": (image // patch) ** 2 + 1 + ctx,
        "params": sum(p.numel() for p in ours.parameters()),
        "hf_attention": hf.config._attn_implementation,
    }
    return fns, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the recipe shapes, fewer rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds a pair (>= 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    if args.rounds is not None and args.rounds < 2:
        parser.error(
            f"--rounds must be at least 2 (an interval needs two ratios), got {args.rounds}"
        )
    torch.set_num_threads(args.threads)
    shapes = ["recipe"] if args.quick else ["recipe", "larger"]
    rounds = args.rounds or (20 if args.quick else 60)
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, CPU, "
        f"{torch.get_num_threads()} thread(s), float32, {rounds} interleaved rounds a pair, "
        f"load average {os.getloadavg()[0]:.1f} at start\n"
    )
    print(
        "| model | shape | config | batch | params | speed-up, CPU time [95% CI] | "
        "ours ms | transformers ms | transformers attention |"
    )
    print("| --- " * 9 + "|")
    rows = []
    for make in (vit_pair, clip_pair):
        for shape in shapes:
            fns, info = make(shape)
            times = interleave(fns, rounds)
            speedup = paired_ratio(times["hf"]["cpu"], times["ours"]["cpu"])
            row = {
                **info,
                "rounds": rounds,
                "speedup": speedup,
                "ours_cpu_ms": 1e3 * median(times["ours"]["cpu"]),
                "hf_cpu_ms": 1e3 * median(times["hf"]["cpu"]),
                "wall_speedup": paired_ratio(times["hf"]["wall"], times["ours"]["wall"]),
            }
            rows.append(row)
            print(
                f"| {info['model']} | {shape} | {info['config']} | {info['batch']} | "
                f"{info['params'] / 1e6:.2f}M | {speedup[0]:.2f}x [{speedup[1]:.2f}, "
                f"{speedup[2]:.2f}] | {row['ours_cpu_ms']:.1f} | {row['hf_cpu_ms']:.1f} | "
                f"{info['hf_attention']} |",
                flush=True,
            )
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "threads": torch.get_num_threads(),
            "rounds": rounds,
        }
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
