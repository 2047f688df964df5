r"""A paged key/value cache: fixed-size blocks in one pool, a block table per sequence, blocks
shared between sequences with a common prefix.

**Why pages.** A contiguous cache ([fms_transformer.kv_cache.KVCache][]) gives each sequence one
buffer of its maximum length. Serving many requests of unknown length, that either reserves the
worst case for everyone (most of it never written) or copies buffers as they grow. Paging, as an
operating system pages memory (vLLM's PagedAttention, Kwon et al., 2023), cuts the cache into
*blocks* of $B$ token positions. A sequence owns a *block table*, the list of its blocks in
order, so position $t$ lives in block `table[t // B]` at row `t % B`; the flat *slot* of that row
in the pool is

$$\mathrm{slot}(t) = \mathrm{table}[\lfloor t / B \rfloor] \cdot B + (t \bmod B).$$

A sequence then wastes at most $B - 1$ positions (its last block's tail), blocks are handed out
and returned in $O(1)$, and nothing is ever copied when a sequence grows.

**Memory.** One position costs $2 \cdot L \cdot H_{kv} \cdot d_h$ numbers (a key and a value in
each of $L$ layers); the pool is `num_blocks * block_size` positions of that.

**Prefix sharing.** A full block's contents are a function of the tokens in it *and of every
token before it* (attention mixed them in). So a full block is identified by its parent block's
identity and its own tokens, a chain like a hash chain, and two sequences whose prompts agree on
their first $m B$ tokens can share those $m$ blocks: the second one skips computing them. Blocks
are reference counted; a block no sequence holds keeps its contents and stays findable (an
*evictable* block) until the pool runs out of free blocks, when the least recently released one is
reused. Only full blocks are shared, and full blocks are never written again, so no copy-on-write
is needed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["BlockAllocator", "NoFreeBlocks", "PagedKVCache", "slots_for"]


class NoFreeBlocks(RuntimeError):
    """The pool has no free or evictable block left (the scheduler preempts a sequence)."""


class PagedKVCache:
    """The pool: keys and values of `num_blocks * block_size` positions in each layer.

    Stored flat, `(num_blocks * block_size, n_kv_heads, head_dim)` per layer, so that writing the
    new tokens of many sequences is one indexed copy by slot, and reading a sequence's context is
    one gather by its slots.

    Args:
        n_layers: Attention layers.
        n_kv_heads: Key/value heads per layer.
        head_dim: Size of one head.
        num_blocks: Blocks in the pool.
        block_size: Positions per block $B$.
        dtype: Storage dtype (the model's).
        device: Storage device (the model's).
    """

    def __init__(
        self,
        n_layers: int,
        n_kv_heads: int,
        head_dim: int,
        num_blocks: int,
        block_size: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        for name, value in (
            ("n_layers", n_layers),
            ("n_kv_heads", n_kv_heads),
            ("head_dim", head_dim),
            ("num_blocks", num_blocks),
            ("block_size", block_size),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.n_layers, self.n_kv_heads, self.head_dim = n_layers, n_kv_heads, head_dim
        self.num_blocks, self.block_size = num_blocks, block_size
        shape = (num_blocks * block_size, n_kv_heads, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]

    @property
    def bytes(self) -> int:
        """Memory held by the pool: $2 L \\cdot$ `num_blocks` $\\cdot B \\cdot H_{kv} d_h$ numbers."""
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))

    def write(self, layer: int, slots: Tensor, k: Tensor, v: Tensor) -> None:
        """Store keys and values `(n, n_kv_heads, head_dim)` of `n` tokens at `slots` `(n,)`."""
        self.k[layer].index_copy_(0, slots, k)
        self.v[layer].index_copy_(0, slots, v)

    def gather(self, layer: int, slots: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values at `slots` `(batch, length)`, as `(batch, n_kv_heads, length, head_dim)`
        (the layout attention reads)."""
        k = self.k[layer][slots].transpose(1, 2)
        v = self.v[layer][slots].transpose(1, 2)
        return k, v


def slots_for(table: Sequence[int], start: int, stop: int, block_size: int) -> list[int]:
    """The pool slots of positions `start .. stop - 1` of a sequence with block table `table`."""
    return [table[t // block_size] * block_size + t % block_size for t in range(start, stop)]


@dataclass
class _Block:
    ref_count: int = 0
    key: tuple[int, tuple[int, ...]] | None = None  # (parent content id, tokens) once full
    content_id: int = -1  # a unique id of these contents (children's keys name it)


class BlockAllocator:
    """Hands out blocks of a pool of `num_blocks`, counts references, and finds shared prefixes.

    A block is *free* (never used, or its contents forgotten), *held* (reference count above 0),
    or *evictable* (count 0 but contents kept and findable by
    [match_prefix][fms_llm.inference.paged.BlockAllocator.match_prefix]). Allocation takes a free
    block first, then evicts the least recently released evictable one.

    Args:
        num_blocks: Blocks in the pool.
        block_size: Positions per block.
        prefix_caching: Keep and share full blocks (`False`: every released block is free).
    """

    def __init__(self, num_blocks: int, block_size: int, *, prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(
                f"num_blocks and block_size must be >= 1, got {num_blocks} and {block_size}"
            )
        self.num_blocks, self.block_size, self.prefix_caching = (
            num_blocks,
            block_size,
            prefix_caching,
        )
        self._blocks = [_Block() for _ in range(num_blocks)]
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))  # pop() gives block 0 first
        self._evictable: OrderedDict[int, None] = OrderedDict()  # least recently released first
        self._index: dict[tuple[int, tuple[int, ...]], int] = {}
        self._next_content_id = 0
        self.hits = 0  # blocks reused by match_prefix, for the metrics

    # -- counts ------------------------------------------------------------------------------

    @property
    def num_free(self) -> int:
        """Blocks an allocation can take now (free or evictable)."""
        return len(self._free) + len(self._evictable)

    @property
    def num_held(self) -> int:
        """Blocks held by at least one sequence."""
        return self.num_blocks - self.num_free

    def ref_count(self, block: int) -> int:
        """How many sequences hold `block`."""
        return self._blocks[block].ref_count

    # -- allocation --------------------------------------------------------------------------

    def allocate(self) -> int:
        """A block for one new holder (reference count 1).

        Raises:
            NoFreeBlocks: every block is held.
        """
        if self._free:
            block = self._free.pop()
        elif self._evictable:
            block, _ = self._evictable.popitem(last=False)
            self._forget(block)
        else:
            raise NoFreeBlocks(f"all {self.num_blocks} blocks of the KV cache are in use")
        self._blocks[block].ref_count = 1
        return block

    def release(self, blocks: Sequence[int]) -> None:
        """Drop one reference to each of `blocks`; a block nobody holds becomes evictable (if its
        contents are indexed) or free."""
        for block in blocks:
            b = self._blocks[block]
            if b.ref_count < 1:
                raise ValueError(f"block {block} released more often than it was held")
            b.ref_count -= 1
            if b.ref_count == 0:
                if b.key is not None and self.prefix_caching:
                    self._evictable[block] = None
                else:
                    self._forget(block)
                    self._free.append(block)

    def _forget(self, block: int) -> None:
        b = self._blocks[block]
        if b.key is not None and self._index.get(b.key) == block:
            del self._index[b.key]
        b.key, b.content_id = None, -1

    # -- prefix sharing ----------------------------------------------------------------------

    def match_prefix(self, tokens: Sequence[int], max_blocks: int) -> list[int]:
        """Take a reference to the longest run of indexed blocks holding `tokens` from the start
        (at most `max_blocks` of them); returns their ids, in order."""
        if not self.prefix_caching:
            return []
        found: list[int] = []
        parent = -1
        bs = self.block_size
        for i in range(min(max_blocks, len(tokens) // bs)):
            block = self._index.get((parent, tuple(tokens[i * bs : (i + 1) * bs])))
            if block is None:
                break
            found.append(block)
            parent = self._blocks[block].content_id
        for block in found:
            b = self._blocks[block]
            if b.ref_count == 0:
                del self._evictable[block]
            b.ref_count += 1
        self.hits += len(found)
        return found

    def register_full(self, table: Sequence[int], tokens: Sequence[int], n_full: int) -> None:
        """Index the first `n_full` blocks of `table`, now full of the keys and values of `tokens`
        (blocks already indexed are skipped)."""
        if not self.prefix_caching:
            return
        bs = self.block_size
        parent = -1
        for i in range(n_full):
            b = self._blocks[table[i]]
            if b.key is None:
                key = (parent, tuple(tokens[i * bs : (i + 1) * bs]))
                if key in self._index:  # the same contents computed twice: keep the first copy
                    parent = self._blocks[self._index[key]].content_id
                    continue
                b.key, b.content_id = key, self._next_content_id
                self._next_content_id += 1
                self._index[key] = table[i]
            parent = b.content_id
