"""`fms-llm finetune {sft,dpo,grpo}`: fine-tuning runs from TOML presets plus `--set` overrides.

A run is five sections, each a dataclass whose fields are the only keys allowed (as for
`fms-llm train`, see [fms_llm.train.config][]): `[model]` (the saved model to start from and an
optional quantisation of its frozen base), `[lora]`, `[data]`, `[train]`
([TrainArgs][fms_llm.finetune.common.TrainArgs]) and `[method]` (DPO's and GRPO's knobs).
Presets `sft`, `dpo` and `grpo` ship in `fms_llm/finetune/presets/`. Everything is checked before
any work: an unknown key, a missing model directory, a LoRA target that matches nothing.

The result is a complete model directory, `out_dir/model` (adapters merged, `tokenizer.json`, and
the chat template in `tokenizer_config.json`), `out_dir/adapter.safetensors` when LoRA was used,
and `out_dir/metrics.json` with the held-out exact-match accuracy before and after.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from fms_dl.files import atomic_write_text
from fms_llm.finetune.chat import IM_END, IM_START, ChatTemplate
from fms_llm.finetune.common import FinetuneError, TrainArgs
from fms_llm.finetune.data import (
    Example,
    arithmetic,
    chatterbot_dialogues,
    preference_pairs,
    split,
    story_qa,
)
from fms_llm.finetune.lora import LoRAConfig, apply_lora, lora_state_dict, merge_lora
from fms_llm.models import GPT, load_pretrained
from fms_llm.tokenizer import BPETokenizer
from fms_llm.train.config import ConfigError, _parse_value, _update

__all__ = [
    "METHODS",
    "FinetuneConfig",
    "add_chat_tokens",
    "load_finetune_config",
    "run_finetune",
]

METHODS = ("sft", "dpo", "grpo")


@dataclass
class ModelSection:
    """`path`: a saved model directory (`config.json`, `model.safetensors`, `tokenizer.json`).
    `quantize`: `"none"`, or the frozen base in `"int8"`, `"int4"` or `"nf4"` (QLoRA; needs LoRA)."""

    path: str = ""
    quantize: str = "none"


@dataclass
class LoRASection:
    """LoRA on the linear layers named in `targets` (comma-separated, peft-style suffixes)."""

    enabled: bool = False
    r: int = 8
    alpha: float = 16.0
    targets: str = "q_proj,k_proj,v_proj,out_proj"
    dropout: float = 0.0


@dataclass
class DataSection:
    """`source`: `"synthetic"` (story questions and arithmetic), `"stories"`, `"arithmetic"`,
    `"dialogues"` (chatterbot-corpus, SFT only) or a JSON-lines file of `{"messages": [...]}`
    (SFT only). `held_out`: `"template"` or `"entity"`: the split kept for evaluation."""

    source: str = "synthetic"
    n: int = 4000
    seed: int = 0
    held_out: str = "template"
    eval_n: int = 200


@dataclass
class MethodSection:
    """DPO: `beta`. GRPO: `beta` (the KL coefficient), `group_size`, `max_new_tokens`,
    `temperature`, `clip_eps`."""

    beta: float = 0.1
    group_size: int = 8
    max_new_tokens: int = 8
    temperature: float = 1.0
    clip_eps: float = 0.2


@dataclass
class FinetuneConfig:
    """A whole fine-tuning run."""

    model: ModelSection = field(default_factory=ModelSection)
    lora: LoRASection = field(default_factory=LoRASection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainArgs = field(default_factory=TrainArgs)
    method: MethodSection = field(default_factory=MethodSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, method: str) -> None:
        """Check values and combinations; raise `ConfigError` naming the key."""
        if method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {method!r}")
        if self.model.quantize not in ("none", "int8", "int4", "nf4"):
            raise ConfigError(
                f"model.quantize must be none, int8, int4 or nf4, got {self.model.quantize!r}"
            )
        if self.model.quantize != "none" and not self.lora.enabled:
            raise ConfigError("model.quantize needs lora.enabled=true (a quantised base is frozen)")
        if self.data.held_out not in ("template", "entity"):
            raise ConfigError(
                f"data.held_out must be template or entity, got {self.data.held_out!r}"
            )
        if self.data.n < 2 or self.data.eval_n < 1:
            raise ConfigError(
                f"data.n must be >= 2 and data.eval_n >= 1, got {self.data.n}, {self.data.eval_n}"
            )
        if method != "sft" and self.data.source not in ("synthetic", "stories", "arithmetic"):
            raise ConfigError(
                f"data.source={self.data.source!r}: {method} needs examples with known answers "
                "(synthetic, stories or arithmetic)"
            )
        if not self.train.steps > self.train.warmup_steps >= 0:
            raise ConfigError(
                f"train.warmup_steps={self.train.warmup_steps} must be in [0, steps={self.train.steps})"
            )
        if self.method.beta <= 0:
            raise ConfigError(f"method.beta must be > 0, got {self.method.beta}")
        if self.method.group_size < 2:
            raise ConfigError(f"method.group_size must be >= 2, got {self.method.group_size}")


_SECTIONS = {"model", "lora", "data", "train", "method"}


def load_finetune_config(
    method: str, preset_or_path: str | None = None, overrides: list[str] | None = None
) -> FinetuneConfig:
    """Read the preset named like the method (or `preset_or_path`), apply `section.key=value`
    overrides, validate.

    Raises:
        ConfigError: unknown preset/section/key, wrong type, impossible values.
    """
    name = preset_or_path or method
    if name in METHODS:
        text = (
            resources.files("fms_llm.finetune").joinpath(f"presets/{name}.toml").read_text("utf-8")
        )
        source = f"preset {name}"
    else:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"config {name!r} is neither a preset {METHODS} nor an existing file")
        text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML ({exc})") from None
    cfg = FinetuneConfig()
    items = [(s, v, source) for s, v in raw.items()]
    for item in overrides or []:
        key, sep, value = item.partition("=")
        section, dot, key_name = key.strip().partition(".")
        if not sep or not dot:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        items.append((section, {key_name: _parse_value(value.strip())}, "override"))
    for section, values, where in items:
        if section not in _SECTIONS:
            raise ConfigError(
                f"{where}: unknown section [{section}]; expected one of {sorted(_SECTIONS)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: [{section}] must be a table, got {values!r}")
        _update(cfg, section, values, where)  # type: ignore[arg-type]
    try:
        TrainArgs(**dataclasses.asdict(cfg.train))
    except FinetuneError as err:
        raise ConfigError(str(err).replace("TrainArgs: ", "train.")) from None
    cfg.validate(method)
    return cfg


def add_chat_tokens(model: GPT, tokenizer: BPETokenizer) -> tuple[GPT, BPETokenizer]:
    r"""Give a base model and its tokenizer the chat special tokens, if they lack them.

    The tokenizer gains `<|im_start|>` and `<|im_end|>` (the next free ids); the embedding (and
    an untied head) gains one row each, set to the mean of the existing rows (a neutral start,
    as is usual when adding tokens). A model that has them already is returned unchanged.
    """
    missing = [s for s in (IM_START, IM_END) if s not in tokenizer.special_tokens]
    if not missing:
        return model, tokenizer
    tok = BPETokenizer(
        tokenizer.vocab,
        tokenizer.merges,
        special_tokens=[*tokenizer.special_tokens, *missing],
        pattern=tokenizer.pattern,
    )
    n_old, n_new = model.config.vocab_size, max(tok.vocab) + 1
    config = dataclasses.replace(model.config, vocab_size=n_new)
    grown = type(model)(config)
    state = model.state_dict()
    with torch.no_grad():
        for key in ("tok_emb.weight", "lm_head.weight"):
            w = state[key]
            extra = w.mean(dim=0, keepdim=True).expand(n_new - n_old, -1)
            state[key] = torch.cat([w, extra], dim=0)
    grown.load_state_dict(state)
    return grown, tok


def _examples(cfg: FinetuneConfig) -> tuple[list[Example], list[Example]]:
    d = cfg.data
    if d.source == "synthetic":
        ex = story_qa(d.n * 2 // 3, seed=d.seed) + arithmetic(d.n - d.n * 2 // 3, seed=d.seed)
    elif d.source == "stories":
        ex = story_qa(d.n, seed=d.seed)
    elif d.source == "arithmetic":
        ex = arithmetic(d.n, seed=d.seed)
    else:
        return [], []
    train, test = split(ex, d.held_out)  # type: ignore[arg-type]
    return train, test[: d.eval_n]


def _conversations(cfg: FinetuneConfig, train: list[Example]) -> list[list[dict[str, Any]]]:
    d = cfg.data
    if train:
        return [list(e.messages) for e in train]
    if d.source == "dialogues":
        return [list(c) for c in chatterbot_dialogues()][: d.n]
    path = Path(d.source)
    if not path.is_file():
        raise ConfigError(
            f"data.source={d.source!r} is neither synthetic, stories, arithmetic, dialogues nor a file"
        )
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            row = json.loads(line)
            if not isinstance(row, dict) or "messages" not in row:
                raise ConfigError(f"{path}:{i + 1}: each line must be an object with 'messages'")
            out.append(row["messages"])
    return out


def _atomic_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=1) + "\n")


# what may differ between a run and its resumption (how it is watched and where it runs)
_RESUME_FREE = {("train", "progress"), ("train", "device"), ("train", "log_every")}


def _check_run_dir(cfg: FinetuneConfig, method: str, out_dir: Path, resume: bool) -> None:
    """Refuse to overwrite another run; on resume, require the run's method and config."""
    run_file = out_dir / "run.json"
    now: dict[str, dict[str, Any]] = cfg.to_dict()
    if not resume:
        if run_file.exists() or (out_dir / "checkpoints").is_dir():
            raise ConfigError(
                f"train.out_dir={str(out_dir)!r} already holds a run; pass --resume to continue "
                "it or choose another --out-dir (nothing was overwritten)"
            )
        return
    if not run_file.is_file():
        raise ConfigError(f"--resume: {run_file} does not exist; there is no run to resume")
    if cfg.train.checkpoint_every is None:
        raise ConfigError("--resume needs train.checkpoint_every (the run's checkpoint interval)")
    saved = json.loads(run_file.read_text(encoding="utf-8"))
    diffs = [] if saved.get("method") == method else ["method"]
    for section, values in now.items():
        old = saved.get("config", {}).get(section, {})
        diffs += [
            f"{section}.{k}"
            for k, v in values.items()
            if (section, k) not in _RESUME_FREE and old.get(k) != v
        ]
    if diffs:
        raise ConfigError(
            f"--resume: the config differs from the run in {out_dir} in {', '.join(diffs)}; "
            "resume with the same settings"
        )


def run_finetune(method: str, cfg: FinetuneConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run `method` (`"sft"`, `"dpo"` or `"grpo"`) as `cfg` says; returns the metrics written
    to `out_dir/metrics.json`.

    The run directory gets `run.json` (the method and config) first. With `resume`, a run killed
    in `out_dir` continues from its newest checkpoint (`train.checkpoint_every`) and ends with
    the same weights as an uninterrupted run; without it, an existing run is never overwritten.
    """
    from fms_llm.finetune.dpo import dpo
    from fms_llm.finetune.grpo import grpo
    from fms_llm.finetune.sft import accuracy, sft
    from fms_llm.quantize import QuantizedLinear, quantize_linears

    cfg.validate(method)
    model_dir = Path(cfg.model.path)
    if not (model_dir / "tokenizer.json").is_file():
        raise ConfigError(
            f"model.path={cfg.model.path!r} has no tokenizer.json: give a model directory "
            "written by `fms-llm train` or `fms-llm finetune`"
        )
    if cfg.train.out_dir is None:
        raise ConfigError("train.out_dir must be set (where the fine-tuned model goes)")
    out_dir = Path(cfg.train.out_dir)
    _check_run_dir(cfg, method, out_dir, resume)
    base = load_pretrained(model_dir, map_location=cfg.train.device)
    model, tok = add_chat_tokens(base, BPETokenizer.load(model_dir / "tokenizer.json"))
    train, test = _examples(cfg)
    metrics: dict[str, Any] = {"method": method, "config": cfg.to_dict()}
    if test:
        metrics["held_out_accuracy_before"] = accuracy(model, tok, test)
    reference = None
    if method != "sft":
        import copy

        reference = copy.deepcopy(model).eval()
    if cfg.lora.enabled:
        if cfg.model.quantize != "none":
            quantize_linears(
                model,
                cfg.model.quantize,  # type: ignore[arg-type]
                targets=r"blocks\..*",
                group_size=None if cfg.model.quantize == "int8" else 32,
            )
        lcfg = LoRAConfig(
            r=cfg.lora.r,
            alpha=cfg.lora.alpha,
            targets=tuple(t.strip() for t in cfg.lora.targets.split(",") if t.strip()),
            dropout=cfg.lora.dropout,
        )
        torch.manual_seed(cfg.train.seed)  # the adapters' initialisation: the same run twice
        apply_lora(model, lcfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        _atomic_json(out_dir / "run.json", {"method": method, "config": cfg.to_dict()})
    if method == "sft":
        result = sft(model, tok, _conversations(cfg, train), cfg.train, resume=resume).metrics
    elif method == "dpo":
        assert reference is not None
        result = dpo(
            model, tok, preference_pairs(train, seed=cfg.data.seed), cfg.train,
            beta=cfg.method.beta, reference=reference, resume=resume,
        ).metrics  # fmt: skip
    else:
        assert reference is not None
        result = grpo(
            model, tok, train, cfg.train, group_size=cfg.method.group_size,
            beta=cfg.method.beta, clip_eps=cfg.method.clip_eps,
            temperature=cfg.method.temperature, max_new_tokens=cfg.method.max_new_tokens,
            reference=reference, resume=resume,
        ).metrics  # fmt: skip
    metrics["train"] = result
    if cfg.lora.enabled:
        save_file(
            {k: v.contiguous() for k, v in lora_state_dict(model).items()},
            str(out_dir / "adapter.safetensors"),
        )
        merge_lora(model)
        for name, m in list(model.named_modules()):  # layers quantised but not adapted
            if isinstance(m, QuantizedLinear):
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, m.to_linear())
    if test:
        metrics["held_out_accuracy_after"] = accuracy(model, tok, test)
    saved = model.save_pretrained(out_dir / "model")
    tok.save(saved / "tokenizer.json")
    ChatTemplate().save(saved)
    _atomic_json(out_dir / "metrics.json", metrics)
    return metrics


def _section_keys() -> dict[str, list[str]]:
    """Every section's keys (for `--help`)."""
    sections = {
        "model": ModelSection,
        "lora": LoRASection,
        "data": DataSection,
        "train": TrainArgs,
        "method": MethodSection,
    }
    return {s: sorted(typing.get_type_hints(c)) for s, c in sections.items()}
