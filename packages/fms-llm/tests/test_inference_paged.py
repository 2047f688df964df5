"""The paged KV cache: the block allocator's bookkeeping, and a forward pass over a paged cache
that equals the model's own forward (to 1e-5, greedy tokens equal) for GPT-2 and Llama layouts."""

from __future__ import annotations

import pytest
import torch

from fms_llm.inference.paged import BlockAllocator, NoFreeBlocks, PagedKVCache, slots_for
from fms_llm.inference.runner import Chunk, PagedModel
from fms_llm.models import GPT, GPTConfig, Llama, LlamaConfig


def _model(family: str) -> GPT:
    torch.manual_seed(0)
    if family == "gpt":
        model = GPT(GPTConfig(vocab_size=67, n_layers=2, d_model=32, n_heads=4, max_seq_len=48))
    else:
        model = Llama(LlamaConfig(vocab_size=67, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2,
                                  max_seq_len=48))  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def test_slots_follow_the_block_table() -> None:
    assert slots_for([5, 2], 0, 6, 4) == [20, 21, 22, 23, 8, 9]
    assert slots_for([5, 2], 3, 5, 4) == [23, 8]


def test_allocator_counts_references_and_runs_out() -> None:
    alloc = BlockAllocator(3, 2, prefix_caching=False)
    blocks = [alloc.allocate() for _ in range(3)]
    assert sorted(blocks) == [0, 1, 2]
    assert alloc.num_free == 0
    with pytest.raises(NoFreeBlocks, match="all 3 blocks"):
        alloc.allocate()
    alloc.release(blocks[:1])
    assert alloc.num_free == 1
    assert alloc.ref_count(blocks[0]) == 0
    with pytest.raises(ValueError, match="released more often"):
        alloc.release(blocks[:1])


def test_prefix_sharing_finds_full_blocks_by_their_whole_prefix() -> None:
    alloc = BlockAllocator(6, 2)
    tokens = [1, 2, 3, 4, 5]
    table = [alloc.allocate() for _ in range(3)]
    alloc.register_full(table, tokens, 2)
    # the same first four tokens: both full blocks are shared, the partial one is not
    assert alloc.match_prefix([1, 2, 3, 4, 9], 3) == table[:2]
    assert alloc.ref_count(table[0]) == 2
    assert alloc.hits == 2
    # the second block's tokens after a different first block: no match (the chain names its parent)
    assert alloc.match_prefix([7, 7, 3, 4], 2) == []
    # released blocks stay findable until evicted
    alloc.release(table)
    alloc.release(table[:2])
    assert alloc.num_held == 0
    assert alloc.num_free == 6
    assert alloc.match_prefix([1, 2, 3, 4], 2) == table[:2]
    alloc.release(table[:2])
    for _ in range(6):  # the pool is reused, the evictable blocks last and forgotten
        alloc.allocate()
    assert alloc.match_prefix([1, 2, 3, 4], 2) == []


def test_pool_memory_is_the_kv_arithmetic() -> None:
    cache = PagedKVCache(3, 2, 8, num_blocks=5, block_size=4)
    assert cache.bytes == 2 * 3 * 5 * 4 * 2 * 8 * 4  # 2 (k, v) * L * blocks * B * Hkv * dh * fp32
    with pytest.raises(ValueError, match="block_size must be a positive int, got 0"):
        PagedKVCache(3, 2, 8, num_blocks=5, block_size=0)


@pytest.mark.parametrize("family", ["gpt", "llama"])
def test_paged_prefill_and_decode_equal_the_models_forward(family: str) -> None:
    """Two sequences, scattered non-contiguous blocks, prefilled in chunks and then decoded one
    token a step side by side: every logit equals the model's full forward to 1e-5."""
    model = _model(family)
    runner = PagedModel(model, num_blocks=16, block_size=4)
    torch.manual_seed(1)
    seqs = [torch.randint(0, 67, (19,)).tolist(), torch.randint(0, 67, (13,)).tolist()]
    tables = [[9, 2, 14, 5, 0], [3, 11, 7, 1]]
    with torch.inference_mode():
        full = [model(torch.tensor([s]))[0] for s in seqs]
        # prefill: sequence 0 in two chunks (the second after a cached context), sequence 1 at once
        out = runner.forward(
            [Chunk(seqs[0][:6], 0, tables[0], 6), Chunk(seqs[1][:9], 0, tables[1], 9)]
        )
        torch.testing.assert_close(out[0], full[0][:6], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[1], full[1][:9], atol=1e-5, rtol=1e-5)
        out = runner.forward([Chunk(seqs[0][6:12], 6, tables[0], 6)])
        torch.testing.assert_close(out[0], full[0][6:12], atol=1e-5, rtol=1e-5)
        # decode: one token each per step, both in one call
        for t in range(4):
            out = runner.forward(
                [
                    Chunk([seqs[0][12 + t]], 12 + t, tables[0]),
                    Chunk([seqs[1][9 + t]], 9 + t, tables[1]),
                ]
            )
            torch.testing.assert_close(out[0][0], full[0][12 + t], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out[1][0], full[1][9 + t], atol=1e-5, rtol=1e-5)
            assert out[0].argmax(-1).item() == full[0][12 + t].argmax().item()


def test_paged_model_names_what_it_refuses() -> None:
    with pytest.raises(
        ValueError, match=r"model must be an fms_llm\.models\.GPT or Llama, got Linear"
    ):
        PagedModel(torch.nn.Linear(2, 2), 4, 4)
    runner = PagedModel(_model("gpt"), num_blocks=16, block_size=4)
    with pytest.raises(ValueError, match="every chunk needs at least one token"):
        runner.forward([Chunk([], 0, [0])])
    with pytest.raises(ValueError, match="exceeds max_seq_len=48"):
        runner.forward([Chunk([1], 48, list(range(13)))])
