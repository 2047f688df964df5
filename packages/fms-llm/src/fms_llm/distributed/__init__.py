"""Distributed training: data, sharded and tensor parallelism on torch.distributed.

- [fms_llm.distributed.launch][]: join the process group torchrun describes (or
  [spawn][fms_llm.distributed.launch.spawn] local processes), NCCL on CUDA and gloo on the CPU;
- [fms_llm.distributed.strategies][]: [DDP][fms_llm.distributed.strategies.DDP],
  [FSDP][fms_llm.distributed.strategies.FSDP] (FSDP2, `fully_shard`) and
  [TensorParallel][fms_llm.distributed.strategies.TensorParallel]: how the model is wrapped,
  which slice of the batch a rank takes, and the consolidated checkpoint state;
- [fms_llm.distributed.tensor_parallel][]: Megatron's conjugate operators $f$ and $g$ as autograd
  functions over all-reduce, [ColumnParallelLinear][fms_llm.distributed.tensor_parallel.ColumnParallelLinear]
  and [RowParallelLinear][fms_llm.distributed.tensor_parallel.RowParallelLinear];
- [fms_llm.distributed.memory][]: the memory of a rank (parameters, gradients, AdamW state,
  activations) and the bytes it sends, per strategy and world size:
  [estimate_memory][fms_llm.distributed.memory.estimate_memory];
- [fms_llm.distributed.trainer][]: the fms-dl Trainer on several processes, with consolidated,
  world-size-independent checkpoints.

Training: `torchrun --nproc-per-node N -m fms_llm.cli train --parallel {ddp,fsdp,tp} ...`.
"""

from fms_llm.distributed.launch import (
    DistEnv,
    DistributedError,
    init_distributed,
    shutdown,
    spawn,
)
from fms_llm.distributed.memory import (
    MemoryEstimate,
    ParameterCount,
    count_parameters,
    estimate_memory,
)
from fms_llm.distributed.strategies import (
    DDP,
    FSDP,
    STRATEGIES,
    SingleProcess,
    Strategy,
    TensorParallel,
    make_strategy,
)
from fms_llm.distributed.tensor_parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    TensorParallelError,
    check_tensor_parallel,
    tensor_parallel,
)
from fms_llm.distributed.trainer import DistributedTrainer

__all__ = [
    "DDP",
    "FSDP",
    "STRATEGIES",
    "ColumnParallelLinear",
    "DistEnv",
    "DistributedError",
    "DistributedTrainer",
    "MemoryEstimate",
    "ParameterCount",
    "RowParallelLinear",
    "SingleProcess",
    "Strategy",
    "TensorParallel",
    "TensorParallelError",
    "check_tensor_parallel",
    "count_parameters",
    "estimate_memory",
    "init_distributed",
    "make_strategy",
    "shutdown",
    "spawn",
    "tensor_parallel",
]
