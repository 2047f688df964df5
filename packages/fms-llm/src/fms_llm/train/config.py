"""Run configuration: TOML presets shipped in the package, plus command-line overrides.

A run is described by four sections, each a dataclass whose fields are the only keys allowed:
`[model]` ([ModelSection][fms_llm.train.config.ModelSection]), `[data]`, `[train]` and
`[sample]`. Presets live in `fms_llm/train/presets/*.toml` (`tiny`, the default, `small` and
`gpt2-124m`); a preset or any TOML file is read, then overrides such as
`train.max_steps=200` or `model.family="llama"` are applied. An unknown section or key, or a value
of the wrong type, is a [ConfigError][fms_llm.train.config.ConfigError] naming it, raised before
any work starts.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "PRESETS",
    "ConfigError",
    "DataSection",
    "ModelSection",
    "RunConfig",
    "SampleSection",
    "TrainSection",
    "apply_overrides",
    "load_config",
]

PRESETS = ("tiny", "small", "gpt2-124m")
"""Names of the presets shipped in the package (`tiny` is the default of `fms-llm train`)."""


class ConfigError(ValueError):
    """An unknown key, a value of the wrong type, or an impossible combination in a run config."""


@dataclass
class ModelSection:
    """Model shape. `family` is `"gpt"` (GPT-2 layout) or `"llama"`; `None` sizes take defaults."""

    family: str = "gpt"
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    n_kv_heads: int | None = None
    d_ff: int | None = None
    max_seq_len: int = 128
    dropout: float = 0.0
    rope_theta: float = 10000.0


@dataclass
class DataSection:
    """Corpus and tokenizer.

    `corpus`: `"kjv"` (built-in), `"synthetic"`, or a text file/folder. `tokenizer`: `"train"` (learn a
    byte-level BPE of `vocab_size` on the training documents at start: about 4 s for the built-in
    corpus, then cached) or a `tokenizer.json` path holding the `<|endoftext|>` special token. `synthetic_docs` and `synthetic_seed` fix the
    synthetic corpus (independent of the run seed, so seeds vary the model, not the data). Token shards are cached under `cache_dir` (default: `$FMS_LLM_CACHE` or
    `~/.cache/fms-llm`) keyed by corpus, tokenizer and split.
    """

    corpus: str = "kjv"
    tokenizer: str = "train"
    vocab_size: int = 2048
    val_fraction: float = 0.02
    synthetic_docs: int = 20000
    synthetic_seed: int = 0
    cache_dir: str | None = None


@dataclass
class TrainSection:
    """Optimisation: AdamW, cosine schedule with linear warm-up, accumulation, clipping, logging.

    `batch_size` is the *global* micro-batch: under torchrun each of $W$ data-parallel processes
    takes `batch_size / W` windows of it. `parallel` is how several processes share the work:
    `"auto"` (DDP on several processes), `"none"`, `"ddp"`, `"fsdp"` or `"tp"` (tensor
    parallelism); see [fms_llm.distributed][].
    """

    seed: int = 1337
    batch_size: int = 16
    seq_len: int = 128
    grad_accum_steps: int = 1
    max_steps: int = 1000
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    clip_grad_norm: float = 1.0
    precision: str = "auto"
    compile: bool = False
    device: str | None = None
    threads: int | None = None
    eval_every: int = 250
    eval_batches: int = 20
    log_every: int = 10
    checkpoint_every: int | None = 250
    out_dir: str = "runs/tiny"
    progress: bool = True
    peak_flops: float | None = None
    parallel: str = "auto"


@dataclass
class SampleSection:
    """The sample printed at the end of training."""

    prompt: str = "And God said"
    max_new_tokens: int = 120
    temperature: float = 0.8
    top_k: int | None = 50
    top_p: float | None = None


@dataclass
class RunConfig:
    """A whole run: the four sections."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    sample: SampleSection = field(default_factory=SampleSection)

    def to_dict(self) -> dict[str, Any]:
        """The config as nested plain dicts (JSON/TOML-serialisable, `None` kept)."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Check value ranges and combinations; raise [ConfigError][fms_llm.train.config.ConfigError]."""
        m, d, t = self.model, self.data, self.train
        if m.family not in ("gpt", "llama"):
            raise ConfigError(f"model.family must be 'gpt' or 'llama', got {m.family!r}")
        for name in ("n_layers", "d_model", "n_heads", "max_seq_len"):
            if getattr(m, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(m, name)}")
        if m.d_model % m.n_heads:
            raise ConfigError(
                f"model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}"
            )
        if m.n_kv_heads is not None and (m.n_kv_heads < 1 or m.n_heads % m.n_kv_heads):
            raise ConfigError(
                f"model.n_heads={m.n_heads} must be a multiple of model.n_kv_heads={m.n_kv_heads}"
            )
        if m.n_kv_heads is not None and m.family == "gpt" and m.n_kv_heads != m.n_heads:
            raise ConfigError("model.n_kv_heads (grouped-query attention) needs family 'llama'")
        if not 0.0 <= m.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {m.dropout}")
        if t.seq_len > m.max_seq_len:
            raise ConfigError(
                f"train.seq_len={t.seq_len} exceeds model.max_seq_len={m.max_seq_len}"
            )
        for name in ("batch_size", "seq_len", "grad_accum_steps", "max_steps", "log_every"):
            if getattr(t, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(t, name)}")
        if not 0 <= t.warmup_steps < t.max_steps:
            raise ConfigError(
                f"train.warmup_steps={t.warmup_steps} must be in [0, max_steps={t.max_steps}); "
                "lower it with --set train.warmup_steps=N"
            )
        if t.lr <= 0 or t.min_lr < 0 or t.min_lr > t.lr:
            raise ConfigError(
                f"need 0 <= train.min_lr <= train.lr and lr > 0, got {t.min_lr}, {t.lr}"
            )
        if t.parallel not in ("auto", "none", "ddp", "fsdp", "tp"):
            raise ConfigError(
                f"train.parallel must be auto, none, ddp, fsdp or tp, got {t.parallel!r}"
            )
        if t.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"train.precision must be auto, fp32 or bf16, got {t.precision!r}")
        if not 0.0 < d.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
        if d.vocab_size < 257:
            raise ConfigError(
                f"data.vocab_size must be >= 257 (256 bytes + end-of-text), got {d.vocab_size}"
            )
        if d.synthetic_docs < 2:
            raise ConfigError(f"data.synthetic_docs must be >= 2, got {d.synthetic_docs}")
        # the sample is drawn after training: a bad setting must fail here, not after the run
        sm = self.sample
        if sm.max_new_tokens < 0:
            raise ConfigError(f"sample.max_new_tokens must be >= 0, got {sm.max_new_tokens}")
        if not (sm.temperature >= 0.0 and math.isfinite(sm.temperature)):
            raise ConfigError(f"sample.temperature must be finite and >= 0, got {sm.temperature}")
        if sm.top_k is not None and sm.top_k < 1:
            raise ConfigError(f"sample.top_k must be >= 1 or none, got {sm.top_k}")
        if sm.top_p is not None and not 0.0 < sm.top_p <= 1.0:
            raise ConfigError(f"sample.top_p must be in (0, 1] or none, got {sm.top_p}")


_SECTIONS: dict[str, type[Any]] = {
    "model": ModelSection,
    "data": DataSection,
    "train": TrainSection,
    "sample": SampleSection,
}


def _coerce(where: str, value: Any, annotation: Any) -> Any:
    """Check `value` against a field's annotation (int is accepted where float is expected)."""
    hint = annotation
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for opt in options:
        if opt is type(None) and value is None:
            return None
        if opt is bool and isinstance(value, bool):
            return value
        if opt is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if opt is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if opt is str and isinstance(value, str):
            return value
    names = " or ".join("none" if o is type(None) else o.__name__ for o in options)
    raise ConfigError(f"{where} must be {names}, got {value!r} ({type(value).__name__})")


def _from_dict(raw: dict[str, Any], source: str) -> RunConfig:
    cfg = RunConfig()
    for section, values in raw.items():
        if section not in _SECTIONS:
            raise ConfigError(
                f"{source}: unknown section [{section}]; expected one of {sorted(_SECTIONS)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table, got {values!r}")
        _update(cfg, section, values, source)
    return cfg


def _update(cfg: RunConfig, section: str, values: dict[str, Any], source: str) -> None:
    obj = getattr(cfg, section)
    hints = typing.get_type_hints(type(obj))
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(
                f"{source}: unknown key {section}.{key}; known keys: {', '.join(sorted(hints))}"
            )
        setattr(obj, key, _coerce(f"{source}: {section}.{key}", value, hints[key]))


def _parse_value(text: str) -> Any:
    """A TOML value (`3`, `1e-3`, `true`, `"x"`), the literal `none`, or else a bare string."""
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply `section.key=value` overrides in order (values parsed as TOML, else as strings)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        if section not in _SECTIONS:
            raise ConfigError(
                f"override {item!r}: unknown section {section!r}; expected one of {sorted(_SECTIONS)}"
            )
        _update(cfg, section, {name: _parse_value(text.strip())}, "override")
    return cfg


def load_config(
    preset_or_path: str | Path = "tiny", overrides: list[str] | None = None
) -> RunConfig:
    """Read a preset name or TOML file, apply overrides, validate.

    Args:
        preset_or_path: one of [PRESETS][fms_llm.train.config.PRESETS] or a path to a TOML file.
        overrides: `section.key=value` strings.

    Raises:
        ConfigError: unknown preset/section/key, wrong type, or impossible values.
    """
    name = str(preset_or_path)
    if name in PRESETS:
        text = resources.files("fms_llm.train").joinpath(f"presets/{name}.toml").read_text("utf-8")
        source = f"preset {name}"
    else:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(
                f"config {name!r} is neither a preset ({', '.join(PRESETS)}) nor an existing file"
            )
        text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML ({exc})") from None
    cfg = _from_dict(raw, source)
    apply_overrides(cfg, overrides or [])
    cfg.validate()
    return cfg
