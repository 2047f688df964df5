r"""Pretraining a language model from scratch: the main job behind `fms-llm train`.

One run, top-down ([pretrain][fms_llm.train.pretrain.pretrain]):

1. **Data.** The corpus's documents are split by document into train and validation; a
   byte-level BPE ([fms_llm.tokenizer.BPETokenizer][]) is learnt on the *training* documents
   (or loaded), and both splits are tokenised into memory-mapped shards
   ([fms_llm.data.shards][]). Tokenizer and shards are cached, keyed by everything they depend on,
   so the second run starts at once.
2. **Model.** A [GPT][fms_llm.models.GPT] or [Llama][fms_llm.models.Llama] sized by `[model]`.
3. **Optimisation.** [fms_dl.torch.optim.AdamW][] with decoupled weight decay on matrices only
   (not on norms, biases or position tables, as in GPT-2/nanoGPT), the
   [cosine schedule with linear warm-up][fms_dl.torch.optim.cosine_with_warmup], gradient
   accumulation and clipping, bf16 autocast where the device supports it, all run by
   [fms_dl.torch.trainer.Trainer][]. Micro-batch $i$ is
   [random_windows][fms_llm.data.batching.random_windows]`(seed, i)`, a pure function, so
   `resume=True` continues bitwise-exactly from the newest checkpoint.
4. **Evaluation** every `eval_every` steps: validation loss, perplexity and bits per byte; on the
   synthetic corpus also the loss of whole validation documents against the Bayes-optimal floor
   and the gap between them.
5. **Output** in `out_dir`: `log.jsonl` (one JSON object per log/eval event), `checkpoints/`,
   `run.json` (the config), and `model/`: `config.json`, `model.safetensors` (the Hugging Face
   layout) and `tokenizer.json`, readable by `fms-llm generate`/`eval` and by transformers. Then
   a short sample.

**Several processes.** Under `torchrun --nproc-per-node N -m fms_llm.cli train ...` every
process runs this function: it joins the process group
([fms_llm.distributed.launch.init_distributed][]), `train.parallel` picks DDP, FSDP or tensor
parallelism ([fms_llm.distributed.strategies][]), rank 0 tokenises (the others then read the
cache), each data-parallel rank trains on its slice of the global batch `train.batch_size`, and
rank 0 alone writes the run directory, the logs, the consolidated checkpoints and the model. The
run equals the one-process run of the same config (tested to 1e-6 in the loss).

Model FLOPs utilisation (MFU) is achieved FLOP/s ($\text{tokens/s} \times$
[flops_per_token][fms_llm.models.gpt.GPT.flops_per_token]) over the device's peak: on CUDA the
datasheet bf16 peak of known GPUs, on CPU the arithmetic bound cores x clock x SIMD FMA FLOPs per
cycle ([fms_dl.torch.peak][]): upper bounds both, so MFU is at most 100% however loaded the
machine is when it is measured.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fms_dl.files import atomic_write_text
from fms_dl.torch import (
    AdamW,
    Trainer,
    TrainerConfig,
    cosine_with_warmup,
    peak_flops,
    resolve_device,
    seed_everything,
)
from fms_dl.torch.checkpoint import latest_checkpoint
from fms_llm.data.corpus import CorpusError, kjv_path, load_documents
from fms_llm.data.shards import ShardError, TokenShards, split_documents, write_token_shards
from fms_llm.data.synthetic import Story, StoryGenerator, entropy_floor
from fms_llm.distributed.launch import DistEnv, init_distributed, shutdown
from fms_llm.distributed.strategies import Strategy, make_strategy
from fms_llm.distributed.trainer import DistributedTrainer
from fms_llm.evaluate import document_loss, window_loss
from fms_llm.generate import generate_text
from fms_llm.models import cpu_kernels
from fms_llm.models.gpt import GPT, GPTConfig, Llama, LlamaConfig, ModelConfig
from fms_llm.tokenizer import BPETokenizer
from fms_llm.train.config import ConfigError, RunConfig
from fms_llm.train.locks import FileLock, RunDirLock

__all__ = [
    "EOS_TOKEN",
    "PretrainResult",
    "build_model",
    "cache_dir",
    "configure_optimizer",
    "estimate_peak_flops",
    "model_config",
    "prepare_data",
    "pretrain",
]

EOS_TOKEN = "<|endoftext|>"
"""The end-of-text special token that follows every document."""


def cache_dir(config: RunConfig | None = None) -> Path:
    """Where tokenizers and shards are cached: `data.cache_dir`, `$FMS_LLM_CACHE`, or
    `~/.cache/fms-llm`."""
    if config is not None and config.data.cache_dir:
        return Path(config.data.cache_dir)
    return Path(os.environ.get("FMS_LLM_CACHE") or Path.home() / ".cache" / "fms-llm")


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------


@dataclass
class PreparedData:
    """Tokenizer and shards of a run, and for the synthetic corpus its validation stories."""

    tokenizer: BPETokenizer
    shards: TokenShards
    eos_id: int
    val_stories: list[Story] = field(default_factory=list)


def _corpus_key(config: RunConfig) -> dict[str, Any]:
    d = config.data
    if d.corpus == "synthetic":
        return {"corpus": "synthetic", "n": d.synthetic_docs, "seed": d.synthetic_seed}
    if d.corpus == "kjv":
        return {"corpus": "kjv", "size": kjv_path().stat().st_size}
    path = Path(d.corpus)
    if not path.exists():
        raise CorpusError(f"corpus path {path} does not exist")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {
        "corpus": str(path.resolve()),
        "files": [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files],
    }


def _documents(config: RunConfig) -> tuple[list[str], list[Story]]:
    d = config.data
    if d.corpus == "synthetic":
        stories = StoryGenerator(d.synthetic_seed).stories(d.synthetic_docs)
        return [s.text for s in stories], stories
    return load_documents(d.corpus), []


def _load_tokenizer(path: str | Path) -> tuple[BPETokenizer, int]:
    tok = BPETokenizer.load(path)
    if EOS_TOKEN not in tok.special_tokens:
        raise ConfigError(
            f"tokenizer {path} has no {EOS_TOKEN!r} special token, which fms-llm appends to every "
            f"document; its special tokens are {sorted(tok.special_tokens)}"
        )
    return tok, tok.special_tokens[EOS_TOKEN]


def prepare_data(config: RunConfig, *, progress: bool = True) -> PreparedData:
    """Load the corpus, get the tokenizer and the token shards (from the cache when present).

    Raises:
        CorpusError: the corpus is missing or empty.
        ConfigError: the tokenizer file lacks the end-of-text token.
    """
    d = config.data
    key: dict[str, Any] = {
        "v": 1,
        **_corpus_key(config),
        "val_fraction": d.val_fraction,
        "split_seed": 0,
    }
    if d.tokenizer == "train":
        key["tokenizer"] = {"train": d.vocab_size}
    else:
        tok_path = Path(d.tokenizer)
        if not tok_path.is_file():
            raise ConfigError(
                f"data.tokenizer={d.tokenizer!r} is neither 'train' nor an existing tokenizer.json"
            )
        key["tokenizer"] = hashlib.sha256(tok_path.read_bytes()).hexdigest()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    root = cache_dir(config) / "data" / digest
    # one process fills a cold cache entry; the others wait for it, then read what it wrote
    with FileLock(root.parent / f"{digest}.lock", blocking=True):
        return _prepare_data(config, key, digest, root, progress)


def _prepare_data(
    config: RunConfig, key: dict[str, Any], digest: str, root: Path, progress: bool
) -> PreparedData:
    d = config.data
    tok_file, shard_dir = root / "tokenizer.json", root / "shards"
    docs: list[str] | None = None
    stories: list[Story] = []
    if not (tok_file.is_file() and (shard_dir / "meta.json").is_file()) or d.corpus == "synthetic":
        docs, stories = _documents(config)
    if d.tokenizer != "train":
        tokenizer, eos_id = _load_tokenizer(d.tokenizer)
    elif tok_file.is_file():
        tokenizer, eos_id = _load_tokenizer(tok_file)
    else:
        assert docs is not None
        train_idx, _ = split_documents(len(docs), val_fraction=d.val_fraction, seed=0)
        tokenizer = BPETokenizer.train(
            [docs[i] for i in train_idx],
            d.vocab_size,
            special_tokens=[EOS_TOKEN],
            progress=progress,
        )
        root.mkdir(parents=True, exist_ok=True)
        tokenizer.save(tok_file)
        eos_id = tokenizer.special_tokens[EOS_TOKEN]
    if (shard_dir / "meta.json").is_file():
        shards = TokenShards.open(shard_dir)
    else:
        assert docs is not None
        shards = write_token_shards(
            docs,
            partial(tokenizer.encode_batch, allowed_special="all"),
            shard_dir,
            vocab_size=tokenizer.vocab_size,
            eos_id=eos_id,
            val_fraction=d.val_fraction,
            seed=0,
            fingerprint=key["tokenizer"] if isinstance(key["tokenizer"], str) else digest,
            progress=progress,
        )
    if shards.vocab_size != tokenizer.vocab_size or shards.eos_id != eos_id:
        raise ShardError(
            f"{shard_dir} was written with vocab_size={shards.vocab_size}, eos_id={shards.eos_id} "
            f"but the tokenizer has {tokenizer.vocab_size}, {eos_id}; delete {root} to re-tokenise"
        )
    val_stories: list[Story] = []
    if stories:
        _, val_idx = split_documents(len(stories), val_fraction=d.val_fraction, seed=0)
        val_stories = [stories[i] for i in val_idx]
    return PreparedData(tokenizer, shards, eos_id, val_stories)


# --------------------------------------------------------------------------------------------------
# model and optimiser
# --------------------------------------------------------------------------------------------------


def model_config(config: RunConfig, vocab_size: int) -> ModelConfig:
    """The [ModelConfig][fms_llm.models.ModelConfig] of `config.model`, with `vocab_size` tokens."""
    m = config.model
    cfg_cls = LlamaConfig if m.family == "llama" else GPTConfig
    return cfg_cls(
        vocab_size=vocab_size,
        n_layers=m.n_layers,
        d_model=m.d_model,
        n_heads=m.n_heads,
        n_kv_heads=m.n_kv_heads,
        d_ff=m.d_ff,
        max_seq_len=m.max_seq_len,
        dropout=m.dropout,
        rope_theta=m.rope_theta,
    )


def build_model(config: RunConfig, vocab_size: int) -> GPT:
    """The model named by `config.model`, with `vocab_size` tokens."""
    cls = Llama if config.model.family == "llama" else GPT
    return cls(model_config(config, vocab_size))


def configure_optimizer(model: nn.Module, config: RunConfig) -> AdamW:
    """AdamW with weight decay on matrices (2-D weights) only, as in GPT-2 and nanoGPT.

    Norm gains, biases and the learned position table are not decayed: shrinking them toward 0
    has no regularising meaning (a norm gain of 0 switches a feature off).
    """
    t = config.train
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and not name.startswith("pos_emb") else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": t.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), eps=1e-8, weight_decay=t.weight_decay)


def estimate_peak_flops(device: torch.device) -> float:
    """Peak FLOP/s for MFU on `device` over this process's threads: an upper bound on the
    hardware ([fms_dl.torch.peak.peak_flops][]), so MFU never reads above 100%."""
    return peak_flops(device, threads=torch.get_num_threads())


# --------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------


@dataclass
class PretrainResult:
    """What a run produced."""

    out_dir: Path
    model_dir: Path
    metrics: dict[str, float]
    sample: str
    model: GPT
    tokenizer: BPETokenizer


_RESUME_KEYS = ("model", "data")
_RESUME_TRAIN_KEYS = (
    "seed",
    "batch_size",
    "seq_len",
    "grad_accum_steps",
    "max_steps",
    "lr",
    "min_lr",
    "warmup_steps",
    "weight_decay",
    "beta1",
    "beta2",
    "clip_grad_norm",
)


def _check_run_dir(config: RunConfig, out_dir: Path, resume: bool) -> None:
    """Refuse to overwrite another run; on resume, require the same run config."""
    run_file = out_dir / "run.json"
    ckpt = (
        latest_checkpoint(out_dir / "checkpoints") if (out_dir / "checkpoints").is_dir() else None
    )
    if not resume:
        if run_file.exists() or ckpt is not None:
            raise ConfigError(
                f"train.out_dir={str(out_dir)!r} already holds a run; pass --resume to continue it "
                "or choose another --out-dir (nothing was overwritten)"
            )
        return
    if not run_file.is_file():
        raise ConfigError(f"--resume: {run_file} does not exist; there is no run to resume")
    saved = json.loads(run_file.read_text(encoding="utf-8"))
    now = config.to_dict()
    diffs = [k for k in _RESUME_KEYS if saved.get(k) != now[k]]
    diffs += [
        f"train.{k}" for k in _RESUME_TRAIN_KEYS if saved.get("train", {}).get(k) != now["train"][k]
    ]
    if diffs:
        raise ConfigError(
            f"--resume: the config differs from the run in {out_dir} in {', '.join(diffs)}; "
            "resume with the same settings"
        )


def pretrain(config: RunConfig, *, resume: bool = False) -> PretrainResult:
    """Train a language model as described by `config` (see the module docstring).

    Args:
        config: a validated [RunConfig][fms_llm.train.config.RunConfig].
        resume: continue the run in `train.out_dir` from its newest checkpoint (at any world
            size and with any `train.parallel`).

    Returns:
        The run's result; in a distributed run the consolidated model on rank 0 (the other
        ranks return their shard and an empty sample).

    Raises:
        ConfigError: invalid config, a device that is not available here, an existing run
            without `resume`, a resume with another config.
        fms_llm.distributed.launch.DistributedError: a model or batch that does not split over
            the processes (e.g. heads not divisible by the tensor-parallel world size).
        CorpusError: missing or empty corpus.
        fms_dl.torch.checkpoint.CheckpointError: a corrupt checkpoint on resume (raised when it
            is loaded, before any training step or write).
    """
    config.validate()
    t = config.train
    try:  # before any tokenising or writing: a typo or a missing GPU fails here
        resolve_device(t.device)
    except ValueError as exc:
        raise ConfigError(f"train.device: {exc}") from exc
    env = init_distributed(t.device)  # one process unless started by torchrun
    try:
        strategy = make_strategy(t.parallel, env)
        strategy.check(model_config(config, config.data.vocab_size), t.batch_size)
        return _pretrain(config, resume, env, strategy)
    finally:
        shutdown(env)


def _pretrain(config: RunConfig, resume: bool, env: DistEnv, strategy: Strategy) -> PretrainResult:
    out_dir = Path(config.train.out_dir)
    lock = RunDirLock(out_dir)
    created = not out_dir.exists()
    if env.is_main:  # under torchrun rank 0 alone holds it, for the whole job
        lock.acquire()
    try:
        return _locked_pretrain(config, resume, env, strategy, out_dir)
    finally:
        lock.release()
        if env.is_main and created and [p.name for p in out_dir.iterdir()] == [".lock"]:
            # a run that failed before writing anything leaves no directory behind
            lock.path.unlink(missing_ok=True)
            out_dir.rmdir()


def _locked_pretrain(
    config: RunConfig, resume: bool, env: DistEnv, strategy: Strategy, out_dir: Path
) -> PretrainResult:
    t, m = config.train, config.model
    device = env.device
    _check_run_dir(config, out_dir, resume)
    if t.threads is not None:
        torch.set_num_threads(t.threads)
    seed_everything(t.seed)

    with env.main_first():  # rank 0 fills the cache, then the others read it
        data = prepare_data(config, progress=t.progress and env.is_main)
    train_shards = data.shards.split("train")
    val_shards = data.shards.split("val")
    if data.shards.n_tokens("val") < t.seq_len + 1:
        raise CorpusError(
            f"the validation split has {data.shards.n_tokens('val')} tokens, fewer than one window "
            f"of seq_len + 1 = {t.seq_len + 1}; use a larger corpus or data.val_fraction"
        )
    model = build_model(config, data.tokenizer.vocab_size)
    model.to(device)
    wrapped = strategy.wrap(model)  # FSDP and TP replace the parameters: the optimiser comes after
    optimizer = configure_optimizer(strategy.unwrap(wrapped), config)
    part = (strategy.data_rank, strategy.data_world_size)
    tokens_per_step = t.batch_size * t.seq_len * t.grad_accum_steps
    bytes_per_token = data.shards.n_bytes("val") / data.shards.n_tokens("val")

    def batch_fn(index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = _windows(train_shards, t.batch_size, t.seq_len, t.seed, index, part)
        return torch.from_numpy(x), torch.from_numpy(y)

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return model(x, y)  # type: ignore[no-any-return]  # the head fused with the loss

    if t.compile:
        # the training step only: evaluation and sampling stay eager, since their shapes vary
        # (documents of every length) and each new shape would compile again; the model itself
        # is not wrapped, so its state_dict keys (and the checkpoints) stay the same
        loss_fn = torch.compile(loss_fn)

    val_docs: list[list[int]] = []
    floor: dict[str, float] = {}
    if data.val_stories:
        stories = data.val_stories[:400]
        encoded = data.tokenizer.encode_batch([s.text for s in stories], allowed_special="all")
        keep = [i for i, ids in enumerate(encoded) if len(ids) + 1 <= m.max_seq_len]
        stories = [stories[i] for i in keep]
        val_docs = [encoded[i] for i in keep]
        if stories:
            floor = entropy_floor(stories, partial(data.tokenizer.encode, allowed_special="all"))
        n_story_bytes = sum(len(s.text.encode()) for s in stories)

    def eval_fn(model: nn.Module) -> dict[str, float]:
        model = strategy.unwrap(model)  # every rank evaluates (FSDP and TP need them all)
        out = window_loss(
            model,
            val_shards,
            seq_len=t.seq_len,
            batch_size=t.batch_size,
            max_batches=t.eval_batches,
            bytes_per_token=bytes_per_token,
        )
        out.pop("tokens")
        if val_docs:
            doc = document_loss(model, val_docs, eos_id=data.eos_id, n_bytes=n_story_bytes)
            out["doc_loss"] = doc["loss"]
            out["doc_bits_per_byte"] = doc["bits_per_byte"]
            out["floor_loss"] = floor["nats_per_token"]
            out["floor_bits_per_byte"] = floor["bits_per_byte"]
            out["gap_to_floor"] = doc["loss"] - floor["nats_per_token"]
        return out

    model_dir = out_dir / "model"
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    if not resume and env.is_main:
        atomic_write_text(out_dir / "run.json", json.dumps(config.to_dict(), indent=1))
    peak = t.peak_flops if t.peak_flops is not None else estimate_peak_flops(device)
    trainer = (
        functools.partial(DistributedTrainer, strategy=strategy) if env.distributed else Trainer
    )(
        wrapped,
        optimizer,
        TrainerConfig(
            max_steps=t.max_steps,
            grad_accum_steps=t.grad_accum_steps,
            clip_grad_norm=t.clip_grad_norm,
            precision=t.precision,
            eval_every=t.eval_every,
            log_every=t.log_every,
            checkpoint_every=t.checkpoint_every,
            checkpoint_dir=out_dir / "checkpoints",
            checkpoint_keep_last=2,
            log_path=out_dir / "log.jsonl",
            progress=t.progress,
            device=str(device),
        ),
        batch_fn=batch_fn,
        loss_fn=loss_fn,
        lr_schedule=lambda step: cosine_with_warmup(
            step,
            max_lr=t.lr,
            warmup_steps=t.warmup_steps,
            total_steps=t.max_steps,
            min_lr=t.min_lr,
        ),
        eval_fn=eval_fn,
        tokens_per_step=tokens_per_step,
        flops_per_token=model.flops_per_token(t.seq_len),
        peak_flops=peak,
    )
    if resume:
        found = trainer.resume_checkpoint()  # on every rank: under torchrun it is a broadcast
        if env.is_main:
            _trim_log(out_dir / "log.jsonl", _checkpoint_step(found))
    metrics = trainer.fit(resume=resume)
    if strategy.name in ("fsdp", "tp"):  # gather the shards (every rank) into one model (rank 0)
        weights = strategy.full_model_state(wrapped)
        if env.is_main:
            model = build_model(config, data.tokenizer.vocab_size).to(device)
            model.load_state_dict(weights)
        del weights
    model.eval()
    if not env.is_main:
        return PretrainResult(out_dir, model_dir, metrics, "", model, data.tokenizer)
    model.save_pretrained(model_dir, data.tokenizer, eos_token=EOS_TOKEN)
    s = config.sample
    sample = generate_text(
        model,
        data.tokenizer,
        s.prompt,
        s.max_new_tokens,
        temperature=s.temperature,
        top_k=s.top_k,
        top_p=s.top_p,
        seed=t.seed,
        eos_id=data.eos_id,
    )
    summary = {
        "metrics": metrics,
        "parameters": model.num_parameters(),
        "non_embedding_parameters": model.num_parameters(non_embedding=True),
        "tokens_trained": t.max_steps * tokens_per_step,
        "world_size": env.world_size,
        "parallel": strategy.name,
        "sample_prompt": s.prompt,
        "sample": sample,
        # which code ran the elementwise chains and the loss's softmax on a CPU: C or PyTorch
        "cpu_kernels": cpu_kernels.status() if device.type == "cpu" else None,
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    return PretrainResult(out_dir, model_dir, metrics, sample, model, data.tokenizer)


def _checkpoint_step(path: Path | None) -> int:
    """The step of a checkpoint directory `step-00000200` (0 when there is none)."""
    if path is None:
        return 0
    digits = path.name.rpartition("-")[2]
    if not digits.isdigit():
        raise ConfigError(f"--resume: cannot read the step of the checkpoint {path}")
    return int(digits)


def _trim_log(path: Path, step: int) -> None:
    """Before resuming at `step`: drop the log's records of later steps (the killed run logged
    them, the resumed run logs them again) and a torn last line; rewritten atomically."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the half-written line of a killed run
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))


def _windows(
    shards: list[np.memmap[Any, np.dtype[Any]]],
    batch: int,
    seq_len: int,
    seed: int,
    index: int,
    part: tuple[int, int] = (0, 1),
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, np.dtype[np.int64]]]:
    from fms_llm.data.batching import random_windows

    return random_windows(
        shards, batch_size=batch, seq_len=seq_len, seed=seed, index=index, part=part
    )
