"""Pretraining: run configs (TOML presets and overrides) and the training run.

- [fms_llm.train.config][]: [RunConfig][fms_llm.train.config.RunConfig], presets, overrides;
- [fms_llm.train.pretrain][]: [pretrain][fms_llm.train.pretrain.pretrain], the main job.
"""

from fms_llm.train.config import PRESETS, ConfigError, RunConfig, apply_overrides, load_config
from fms_llm.train.pretrain import EOS_TOKEN, PretrainResult, prepare_data, pretrain

__all__ = [
    "EOS_TOKEN",
    "PRESETS",
    "ConfigError",
    "PretrainResult",
    "RunConfig",
    "apply_overrides",
    "load_config",
    "prepare_data",
    "pretrain",
]
