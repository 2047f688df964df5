"""The torch training toolkit: optimisers, schedules, checkpoints, seeding and a `Trainer`.

Installed with the `torch` extra (`pip install "fms-dl[torch]"`); `import fms_dl` never imports
torch. The same training discipline the numpy engine teaches, written once for real torch
models and used by every layer above:

* [fms_dl.torch.seed][]: seed every generator, capture and restore RNG states.
* [fms_dl.torch.optim][]: AdamW, SGD and Lion from scratch; schedules as pure functions;
  `set_lr` and `clip_grad_norm`.
* [fms_dl.torch.checkpoint][]: atomic, hash-verified safetensors checkpoints (never pickle).
* [fms_dl.torch.peak][]: the peak FLOP/s of a device, an upper bound, so MFU is at most 100%.
* [fms_dl.torch.trainer][]: the training loop with accumulation, clipping, bf16, evaluation,
  JSON-lines logs, callbacks and bitwise-exact resume.
"""

from fms_dl.torch.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from fms_dl.torch.optim import (
    SGD,
    AdamW,
    Lion,
    clip_grad_norm,
    constant,
    cosine_with_warmup,
    exponential,
    one_cycle,
    set_lr,
    step_decay,
)
from fms_dl.torch.peak import peak_flops
from fms_dl.torch.seed import (
    capture_rng_state,
    default_device,
    resolve_device,
    restore_rng_state,
    seed_everything,
)
from fms_dl.torch.trainer import Callback, Trainer, TrainerConfig

__all__ = [
    "SGD",
    "AdamW",
    "Callback",
    "CheckpointError",
    "Lion",
    "Trainer",
    "TrainerConfig",
    "capture_rng_state",
    "clip_grad_norm",
    "constant",
    "cosine_with_warmup",
    "default_device",
    "exponential",
    "latest_checkpoint",
    "load_checkpoint",
    "one_cycle",
    "peak_flops",
    "resolve_device",
    "restore_rng_state",
    "save_checkpoint",
    "seed_everything",
    "set_lr",
    "step_decay",
]
