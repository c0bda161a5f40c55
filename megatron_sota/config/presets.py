"""Loads a model preset of conf/model/ into the typed ModelConfig without Hydra's app (planner, benchmarks).

It reads files only; validation of a whole job stays in config/validation.py.
"""

from __future__ import annotations

import os
from typing import Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from megatron_sota.config.files import conf_dir
from megatron_sota.config.model import ModelConfig
from megatron_sota.errors import MegatronSotaError

MODEL_CONF_DIR = conf_dir("model")


def preset_names() -> list[str]:
    return sorted(name[: -len(".yaml")] for name in os.listdir(MODEL_CONF_DIR) if name.endswith(".yaml"))


def load_model_preset(name: str) -> ModelConfig:
    """conf/model/<name>.yaml merged over ModelConfig's defaults, checked against its fields."""
    path = os.path.join(MODEL_CONF_DIR, f"{name}.yaml")
    if not os.path.isfile(path):
        raise MegatronSotaError(f"model preset '{name}': no file {path} (presets: {', '.join(preset_names())})")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(path))
    except OmegaConfBaseException as err:
        raise MegatronSotaError(f"{path}: not a valid model preset: {err}") from None
    return OmegaConf.to_object(merged)


def preset_vocab_size(name: str) -> Optional[int]:
    """conf/model/<name>.yaml's vocab_size, the nominal one a tokenizer's replaces; None where no such preset ships."""
    if not os.path.isfile(os.path.join(MODEL_CONF_DIR, f"{name}.yaml")):
        return None
    return load_model_preset(name).vocab_size
