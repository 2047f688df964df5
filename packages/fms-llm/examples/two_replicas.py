"""Data parallelism in miniature: two processes each take half the batch, average their gradients
with one all-reduce, and get the one-process gradient; then the memory calculator says what a
7B model needs per GPU under each strategy.

Run from the repository root: `uv run python packages/fms-llm/examples/two_replicas.py`.
"""

import torch
import torch.distributed as dist

from fms_llm.distributed.launch import DistEnv, spawn
from fms_llm.distributed.memory import count_parameters, estimate_memory
from fms_llm.models.gpt import LlamaConfig


def model_and_batch() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The same model and global batch of 8 rows in every process."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 1))
    x = torch.randn(8, 16, dtype=torch.float64)
    return model.double(), x, x.sum(1, keepdim=True).sin()


def replica(env: DistEnv) -> list[list[float]]:
    """One rank: the mean loss of its 8 / W rows, backward, then the mean over ranks."""
    model, x, y = model_and_batch()
    rows = slice(env.rank * 8 // env.world_size, (env.rank + 1) * 8 // env.world_size)
    torch.nn.functional.mse_loss(model(x[rows]), y[rows]).backward()
    grads = [p.grad for p in model.parameters()]
    for g in grads:  # what DistributedDataParallel does during the backward pass, in buckets
        dist.all_reduce(g)
        g /= env.world_size
    return [g.flatten().tolist() for g in grads]  # plain lists travel back to the parent


if __name__ == "__main__":
    model, x, y = model_and_batch()
    torch.nn.functional.mse_loss(model(x), y).backward()  # one process, the whole batch
    rank0, rank1 = spawn(replica, 2, start_method="fork")  # two gloo processes on this CPU
    one = [p.grad.flatten() for p in model.parameters()]
    gap = max(
        (torch.tensor(a, dtype=torch.float64) - b).abs().max().item()
        for a, b in zip(rank0, one, strict=True)
    )
    print(f"2 replicas vs 1 process: largest gradient difference {gap:.0e}")
    print("both ranks hold the same gradients:", rank0 == rank1)

    llama_7b = LlamaConfig(n_layers=32, d_model=4096, n_heads=32, d_ff=11008, max_seq_len=4096)
    print(f"Llama 2 7B: {count_parameters(llama_7b).total / 1e9:.2f}B parameters; peak GiB a GPU,")
    for strategy, world in (("none", 1), ("ddp", 8), ("fsdp", 8), ("tp", 8)):
        est = estimate_memory(
            llama_7b, strategy=strategy, world_size=world, batch_size=world if strategy in ("ddp", "fsdp") else 1,
            seq_len=4096, param_bytes=4, grad_bytes=4, optimizer_bytes=8, activation_bytes=2,
        )  # fmt: skip
        print(
            f"  {strategy:>4} over {world}: {est.peak / 2**30:6.1f} (one 4096-token sequence a rank)"
        )
