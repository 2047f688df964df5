r"""Weight-only quantisation: int8 per channel, int4 per group and NF4, and a frozen quantised linear.

A trained weight matrix $W \in \mathbb R^{n \times k}$ (`(out_features, in_features)`) is stored as
small integer codes $q$ and a few floating-point scales; the forward pass dequantises,
$\hat W = s \cdot v(q)$, and multiplies in floating point. Three formats, one idea each:

- **int8 per channel** (`"int8"`): one scale per output row, symmetric,
  $s_i = \max_j |W_{ij}| / 127$, $q_{ij} = \operatorname{round}(W_{ij} / s_i) \in [-127, 127]$.
  One byte a weight; the rounding error is at most $s_i / 2$.
- **int4 per group** (`"int4"`): each row cut into groups of `group_size` consecutive inputs, one
  scale a group. The rule is GGUF's `Q4_0` (llama.cpp): with $m$ the group's entry of largest
  magnitude (sign kept), $s = m / -8$ and $q = \min(15, \lfloor W/s + 8.5 \rfloor)$, a code in
  $0..15$ that stands for $q - 8 \in [-8, 7]$. The largest entry maps exactly onto $-8$, so the
  full range of the 16 codes is used. Half a byte a weight plus one scale a group.
- **NF4** (`"nf4"`, NormalFloat 4-bit, Dettmers et al., 2023, *QLoRA*): the 16 code values are not
  evenly spaced but sit at quantiles of a standard normal, so that for normally distributed
  weights each code is used about equally often (the information-theoretically optimal choice
  for that distribution), with an exact zero. Each block of `group_size` weights is scaled by its
  absolute maximum $a$ into $[-1, 1]$ and every entry takes the nearest code value:
  $q = \arg\min_c |W/a - v_c|$, $\hat W = a\, v_q$.

Both 4-bit formats pack two codes into a byte, `Q4_0`'s way: in a group of $g$ codes, byte $j$
holds code $j$ in its low nibble and code $j + g/2$ in its high nibble. So the packed codes of
`"int4"` are byte for byte the `qs` of a GGUF `Q4_0` block (whose scale GGUF stores in float16).

The scales are float32 by default, or float16 (`scale_dtype=torch.float16`, what GGUF stores):
the codes are always computed from the float32 scale and only the stored scale is rounded, so
int4 with float16 scales is GGUF's `Q4_0` block exactly (for `group_size=32`).

[QuantizedLinear][fms_llm.quantize.QuantizedLinear] holds a quantised weight as buffers (frozen:
no gradient, never touched by an optimiser) and computes $x \hat W^\top + b$ in the input's
floating-point dtype. Gradients flow to $x$, which is all a LoRA adapter on top of it needs
(QLoRA: the base in 4 bits, the low-rank update in float). Memory of the weight, in bytes per
parameter, with $b_s$ the bytes of a scale (4 for float32, 2 for float16): float32 4, int8
$1 + b_s/k$, int4 and NF4 $0.5 + b_s/g$. No format with a scale reaches 8x less than float32
for 4 bits: int4 per group of 128 with float16 scales is $4 / (0.5 + 2/128) = 7.76$x.

**The matmuls work on the codes.** int8 applies its per-row scale to the output,
$x \hat W^\top = (x\, q^\top) \operatorname{diag}(s)$, so the codes are only converted to the
input's dtype (one pass) and the $n \times k$ scaled weight is never formed. int4 splits each group
by nibble: byte $j$ of a group holds codes $j$ and $j + g/2$, so with $x_{lo}$, $x_{hi}$ the first
and second halves of each group of $x$'s inputs and $W_{lo}$, $W_{hi}$ the weight's,
$x \hat W^\top = x_{lo} W_{lo}^\top + x_{hi} W_{hi}^\top$; each half is dequantised straight from
the bytes (`data & 15`, `data >> 4`) by one conversion and one multiply by its scale, the
offset $-8 s$ applied to the output through the input's group sums, and never unpacked into a
full code tensor. NF4 looks its codes up in its table and multiplies as before.

Tested against the references users trust: int8 codes equal `torch.quantize_per_channel`'s, the
int4 codes and dequantised values equal the `gguf` package's `Q4_0`, and the NF4 code values equal
the table published with QLoRA (bitsandbytes) to float32 precision.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fms_llm.models.gpt import GPT
from fms_llm.models.hf import load_pretrained

__all__ = [
    "FORMATS",
    "NF4_LEVELS",
    "QuantizationError",
    "QuantizedLinear",
    "QuantizedWeight",
    "dequantize",
    "linear_weight_bytes",
    "load_quantized",
    "nf4_levels",
    "quantize",
    "quantize_linears",
    "quantize_model",
]

Format = Literal["int8", "int4", "nf4"]
FORMATS: tuple[str, ...] = ("int8", "int4", "nf4")
_DEFAULT_GROUP = {"int4": 32, "nf4": 64}


class QuantizationError(ValueError):
    """A weight, format or group size that cannot be quantised as asked."""


def nf4_levels() -> Tensor:
    r"""The 16 NormalFloat-4 code values, built from normal quantiles as QLoRA constructs them.

    Eight positive values are the standard-normal quantiles $\Phi^{-1}(p)$ at $p$ evenly spaced
    from $0.5$ to $\delta = \frac12(\frac{1}{32} + \frac{1}{30}) \approx 0.9677$ (dropping
    $p = 0.5$), seven negative ones the same with seven steps; with the exact zero that makes 16,
    asymmetric (one more positive level), all divided by the largest so they fill $[-1, 1]$.

    Returns:
        a float32 tensor of 16 increasing values, $-1$ first and $1$ last, $0$ at index 7.
    """
    delta = 0.5 * (1.0 / 32.0 + 1.0 / 30.0)
    hi = 1.0 - delta
    pos = torch.special.ndtri(torch.linspace(hi, 0.5, 9, dtype=torch.float64)[:-1])
    neg = -torch.special.ndtri(torch.linspace(hi, 0.5, 8, dtype=torch.float64)[:-1])
    values = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg]).sort().values
    return (values / values.max()).to(torch.float32)


NF4_LEVELS: Tensor = nf4_levels()
"""The 16 NF4 code values (see [nf4_levels][fms_llm.quantize.nf4_levels])."""


@dataclass(frozen=True)
class QuantizedWeight:
    """A quantised 2-D weight: the codes, the scales and what is needed to undo it.

    Attributes:
        format: `"int8"`, `"int4"` or `"nf4"`.
        data: the codes: `int8 (out, in)` for int8; `uint8 (out, in // 2)` packed nibbles for
            the 4-bit formats.
        scale: the scales (float32, or float16 to save memory), `(out,)` for int8,
            `(out, in // group_size)` for the 4-bit formats.
        shape: the original `(out_features, in_features)`.
        group_size: inputs sharing a scale (`in_features` for int8).
    """

    format: str
    data: Tensor
    scale: Tensor
    shape: tuple[int, int]
    group_size: int

    @property
    def nbytes(self) -> int:
        """Bytes held by the codes and the scales (what the weight costs in memory)."""
        return (
            self.data.numel() * self.data.element_size()
            + self.scale.numel() * self.scale.element_size()
        )

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The weight $\\hat W$ `(out, in)` in `dtype`."""
        return dequantize(self, dtype)


def _check_weight(weight: Tensor, fmt: str, group_size: int | None) -> int:
    if fmt not in FORMATS:
        raise QuantizationError(f"format must be one of {FORMATS}, got {fmt!r}")
    if weight.ndim != 2:
        raise QuantizationError(
            f"weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}"
        )
    if not weight.is_floating_point():
        raise QuantizationError(f"weight must be floating point, got {weight.dtype}")
    if not bool(torch.isfinite(weight).all()):
        raise QuantizationError("weight has non-finite values (inf or nan); cannot quantise it")
    k = weight.shape[1]
    if fmt == "int8":
        if group_size not in (None, k):
            raise QuantizationError(
                f"int8 is per output channel: group_size must be None or in_features={k}, "
                f"got {group_size}"
            )
        return k
    g = _DEFAULT_GROUP[fmt] if group_size is None else group_size
    if g <= 0 or g % 2:
        raise QuantizationError(f"group_size must be a positive even number, got {g}")
    if k % g:
        raise QuantizationError(
            f"in_features={k} is not a multiple of group_size={g} (format {fmt!r}); "
            f"choose a group size that divides it"
        )
    return g


def _pack(codes: Tensor, g: int) -> Tensor:
    """`(out, in)` codes 0..15 to `(out, in // 2)` bytes, Q4_0's nibble order within each group."""
    n, k = codes.shape
    c = codes.to(torch.uint8).reshape(n, k // g, 2, g // 2)
    return (c[:, :, 0] | (c[:, :, 1] << 4)).reshape(n, k // 2)


def _unpack(data: Tensor, g: int) -> Tensor:
    """The inverse of `_pack`: `(out, in // 2)` bytes to `(out, in)` codes 0..15 (int64)."""
    n, half = data.shape
    b = data.reshape(n, (2 * half) // g, 1, g // 2)
    return torch.cat([b & 0x0F, b >> 4], dim=2).reshape(n, 2 * half).long()


_SCALE_DTYPES = (torch.float32, torch.float16)


def _check_scale_dtype(scale_dtype: torch.dtype) -> None:
    if scale_dtype not in _SCALE_DTYPES:
        raise QuantizationError(
            f"scale_dtype must be torch.float32 or torch.float16, got {scale_dtype!r}"
        )


def _store_scale(scale: Tensor, scale_dtype: torch.dtype) -> Tensor:
    """The float32 scales in `scale_dtype`; float16 must hold them (no overflow to inf)."""
    if scale_dtype == torch.float32:
        return scale
    big = float(scale.abs().max()) if scale.numel() else 0.0
    if big > float(torch.finfo(torch.float16).max):
        raise QuantizationError(
            f"a scale of {big:.3g} overflows float16 (max 65504); use scale_dtype=torch.float32"
        )
    return scale.to(scale_dtype)


@torch.no_grad()
def quantize(
    weight: Tensor,
    format: Format = "nf4",
    *,
    group_size: int | None = None,
    scale_dtype: torch.dtype = torch.float32,
) -> QuantizedWeight:
    r"""Quantise a 2-D weight `(out_features, in_features)`.

    Args:
        weight: the float weight (any floating dtype; computed in float32).
        format: `"int8"` (per output channel), `"int4"` (per group, GGUF `Q4_0`'s rule) or
            `"nf4"` (per block, QLoRA's NormalFloat).
        group_size: inputs per scale for the 4-bit formats (default 32 for int4, as `Q4_0`; 64
            for NF4, as QLoRA); must divide `in_features`. Not used by int8.
        scale_dtype: dtype the scales are stored in, `torch.float32` or `torch.float16` (the
            codes are computed from the float32 scales either way).

    Returns:
        a [QuantizedWeight][fms_llm.quantize.QuantizedWeight].

    Raises:
        QuantizationError: a weight that is not 2-D floating point and finite, an unknown format,
            a group size that does not divide `in_features`, or a scale dtype other than float32
            and float16 (or a scale float16 cannot hold).
    """
    _check_scale_dtype(scale_dtype)
    g = _check_weight(weight, format, group_size)
    w = weight.detach().to(torch.float32)
    n, k = w.shape
    if format == "int8":
        scale = w.abs().amax(dim=1) / 127.0
        safe = torch.where(scale == 0, torch.ones_like(scale), scale)
        q = torch.round(w / safe[:, None]).clamp_(-127, 127).to(torch.int8)
        return QuantizedWeight("int8", q, _store_scale(scale, scale_dtype), (n, k), k)
    groups = w.reshape(n, k // g, g)
    if format == "int4":
        idx = groups.abs().argmax(dim=-1, keepdim=True)
        signed_max = groups.gather(-1, idx).squeeze(-1)
        scale = signed_max / -8.0
        inv = torch.where(scale == 0, torch.zeros_like(scale), 1.0 / scale)
        codes = torch.trunc(groups * inv[..., None] + 8.5).clamp_(0, 15)
    else:
        scale = groups.abs().amax(dim=-1)
        safe = torch.where(scale == 0, torch.ones_like(scale), scale)
        x = groups / safe[..., None]
        levels = NF4_LEVELS.to(w.device)
        # nearest code value: the midpoints between neighbouring levels are the decision bounds
        codes = torch.bucketize(x, (levels[1:] + levels[:-1]) / 2)
    packed = _pack(codes.reshape(n, k), g)
    return QuantizedWeight(format, packed, _store_scale(scale, scale_dtype), (n, k), g)


def dequantize(q: QuantizedWeight, dtype: torch.dtype = torch.float32) -> Tensor:
    """The float weight a [QuantizedWeight][fms_llm.quantize.QuantizedWeight] stands for.

    Args:
        q: the quantised weight.
        dtype: the floating dtype of the result (computed in float32, or float64 for float64).

    Returns:
        $\\hat W$ `(out_features, in_features)`.
    """
    n, k = q.shape
    work = torch.float64 if dtype == torch.float64 else torch.float32  # float32 at least
    scale = q.scale.to(work)
    if q.format == "int8":
        return (q.data.to(work) * scale[:, None]).to(dtype)
    codes = _unpack(q.data, q.group_size)
    if q.format == "int4":
        values = codes.to(work) - 8.0
    else:
        values = NF4_LEVELS.to(device=q.data.device, dtype=work)[codes]
    g = q.group_size
    w = values.reshape(n, k // g, g) * scale[..., None]
    return w.reshape(n, k).to(dtype)


def _int8_linear(x: Tensor, data: Tensor, scale: Tensor, bias: Tensor | None) -> Tensor:
    r"""$x \hat W^\top + b = (x\, q^\top) \operatorname{diag}(s) + b$ for int8 codes `data` `(n, k)`."""
    y = F.linear(x, data.to(x.dtype)) * scale.to(x.dtype)
    return y if bias is None else y + bias


def _int4_linear(x: Tensor, data: Tensor, scale: Tensor, g: int, bias: Tensor | None) -> Tensor:
    r"""$x \hat W^\top + b$ for int4 bytes `data` `(n, k/2)` in Q4_0's order, by nibble halves.

    With $c$ the codes (`data & 15` for the first half of each group, `data >> 4` for the
    second) and $X_G = \sum_{j \in G} x_j$ the group sums of the input,

    $$
    (x \hat W^\top)_i = \sum_G s_{iG} \sum_{j \in G} x_j (c_{ij} - 8)
    = x_{lo} (s \odot c_{lo})^\top_i + x_{hi} (s \odot c_{hi})^\top_i - 8 \sum_G s_{iG} X_G,
    $$

    so each half is converted and scaled once (no full code tensor, no per-element subtraction)
    and the offset is one small matmul of the group sums."""
    n, half = data.shape
    groups = 2 * half // g
    s = scale.to(x.dtype)
    lead = x.shape[:-1]
    xv = x.reshape(*lead, groups, 2, g // 2)
    x_lo = xv[..., 0, :].reshape(*lead, half)
    x_hi = xv[..., 1, :].reshape(*lead, half)
    w_lo = ((data & 0x0F).to(x.dtype).view(n, groups, g // 2) * s[..., None]).view(n, half)
    w_hi = ((data >> 4).to(x.dtype).view(n, groups, g // 2) * s[..., None]).view(n, half)
    offset = F.linear(xv.sum(dim=(-2, -1)), s * 8.0)  # (..., n): 8 * sum_G s_iG X_G
    return F.linear(x_lo, w_lo, bias) + F.linear(x_hi, w_hi) - offset


class QuantizedLinear(nn.Module):
    r"""A frozen linear layer whose weight is stored quantised: $y = x \hat W^\top + b$.

    The codes, scales and bias are buffers, so the layer has no parameters (nothing for an
    optimiser, nothing for `requires_grad`), and they save and load with the `state_dict`
    (safetensors-friendly: plain uint8/int8/float32/float16 tensors). The forward multiplies
    from the codes in the input's dtype (int8: scale on the output; int4: by nibble halves; NF4:
    dequantised first; see the module's docstring); the result equals $x \hat W^\top + b$ with
    the dequantised $\hat W$ up to float rounding, and the gradient with respect to the input
    is exact for $\hat W$.

    Args:
        weight: the quantised weight.
        bias: an optional float bias `(out_features,)`.

    Example:
        >>> layer = QuantizedLinear.from_linear(nn.Linear(64, 8), "nf4")
        >>> layer(torch.randn(2, 64)).shape
        torch.Size([2, 8])
    """

    data: Tensor
    scale: Tensor
    bias: Tensor | None

    def __init__(self, weight: QuantizedWeight, bias: Tensor | None = None) -> None:
        super().__init__()
        self.format = weight.format
        self.group_size = weight.group_size
        self.out_features, self.in_features = weight.shape
        self.register_buffer("data", weight.data)
        self.register_buffer("scale", weight.scale)
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise QuantizationError(
                f"bias must have shape ({self.out_features},), got {tuple(bias.shape)}"
            )
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        format: Format = "nf4",
        *,
        group_size: int | None = None,
        scale_dtype: torch.dtype = torch.float32,
    ) -> QuantizedLinear:
        """Quantise an `nn.Linear` (its weight; the bias stays float)."""
        if not isinstance(linear, nn.Linear):
            raise QuantizationError(f"expected an nn.Linear, got {type(linear).__name__}")
        weight = quantize(linear.weight, format, group_size=group_size, scale_dtype=scale_dtype)
        return cls(weight, linear.bias)

    @property
    def weight_q(self) -> QuantizedWeight:
        """The stored weight as a [QuantizedWeight][fms_llm.quantize.QuantizedWeight]."""
        return QuantizedWeight(
            self.format,
            self.data,
            self.scale,
            (self.out_features, self.in_features),
            self.group_size,
        )

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """$\\hat W$ `(out_features, in_features)` in `dtype`."""
        return dequantize(self.weight_q, dtype)

    def to_linear(self) -> nn.Linear:
        """A float `nn.Linear` holding $\\hat W$ (and the bias): the layer dequantised."""
        out = nn.Linear(
            self.in_features, self.out_features, bias=self.bias is not None, device=self.data.device
        )
        with torch.no_grad():
            out.weight.copy_(self.dequantized_weight())
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out

    @property
    def weight(self) -> Tensor:
        """$\\hat W$ in float32 (a fresh tensor, no gradient: for code that reads `.weight`)."""
        return self.dequantized_weight(torch.float32)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored weight (codes and scales; the bias not counted)."""
        return self.weight_q.nbytes

    def forward(self, x: Tensor) -> Tensor:
        b = None if self.bias is None else self.bias.to(x.dtype)
        if self.format == "int8":
            return _int8_linear(x, self.data, self.scale, b)
        if self.format == "int4":
            return _int4_linear(x, self.data, self.scale, self.group_size, b)
        return F.linear(x, self.dequantized_weight(x.dtype), b)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"format={self.format}, group_size={self.group_size}, "
            f"scale_dtype={self.scale.dtype}, bias={self.bias is not None}"
        )


def quantize_linears(
    model: nn.Module,
    format: Format = "nf4",
    *,
    targets: str = r".*",
    group_size: int | None = None,
    scale_dtype: torch.dtype = torch.float32,
) -> list[str]:
    r"""Replace, in place, every `nn.Linear` whose qualified name matches `targets` by a
    [QuantizedLinear][fms_llm.quantize.QuantizedLinear].

    Args:
        model: the module to change.
        format: the quantisation format.
        targets: a regular expression matched (`re.fullmatch`) against each linear layer's name
            in `model.named_modules()`, e.g. `r"blocks\.\d+\..*"` to keep the head in float.
        group_size: as in [quantize][fms_llm.quantize.quantize].
        scale_dtype: as in [quantize][fms_llm.quantize.quantize].

    Returns:
        the names of the replaced layers, in module order.

    Raises:
        QuantizationError: when no linear layer matches `targets` (nothing would be quantised),
            or one that matches cannot be quantised.
    """
    pattern = re.compile(targets)
    names = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and pattern.fullmatch(name)
    ]
    if not names:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise QuantizationError(
            f"targets={targets!r} matches no nn.Linear; the linear layers are {linears[:8]}"
            + (" ..." if len(linears) > 8 else "")
        )
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        linear = getattr(parent, child)
        layer = QuantizedLinear.from_linear(
            linear, format, group_size=group_size, scale_dtype=scale_dtype
        )
        setattr(parent, child, layer)
    return names


def linear_weight_bytes(model: nn.Module) -> tuple[int, int]:
    """Bytes of the weights of `model`'s linear layers as stored, and as float32.

    Counts every `nn.Linear` and [QuantizedLinear][fms_llm.quantize.QuantizedLinear] weight
    (biases and embeddings not included; a head tied to the embedding counts once, as a linear).

    Returns:
        `(stored, float32)`: their ratio is the memory saving of quantisation.
    """
    stored = float32 = 0
    for m in model.modules():
        if isinstance(m, QuantizedLinear):
            stored += m.nbytes
            float32 += 4 * m.in_features * m.out_features
        elif isinstance(m, nn.Linear):
            stored += m.weight.numel() * m.weight.element_size()
            float32 += 4 * m.weight.numel()
    return stored, float32


def load_quantized(
    model_dir: str | os.PathLike[str],
    format: Format = "int8",
    *,
    group_size: int | None = None,
    targets: str = r".*",
    map_location: str | torch.device | None = "cpu",
    scale_dtype: torch.dtype = torch.float32,
) -> GPT:
    r"""Load a saved model with its linear layers quantised: weight-only inference in less memory.

    The model is read by [load_pretrained][fms_llm.models.hf.load_pretrained] (float32) and every
    linear layer matching `targets` becomes a
    [QuantizedLinear][fms_llm.quantize.QuantizedLinear]; a head tied to the token embedding is
    untied first (the embedding stays float, the head is quantised). The float weights of the
    replaced layers are freed. The result decodes with [generate][fms_llm.generate.generate],
    [SpeculativeDecoder][fms_llm.inference.speculative.SpeculativeDecoder] and the paged runner
    unchanged.

    Args:
        model_dir: a directory written by `save_pretrained`.
        format: `"int8"` (per channel), `"int4"` (per group, Q4_0's rule) or `"nf4"`.
        group_size: inputs per scale of the 4-bit formats (default 32 for int4, 64 for NF4).
        targets: a regular expression over the linear layers' names (default: all of them).
        map_location: as in `load_pretrained`.
        scale_dtype: `torch.float32` or `torch.float16` scales.

    Returns:
        the model, in eval mode.

    Raises:
        QuantizationError: an unknown format, or a group size that does not divide a layer's
            input width.
        fms_llm.models.ModelFileError: a missing or malformed model directory.
    """
    if format not in FORMATS:
        raise QuantizationError(f"format must be one of {FORMATS}, got {format!r}")
    model = load_pretrained(os.fspath(model_dir), map_location=map_location)
    return quantize_model(
        model, format, group_size=group_size, targets=targets, scale_dtype=scale_dtype
    )


def quantize_model(
    model: GPT,
    format: Format = "int8",
    *,
    group_size: int | None = None,
    targets: str = r".*",
    scale_dtype: torch.dtype = torch.float32,
) -> GPT:
    r"""Quantise, in place, the linear layers of a loaded [GPT][fms_llm.models.GPT] or Llama
    matching `targets` (what [load_quantized][fms_llm.quantize.load_quantized] does after
    loading). A head tied to the token embedding is untied first: the embedding stays float, the
    head is quantised.

    Args:
        model: the model to change.
        format: `"int8"`, `"int4"` or `"nf4"`.
        group_size: inputs per scale of the 4-bit formats.
        targets: a regular expression over the linear layers' names.
        scale_dtype: `torch.float32` or `torch.float16` scales.

    Returns:
        the same model, in eval mode.

    Raises:
        QuantizationError: an unknown format, or a group size that does not divide a layer's
            input width.
    """
    if format not in FORMATS:
        raise QuantizationError(f"format must be one of {FORMATS}, got {format!r}")
    if model.lm_head.weight is model.tok_emb.weight:
        head = nn.Linear(model.config.d_model, model.config.vocab_size, bias=False)
        head = head.to(model.tok_emb.weight.device)
        with torch.no_grad():
            head.weight.copy_(model.tok_emb.weight)
        model.lm_head = head
    _check_scale_dtype(scale_dtype)
    quantize_linears(model, format, targets=targets, group_size=group_size, scale_dtype=scale_dtype)
    return model.eval()
