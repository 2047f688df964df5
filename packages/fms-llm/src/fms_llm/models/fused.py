r"""Fused operations with hand-derived backward passes: where a small language model spends the
time that is not matrix multiplication.

Autograd differentiates a composite of tensor operations by saving the intermediates and running
one backward kernel per forward kernel. That is general and correct, but for two hot spots of a
language model the gradient has a short closed form, and writing it down by hand means fewer
passes over memory and fewer saved tensors:

- [rms_norm][fms_llm.models.fused.rms_norm]: RMSNorm, whose backward is one projection
  (PyTorch's `F.rms_norm` is, on CPU, a composite of six kernels whose backward runs thirteen);
- [linear_cross_entropy][fms_llm.models.fused.linear_cross_entropy]: the language-model head and
  the cross-entropy in one step, computed a chunk of rows at a time, so the
  `(tokens, vocabulary)` logits are never held in full and the gradient, $p - e_y$, is formed
  where the softmax already is.

Both are tested against autograd on the plain composite (float64 `gradcheck`, float32 values and
gradients to 1e-5) and against PyTorch's own `F.rms_norm` and `F.cross_entropy`; what they buy
is measured by `packages/fms-llm/benchmarks/bench_training.py` and reported on the fms-llm
benchmark page.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fms_llm.models import cpu_kernels

__all__ = ["QUICK_GELU_ALPHA", "linear_cross_entropy", "quick_gelu", "rms_norm"]


# --------------------------------------------------------------------------------------------------
# RMSNorm
# --------------------------------------------------------------------------------------------------


def _rms_forward(x: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """`(y, x_hat, rstd)`, in float32 at least (as transformers' Llama computes its norm)."""
    xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
    rstd = torch.rsqrt(xf.square().mean(-1, keepdim=True).add_(eps))
    x_hat = xf * rstd
    return weight * x_hat.to(x.dtype), x_hat, rstd


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        y, x_hat, rstd = _rms_forward(x, weight, eps)
        ctx.save_for_backward(x_hat, rstd, weight)
        ctx.x_dtype = x.dtype
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x_hat, rstd, weight = ctx.saved_tensors
        g = grad.to(x_hat.dtype)
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (g * x_hat).reshape(-1, x_hat.shape[-1]).sum(0).to(weight.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            u = g * weight
            m = (u * x_hat).mean(-1, keepdim=True)
            grad_x = u.addcmul_(x_hat, m, value=-1.0).mul_(rstd).to(ctx.x_dtype)
        return grad_x, grad_w, None


def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    r"""RMSNorm over the last dimension, with a hand-derived backward pass.

    $$y = w \odot \hat x, \qquad \hat x = r\,x, \qquad r = \Big(\tfrac1d \textstyle\sum_j x_j^2
      + \epsilon\Big)^{-1/2}.$$

    **Backward.** Since $\partial r / \partial x_i = -r^3 x_i / d$, the Jacobian of $\hat x$ is
    $\partial \hat x_j / \partial x_i = r\,(\delta_{ij} - \hat x_i \hat x_j / d)$. With the
    incoming gradient $g$ and $u = g \odot w$:

    $$\frac{\partial L}{\partial x} = r\,\Big(u - \hat x \cdot \tfrac1d \textstyle\sum_j u_j
      \hat x_j\Big), \qquad \frac{\partial L}{\partial w} = \sum_{\text{rows}} g \odot \hat x:$$

    the gradient with its component along $\hat x$ removed, rescaled by $r$ (RMSNorm output is
    invariant to the scale of $x$, so the gradient has no component along it). It needs only
    $\hat x$ and $r$ from the forward pass: seven backward kernels, against thirteen for
    `F.rms_norm` (counted with `torch.profiler`).

    The statistics are computed in at least float32 (half-precision inputs are upcast, and
    $\hat x$ is cast back before the weight multiplies it, as transformers' Llama does). Without
    gradients (decoding) the forward is PyTorch's `F.rms_norm`, which makes fewer calls for a
    single token, or plain tensor operations for half precision.

    Args:
        x: `(..., d)`.
        weight: `(d,)` gain $w$.
        eps: $\epsilon$.

    Returns:
        `(..., d)`, the dtype of `weight * x`.
    """
    if x.shape[-1:] != weight.shape:
        raise ValueError(
            f"rms_norm: x {tuple(x.shape)} does not end in weight's {tuple(weight.shape)}"
        )
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        if cpu_kernels.supports(x, weight):  # one pass each way, in C
            return cpu_kernels.rms_norm(x, weight, eps)
        out: Tensor = _RMSNorm.apply(x, weight, eps)
        return out
    if x.dtype == weight.dtype == torch.float32:  # PyTorch's kernel: fewer calls when decoding
        return F.rms_norm(x, weight.shape, weight, eps)
    return _rms_forward(x, weight, eps)[0]


# --------------------------------------------------------------------------------------------------
# The language-model head and cross-entropy in one step
# --------------------------------------------------------------------------------------------------

#: Logits held at once, in elements (4 MiB in float32): measured fastest on CPU at vocabularies
#: of 2,048 and 8,192; a chunk never has fewer than `_MIN_CHUNK_ROWS` rows.
_CHUNK_ELEMENTS = 1 << 20
_MIN_CHUNK_ROWS = 128


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        h: Tensor,
        weight: Tensor,
        targets: Tensor,
        ignore_index: int,
        rows: int,
        grad_h_needed: bool,
        grad_w_needed: bool,
        in_c: bool,
    ) -> Tensor:
        n = h.shape[0]
        valid = targets != ignore_index
        count = valid.sum()
        safe_targets = torch.where(valid, targets, 0)
        # ignored tokens are masked through their (rows, d) hidden states and gradients, never
        # through the (rows, vocab) logits, and with no data-dependent branch (compile-friendly)
        row_mask = valid.to(h.dtype)[:, None]
        acc = torch.promote_types(h.dtype, torch.float32)  # softmax and sums: float32 at least
        total = torch.zeros((), dtype=acc, device=h.device)
        grad_h = torch.empty_like(h) if grad_h_needed else None
        grad_w = (
            torch.zeros(weight.shape, dtype=acc, device=weight.device) if grad_w_needed else None
        )
        w_t = weight.t()
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            h_c, y_c, m_c = h[start:stop], safe_targets[start:stop, None], row_mask[start:stop]
            if in_c:  # the loss, softmax and -1 at the targets in one pass, over the logits
                d_z = h_c @ w_t
                # the ids were range-checked once, before the chunks (on the CPU, always here)
                loss_rows = cpu_kernels.softmax_cross_entropy_(d_z, y_c[:, 0], check_targets=False)
                total += loss_rows @ m_c[:, 0]
            else:
                log_p = torch.log_softmax((h_c @ w_t).to(acc), dim=-1)
                total -= (log_p.gather(1, y_c) * m_c).sum()
                if grad_h is None and grad_w is None:
                    continue
                # d loss_i / d z_i = softmax(z_i) - onehot(y_i): made in place over log p
                d_z = log_p.exp_()
                d_z.scatter_add_(1, y_c, torch.full_like(m_c, -1.0, dtype=acc))
            d_z_c = d_z.to(h.dtype)
            if grad_h is not None:
                torch.mm(d_z_c, weight, out=grad_h[start:stop]).mul_(m_c)
            if grad_w is not None:
                if h.dtype == acc:
                    grad_w.addmm_(d_z.t(), h_c * m_c)
                else:
                    grad_w += (d_z_c.t() @ (h_c * m_c)).to(acc)
        ctx.save_for_backward(grad_h, grad_w, count)
        ctx.w_dtype = weight.dtype
        return total / count

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        grad_h, grad_w, count = ctx.saved_tensors
        scale = grad / count.clamp_min(1)
        gh = grad_h * scale.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * scale).to(ctx.w_dtype) if grad_w is not None else None
        return gh, gw, None, None, None, None, None, None


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    ignore_index: int = -100,
    chunk_rows: int | None = None,
) -> Tensor:
    r"""Mean cross-entropy of the logits $z = h W^\top$, without holding all the logits.

    Equal to `F.cross_entropy(F.linear(hidden, weight).flatten(0, -2), targets.flatten(),
    ignore_index=ignore_index)`, in nats. For each token $i$ with hidden state $h_i$ and target
    $y_i$,

    $$\ell_i = \log \textstyle\sum_v e^{z_{iv}} - z_{i y_i}, \qquad z_i = W h_i .$$

    **Backward.** $\partial \ell_i / \partial z_i = \mathrm{softmax}(z_i) - e_{y_i} = p_i - e_{y_i}$,
    so, with $N$ the number of counted tokens and $G = (P - Y)/N$ stacked by rows,

    $$\frac{\partial L}{\partial H} = G\,W, \qquad \frac{\partial L}{\partial W} = G^\top H .$$

    The gradient is therefore formed in the forward pass, a chunk of rows at a time, right where
    the softmax is: each chunk's logits are made by one matrix multiply, turned into
    log-probabilities in place, read for the loss, exponentiated in place into $P$, corrected by
    $-1$ at the targets, and multiplied into the two gradients; then the chunk is dropped. The
    backward pass only scales the stored gradients by the incoming gradient. Against
    `F.linear` + `F.cross_entropy` this saves the zero-filled gradient of the log-softmax, its
    backward kernel, and all but one chunk of the `(tokens, vocabulary)` logits (1.6 GB for GPT-2
    at a batch of 8 x 1024 tokens, 26 MB here). The price: if no backward pass follows, the
    gradient was computed for nothing, so without gradients (evaluation) only the loss is
    computed. When training in float32 on the CPU with the C kernels available, each chunk's
    loss, softmax and correction are one pass of
    [softmax_cross_entropy_][fms_llm.models.cpu_kernels.softmax_cross_entropy_] instead of the
    log-softmax, gather, exponential and scatter.

    Targets equal to `ignore_index` count for nothing (as in `F.cross_entropy`; if every target is
    ignored, the mean is NaN and the gradients are zero). Under autocast the matrix multiplies run
    in the autocast dtype and the softmax in float32.

    Args:
        hidden: `(..., d)` final hidden states.
        weight: `(vocab, d)` head matrix $W$.
        targets: `(...)` ids in `[0, vocab)` or `ignore_index`.
        ignore_index: target id that is not counted.
        chunk_rows: tokens per chunk (default: as many as keep a chunk of logits within 1M
            elements, and at least 128).

    Returns:
        the scalar mean loss, float32 (float64 for float64 inputs).
    """
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(
            f"linear_cross_entropy: hidden {tuple(hidden.shape)} and targets "
            f"{tuple(targets.shape)} must agree in every dimension but the last"
        )
    if weight.ndim != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"linear_cross_entropy: weight must be (vocab, d={hidden.shape[-1]}), "
            f"got {tuple(weight.shape)}"
        )
    if targets.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"linear_cross_entropy: targets must be int64 ids, got {targets.dtype}")
    vocab = weight.shape[0]
    h, y = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1).long()
    # checked on CPU only: on an accelerator, and inside a compiled graph, it would synchronise
    if y.device.type == "cpu" and y.numel() and not torch.compiler.is_compiling():
        bad = (y != ignore_index) & ((y < 0) | (y >= vocab))
        if bool(bad.any()):
            raise ValueError(
                f"linear_cross_entropy: target id {int(y[bad][0])} is outside the vocabulary "
                f"[0, {vocab}) and is not ignore_index={ignore_index}"
            )
    if chunk_rows is None:
        chunk_rows = max(_MIN_CHUNK_ROWS, _CHUNK_ELEMENTS // vocab)
    if chunk_rows < 1:
        raise ValueError(f"linear_cross_entropy: chunk_rows must be >= 1, got {chunk_rows}")
    device = h.device.type
    w = weight
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        h, w = h.to(dtype), w.to(dtype)
    grads = torch.is_grad_enabled()
    in_c = cpu_kernels.supports(h, w)  # training in float32 on the CPU: the C kernel
    with torch.autocast(device, enabled=False):
        loss: Tensor = _LinearCrossEntropy.apply(
            h,
            w,
            y,
            ignore_index,
            chunk_rows,
            grads and h.requires_grad,
            grads and w.requires_grad,
            in_c,
        )
    return loss


# --------------------------------------------------------------------------------------------------
# QuickGELU (CLIP's activation, for the vision towers of fms-mm)
# --------------------------------------------------------------------------------------------------


QUICK_GELU_ALPHA = 1.702
"""The slope inside QuickGELU's sigmoid (Hendrycks & Gimpel 2016; OpenAI's CLIP)."""


class _QuickGELU(torch.autograd.Function):
    r"""$y = x\,\sigma(\alpha x)$ with $\frac{dy}{dx} = \sigma\,(1 + \alpha x (1 - \sigma))$.

    The forward keeps $\alpha x$ and $\sigma$; the backward is two new tensors and three in-place
    updates (autograd's chain through the product, the sigmoid and the scale allocates more).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ax = x * QUICK_GELU_ALPHA
        s = torch.sigmoid(ax)
        ctx.save_for_backward(ax, s)
        return x * s

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        ax, s = ctx.saved_tensors
        slope = (1.0 - s).mul_(ax).add_(1.0)  # 1 + a x (1 - s)
        return grad.mul(s).mul_(slope)


def quick_gelu(x: Tensor) -> Tensor:
    """QuickGELU with its derivative written out (same values as `fms_transformer.ffn.quick_gelu`)."""
    out: Tensor = _QuickGELU.apply(x)
    return out
