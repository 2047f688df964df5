r"""What each of Llama's elementwise sub-layers costs in a training step: the most a fused kernel could buy.

`bench_training_profile.py` shows that our Llama step loses its lead over transformers outside
the matrix multiplies. This script asks how much of that time belongs to each sub-layer, and so
how much any rewrite of it could possibly save, by **ablation**: the sub-layer is replaced by the
cheapest stand-in that keeps its matrix multiplies, its parameters and the shapes of its
tensors, and the training step is timed with and without it, paired round by round (as in
`_timing.py`).

| sub-layer | ours | stand-in |
| --- | --- | --- |
| RMSNorm | $w \odot x\,(\tfrac1d\sum_j x_j^2 + \epsilon)^{-1/2}$, hand-derived backward | $w \odot x$ |
| SwiGLU | $W_{down}(\mathrm{silu}(W_{gate}x) \odot W_{up}x)$ | $W_{down}(W_{gate}x \odot W_{up}x)$ |
| RoPE | $x\cos + \mathrm{roll}(x)\odot\sin$ on q and k | nothing (q and k unrotated) |

The norm's and SwiGLU's stand-ins are one elementwise pass forward and two backward, about what
a single fused kernel for the sub-layer would cost; RoPE's stand-in is free. So the time saved is
an upper bound on what fusing that sub-layer could buy; "all three" bounds them together. The
last column says what our speed-up over transformers' step would be with that saving (the
paired rounds' median; transformers' step is timed in the same rounds).

The stand-ins change the model's values: only time is measured here, never a loss.

    python packages/fms-llm/benchmarks/bench_training_ablation.py [--quick] [--size quick|default|...]
        [--threads N] [--rounds N] [--steps N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable, Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the eager PyTorch sub-layers are what this measures, not the C kernels that replace them
os.environ.setdefault("FMS_LLM_CPU_KERNELS", "0")

import numpy as np
import torch
from _timing import fmt_ci, paired_ratio, positive_int, rounds_arg
from bench_training import SHAPES, _model_pair, _step_fn
from torch import Tensor

from fms_llm.models import gpt as model_module
from fms_ml.experiment import bootstrap_ci


def _norm_stand_in(self: model_module._FusedRMSNorm, x: Tensor) -> Tensor:
    return x * self.weight


def _swiglu_stand_in(self: model_module._FusedSwiGLU, x: Tensor) -> Tensor:
    out: Tensor = self.down_proj(self.gate_proj(x) * self.up_proj(x))
    return out


def _rope_stand_in(self: model_module._RotaryTable, x: Tensor, offset: int) -> Tensor:
    return x


#: sub-layer -> (class, method, stand-in)
STAND_INS: dict[str, tuple[type, str, Callable[..., Tensor]]] = {
    "RMSNorm": (model_module._FusedRMSNorm, "forward", _norm_stand_in),
    "SwiGLU": (model_module._FusedSwiGLU, "forward", _swiglu_stand_in),
    "RoPE": (model_module._RotaryTable, "rotate_at", _rope_stand_in),
}
VARIANTS: dict[str, tuple[str, ...]] = {
    "none (our step)": (),
    "RMSNorm": ("RMSNorm",),
    "SwiGLU": ("SwiGLU",),
    "RoPE": ("RoPE",),
    "all three": ("RMSNorm", "SwiGLU", "RoPE"),
}


@contextlib.contextmanager
def _ablated(names: tuple[str, ...]) -> Iterator[None]:
    """Swap the named sub-layers' methods for their stand-ins, and put them back after."""
    saved = [(cls, method, getattr(cls, method)) for cls, method, _ in STAND_INS.values()]
    try:
        for name in names:
            cls, method, stand_in = STAND_INS[name]
            setattr(cls, method, stand_in)
        yield
    finally:
        for cls, method, original in saved:
            setattr(cls, method, original)


def bench(vocab: int, d: int, layers: int, heads: int, batch: int, seq: int, rounds: int,
          steps: int) -> dict[str, dict[str, object]]:  # fmt: skip
    ours, hf = _model_pair("llama", vocab, d, layers, heads, seq)
    x = torch.randint(0, vocab, (batch, seq))
    y = torch.randint(0, vocab, (batch, seq))
    ours_step = _step_fn(ours, x, y, hf=False, own_loss=True, bf16=False)
    hf_step = _step_fn(hf, x, y, hf=True, own_loss=True, bf16=False)

    def timed(fn: Callable[[], None]) -> float:
        c0 = time.process_time()
        for _ in range(steps):
            fn()
        return (time.process_time() - c0) / steps

    fns: dict[str, Callable[[], float]] = {}
    for label, names in VARIANTS.items():

        def run(names: tuple[str, ...] = names) -> float:
            with _ablated(names):
                ours_step()  # the first step after a swap is not timed
                return timed(ours_step)

        fns[label] = run
    fns["transformers"] = lambda: timed(hf_step)
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {label: [] for label in fns}
    for _ in range(rounds):  # interleaved: every variant once per round
        for label, fn in fns.items():
            times[label].append(fn())
    full = np.asarray(times["none (our step)"])
    hf_t = np.asarray(times["transformers"])
    out: dict[str, dict[str, object]] = {}
    for label in VARIANTS:
        t = np.asarray(times[label])
        saved = bootstrap_ci(full - t, np.median, n_resamples=2000, random_state=0)
        out[label] = {
            "step_ms": float(np.median(t)) * 1e3,
            "saved_ms": (saved.estimate * 1e3, saved.low * 1e3, saved.high * 1e3),
            "share": float(np.median((full - t) / full)),
            "speedup": paired_ratio(list(hf_t), list(t)),
        }
    out["transformers"] = {"step_ms": float(np.median(hf_t)) * 1e3}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the same as --size quick")
    parser.add_argument("--size", choices=sorted(SHAPES), default="quick", help="model shapes")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--rounds", type=rounds_arg, default=16, help="interleaved rounds")
    parser.add_argument(
        "--steps", type=positive_int, default=3, help="timed training steps per variant"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    _, vocab, d, layers, heads, batch, seq, _ = next(
        s for s in SHAPES["quick" if args.quick else args.size] if s[0] == "llama"
    )
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, fp32, own loss")
    print(f"Llama (GQA), d x layers {d} x {layers}, batch x seq {batch} x {seq}, "
          f"vocabulary {vocab}, {args.rounds} rounds\n")  # fmt: skip
    r = bench(vocab, d, layers, heads, batch, seq, args.rounds, args.steps)
    print("| stand-in for | step ms | saved ms [95% CI] | share of our step | "
          "speed-up over transformers [95% CI] |")  # fmt: skip
    print("| --- | --- | --- | --- | --- |")
    for label in VARIANTS:
        v = r[label]
        s = v["saved_ms"]
        print(
            f"| {label} | {v['step_ms']:.1f} | {s[0]:.1f} [{s[1]:.1f}, {s[2]:.1f}] | "  # type: ignore[index]
            f"{v['share']:.1%} | {fmt_ci(v['speedup'])} |",  # type: ignore[arg-type]
            flush=True,
        )
    print(f"| (transformers' step) | {r['transformers']['step_ms']:.1f} | | | |")


if __name__ == "__main__":
    main()
