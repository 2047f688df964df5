r"""LoRA: fine-tune a frozen model through a low-rank update of chosen linear layers (Hu et al., 2021).

A linear layer $y = W x + b$ with $W \in \mathbb R^{d_\text{out} \times d_\text{in}}$ is kept
frozen, and a trainable update of rank $r \ll \min(d_\text{in}, d_\text{out})$ is added:

$$
y = W x + b + \frac{\alpha}{r} B A x, \qquad A \in \mathbb R^{r \times d_\text{in}},\;
B \in \mathbb R^{d_\text{out} \times r}.
$$

The update $\Delta W = \frac{\alpha}{r} B A$ has $r (d_\text{in} + d_\text{out})$ parameters
instead of $d_\text{in} d_\text{out}$: at $d = 4096$ and $r = 8$, 0.4% of the layer. The bet (the
paper's measurement) is that the change fine-tuning needs has a low intrinsic rank. $A$ starts
random (Kaiming-uniform, as `nn.Linear`) and $B$ at zero, so training starts exactly at the base
model; the factor $\alpha / r$ (or $\alpha / \sqrt r$ with `rslora`, Kalajdzievski, 2023) keeps
the update's scale from changing with the rank. After training the update folds into the weight,
$W' = W + \frac{\alpha}{r} B A$ ([merge_lora][fms_llm.finetune.lora.merge_lora]), and the model
costs nothing extra at inference.

QLoRA (Dettmers et al., 2023) is the same with a quantised frozen base: wrap a
[QuantizedLinear][fms_llm.quantize.QuantizedLinear] (int8, int4 per group or NF4) instead of an
`nn.Linear`; the adapter stays in float and merging dequantises the base into a float weight.

Tested against peft: with the same $A$, $B$ and scaling as `LoraConfig(init_lora_weights=False)`
on a transformers Llama, the logits agree within 1e-5, merged equals unmerged within 1e-5, and
the gradients of $A$ and $B$ agree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fms_llm.quantize import QuantizedLinear

__all__ = [
    "LoRAConfig",
    "LoRAError",
    "LoRALinear",
    "apply_lora",
    "lora_state_dict",
    "merge_lora",
    "trainable_parameters",
]


class LoRAError(ValueError):
    """A LoRA configuration or target that cannot be applied."""


@dataclass(frozen=True)
class LoRAConfig:
    r"""What LoRA adapts and how.

    Attributes:
        r: the rank of the update ($\geq 1$).
        alpha: the scale numerator: the update is $\frac{\alpha}{r} B A$.
        targets: which linear layers: a sequence of names matched as peft's `target_modules`
            (a layer whose qualified name equals an entry or ends with `.` + entry: `"q_proj"`
            matches `blocks.3.self_attn.q_proj`), or a single string, a regular expression
            matched in full against the qualified name (`r"blocks\.\d+\.ffn\..*"`).
        dropout: dropout on the adapter's input ($0$: none).
        rslora: scale by $\alpha / \sqrt r$ instead (rank-stabilised LoRA).
        init_b_zero: start $B$ at zero (the usual LoRA start, the model unchanged); `False`
            leaves $B$ random too, as peft's `init_lora_weights=False` (used by parity tests).
    """

    r: int = 8
    alpha: float = 16.0
    targets: str | Sequence[str] = ("q_proj", "k_proj", "v_proj", "out_proj")
    dropout: float = 0.0
    rslora: bool = False
    init_b_zero: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise LoRAError(f"LoRAConfig: r must be an int >= 1, got {self.r!r}")
        if not self.alpha > 0:
            raise LoRAError(f"LoRAConfig: alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise LoRAError(f"LoRAConfig: dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.targets, str) and (
            len(self.targets) == 0 or not all(isinstance(t, str) for t in self.targets)
        ):
            raise LoRAError(
                f"LoRAConfig: targets must be a regex string or a non-empty sequence of names, "
                f"got {self.targets!r}"
            )

    @property
    def scaling(self) -> float:
        r"""$\alpha / r$, or $\alpha / \sqrt r$ with `rslora`."""
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)

    def matches(self, name: str) -> bool:
        """Whether the layer called `name` (a qualified module name) is a target."""
        if isinstance(self.targets, str):
            return re.fullmatch(self.targets, name) is not None
        return any(name == t or name.endswith("." + t) for t in self.targets)


class LoRALinear(nn.Module):
    r"""A frozen linear layer plus a trainable low-rank update: $y = \mathrm{base}(x) + s\,B A x$.

    Args:
        base: the frozen layer, an `nn.Linear` or a [QuantizedLinear][fms_llm.quantize.QuantizedLinear];
            its parameters get `requires_grad=False`.
        config: rank, scale, dropout and initialisation.

    Attributes:
        lora_A: `(r, in_features)`, Kaiming-uniform at the start.
        lora_B: `(out_features, r)`, zero at the start (random with `init_b_zero=False`).
        scaling: $s$.
    """

    def __init__(self, base: nn.Linear | QuantizedLinear, config: LoRAConfig) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear | QuantizedLinear):
            raise LoRAError(f"LoRA wraps nn.Linear or QuantizedLinear, got {type(base).__name__}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(config.r, self.in_features, device=device))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, config.r, device=device))
        self.r = config.r
        self.scaling = config.scaling
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.reset_lora_parameters(zero_b=config.init_b_zero)

    @torch.no_grad()
    def reset_lora_parameters(self, *, zero_b: bool = True) -> None:
        """$A$ as `nn.Linear` initialises a weight (Kaiming-uniform, $a = \\sqrt 5$); $B$ zero,
        or the same random rule with `zero_b=False`."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        if zero_b:
            nn.init.zeros_(self.lora_B)
        else:
            nn.init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))

    def delta_weight(self) -> Tensor:
        r"""$\Delta W = s\, B A$ `(out_features, in_features)` (differentiable)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    @property
    def weight(self) -> Tensor:
        r"""The effective weight $W + s\,BA$ (differentiable in $A$ and $B$), for code that reads
        a head's `.weight` directly (the model's fused loss does)."""
        base_w = self.base.weight
        return base_w.to(self.lora_A.dtype) + self.delta_weight()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.base(x)
        update = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)
        return out + update * self.scaling

    def merged(self) -> nn.Linear:
        """A plain float `nn.Linear` with $W + s\\,BA$ (the base dequantised if it was quantised)."""
        with torch.no_grad():
            w = self.base.weight.to(self.lora_A.dtype) + self.delta_weight()
            bias = self.base.bias
            out = nn.Linear(
                self.in_features, self.out_features, bias=bias is not None, device=w.device
            )
            out.weight.copy_(w)
            if bias is not None:
                out.bias.copy_(bias)
        return out

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}"


def _targets(model: nn.Module, config: LoRAConfig) -> list[str]:
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear | QuantizedLinear)
        and not isinstance(m, LoRALinear)
        and config.matches(name)
    ]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def apply_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Freeze `model` and wrap, in place, every targeted linear layer in a [LoRALinear][fms_llm.finetune.lora.LoRALinear].

    Every parameter of the model is frozen first; only the adapters' $A$ and $B$ train.

    Args:
        model: the model (our GPT/Llama or any `nn.Module`); its linear layers may already be
            quantised ([quantize_linears][fms_llm.quantize.quantize_linears]), which is QLoRA.
        config: the [LoRAConfig][fms_llm.finetune.lora.LoRAConfig].

    Returns:
        the qualified names of the wrapped layers.

    Raises:
        LoRAError: before changing anything, when no linear layer matches `config.targets`
            (the message lists the linear layers there are).
    """
    names = _targets(model, config)
    if not names:
        linears = [
            n for n, m in model.named_modules() if isinstance(m, nn.Linear | QuantizedLinear)
        ]
        raise LoRAError(
            f"LoRA targets={config.targets!r} match no linear layer; the model's linear layers "
            f"are {linears[:10]}" + (" ..." if len(linears) > 10 else "")
        )
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        base = model.get_submodule(name)
        assert isinstance(base, nn.Linear | QuantizedLinear)
        _replace(model, name, LoRALinear(base, config))
    return names


def merge_lora(model: nn.Module) -> list[str]:
    """Fold every adapter into its layer, in place: each [LoRALinear][fms_llm.finetune.lora.LoRALinear]
    becomes a float `nn.Linear` with $W + s\\,BA$.

    A head whose weight was tied to the embedding is untied by merging (the merged weight is its
    own). Returns the names of the merged layers (empty when there were none).
    """
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        layer = model.get_submodule(name)
        assert isinstance(layer, LoRALinear)
        _replace(model, name, layer.merged())
    return names


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Only the adapters' tensors (`...lora_A`, `...lora_B`), detached: what an adapter file holds."""
    return {
        k: v.detach() for k, v in model.state_dict().items() if k.endswith((".lora_A", ".lora_B"))
    }


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """`(trainable, total)` parameter counts (distinct tensors, a tied weight counted once)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
