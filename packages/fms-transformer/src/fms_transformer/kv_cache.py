"""A key/value cache for incremental (autoregressive) decoding.

Generating token $t$ with a decoder needs the keys and values of tokens $0..t-1$ in every layer.
They never change once computed (a causal layer's output at position $s$ depends only on
positions $\\le s$), so we keep them: each step then costs $O(t)$ attention work instead of
recomputing the whole prefix, $O(t^2)$.

The protocol, used by [`MultiHeadAttention`][fms_transformer.attention.MultiHeadAttention]:

1. the model reads `cache.offset` (tokens already cached) to place the new tokens at positions
   `offset .. offset + new - 1` (for learned / sinusoidal / rotary positions);
2. attention layer `i` computes keys and values of the new tokens (rotated by RoPE if used) and
   calls `k_all, v_all = cache.append(i, k_new, v_new)`, then attends the new queries to `k_all`.

Keys and values are stored as `(batch, n_kv_heads, seq, head_dim)`, i.e. *after* the projection,
so a grouped-query model caches only `n_kv_heads` heads.

Storage: by default each `append` concatenates (simple, but generating $T$ tokens copies
$O(T^2)$ elements in total). With `max_len`, each layer's buffers are allocated once at the first
append and filled in place, and `append` returns views of the filled prefix: $O(T)$ copying, as
inference servers do. The in-place writes make a preallocated cache an inference-time object
(use it under `torch.no_grad()`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["KVCache", "KVCacheError"]


class KVCacheError(ValueError):
    """A cache used with the wrong layer index, or given keys/values of inconsistent shape."""


class KVCache:
    """Keys and values of the tokens seen so far, one `(k, v)` pair per layer.

    Args:
        n_layers: Number of attention layers that will use this cache.
        max_len: Preallocate room for this many tokens per layer (`None`: grow by concatenation).

    Example:
        >>> cache = KVCache(n_layers=2)
        >>> k = v = torch.zeros(1, 4, 3, 8)  # (batch, kv_heads, new_tokens, head_dim)
        >>> k_all, v_all = cache.append(0, k, v)
        >>> cache.seq_len(0), cache.offset
        (3, 0)
    """

    def __init__(self, n_layers: int, max_len: int | None = None) -> None:
        if n_layers <= 0:
            raise KVCacheError(f"n_layers must be positive, got {n_layers}")
        if max_len is not None and max_len <= 0:
            raise KVCacheError(f"max_len must be positive or None, got {max_len}")
        self.n_layers, self.max_len = n_layers, max_len
        self._k: list[Tensor | None] = [None] * n_layers  # the filled prefix (a view if buffered)
        self._v: list[Tensor | None] = [None] * n_layers
        self._k_buf: list[Tensor | None] = [None] * n_layers
        self._v_buf: list[Tensor | None] = [None] * n_layers

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.n_layers:
            raise KVCacheError(f"layer index {layer} out of range for a cache of {self.n_layers}")

    def seq_len(self, layer: int) -> int:
        """Number of tokens cached in `layer`."""
        self._check_layer(layer)
        k = self._k[layer]
        return 0 if k is None else int(k.shape[-2])

    @property
    def offset(self) -> int:
        """Tokens cached in *every* layer: the position of the next token to be fed to the model.

        Read it before the forward pass; during a pass, layers already updated hold more.
        """
        return min(self.seq_len(i) for i in range(self.n_layers))

    def layer(self, layer: int) -> tuple[Tensor, Tensor] | None:
        """The cached `(k, v)` of `layer`, each `(batch, kv_heads, seq, head_dim)`, or `None`."""
        self._check_layer(layer)
        k, v = self._k[layer], self._v[layer]
        if k is None or v is None:
            return None
        return k, v

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append new keys/values `(batch, kv_heads, new, head_dim)`; return all of them.

        Raises:
            KVCacheError: if `k`/`v` do not match each other or the cached batch/heads/head_dim.
        """
        self._check_layer(layer)
        if k.ndim != 4 or k.shape[:-1] != v.shape[:-1]:
            raise KVCacheError(
                f"k and v must be (batch, kv_heads, new_tokens, head_dim) with matching leading "
                f"dims, got k {tuple(k.shape)}, v {tuple(v.shape)}"
            )
        old_k, old_v = self._k[layer], self._v[layer]
        if old_k is None or old_v is None:
            if self.max_len is None:
                self._k[layer], self._v[layer] = k, v
                return k, v
            b, h, _, _ = k.shape
            self._k_buf[layer] = k.new_empty((b, h, self.max_len, k.shape[-1]))
            self._v_buf[layer] = v.new_empty((b, h, self.max_len, v.shape[-1]))
            return self._write(layer, 0, k, v)
        if (
            old_k.shape[:2] != k.shape[:2]
            or old_k.shape[-1] != k.shape[-1]
            or old_v.shape[-1] != v.shape[-1]
        ):
            raise KVCacheError(
                f"new keys {tuple(k.shape)} / values {tuple(v.shape)} do not match the cached "
                f"{tuple(old_k.shape)} / {tuple(old_v.shape)} of layer {layer} in batch, heads "
                f"or head_dim"
            )
        if self._k_buf[layer] is not None:
            return self._write(layer, old_k.shape[-2], k, v)
        new_k, new_v = torch.cat((old_k, k), dim=-2), torch.cat((old_v, v), dim=-2)
        self._k[layer], self._v[layer] = new_k, new_v
        return new_k, new_v

    def _write(self, layer: int, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Copy new keys/values into the preallocated buffers at `start`; return the prefix views."""
        k_buf, v_buf = self._k_buf[layer], self._v_buf[layer]
        if k_buf is None or v_buf is None or self.max_len is None:  # pragma: no cover - invariant
            raise KVCacheError(f"layer {layer} has no preallocated buffers")
        end = start + k.shape[-2]
        if end > self.max_len:
            raise KVCacheError(
                f"layer {layer} would hold {end} tokens, more than max_len={self.max_len} "
                f"(new keys {tuple(k.shape)})"
            )
        k_buf[..., start:end, :] = k
        v_buf[..., start:end, :] = v
        self._k[layer], self._v[layer] = k_buf[..., :end, :], v_buf[..., :end, :]
        return k_buf[..., :end, :], v_buf[..., :end, :]

    def set(self, layer: int, k: Tensor, v: Tensor) -> None:
        """Store `(k, v)` for `layer`, replacing what was there (used for cross-attention memory)."""
        self._check_layer(layer)
        self._k[layer], self._v[layer] = k, v
        self._k_buf[layer] = self._v_buf[layer] = None  # later appends to it concatenate

    def crop(self, length: int) -> None:
        """Keep only the first `length` tokens of every layer (e.g. to reject speculative tokens)."""
        if length < 0:
            raise KVCacheError(f"length must be >= 0, got {length}")
        for i in range(self.n_layers):
            k, v = self._k[i], self._v[i]
            if k is not None and v is not None:  # with buffers, later appends overwrite the tail
                self._k[i], self._v[i] = k[..., :length, :], v[..., :length, :]

    def reorder(self, batch_indices: Tensor) -> None:
        """Select/reorder the batch rows of every layer (beam search keeps the surviving beams)."""
        for i in range(self.n_layers):
            k, v = self._k[i], self._v[i]
            if k is not None and v is not None:
                idx = batch_indices.to(k.device)
                k_buf, v_buf = self._k_buf[i], self._v_buf[i]
                if k_buf is not None and v_buf is not None:
                    n = k.shape[-2]
                    self._k_buf[i], self._v_buf[i] = (
                        k_buf.index_select(0, idx),
                        v_buf.index_select(0, idx),
                    )
                    self._k[i], self._v[i] = self._k_buf[i][..., :n, :], self._v_buf[i][..., :n, :]  # type: ignore[index]
                else:
                    self._k[i], self._v[i] = k.index_select(0, idx), v.index_select(0, idx)

    def reset(self) -> None:
        """Forget everything."""
        self._k = [None] * self.n_layers
        self._v = [None] * self.n_layers
        self._k_buf = [None] * self.n_layers
        self._v_buf = [None] * self.n_layers
