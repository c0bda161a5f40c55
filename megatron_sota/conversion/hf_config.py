"""Hugging Face Llama `config.json` <-> this project's ModelConfig.

Writes the keys both transformers 4.x (`rope_theta`, `rope_scaling`, `torch_dtype`) and 5.x
(`rope_parameters`, `dtype`) read, and refuses on import anything the model here cannot
compute exactly: other architectures, biases, other activations, RoPE variants other than
Llama 3's with megatron-core's constants.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from megatron_sota.config.model import ModelConfig
from megatron_sota.errors import MegatronSotaError

# megatron-core's Llama 3 RoPE scaling fixes these; only the factor is configurable.
LLAMA3_LOW_FREQ_FACTOR = 1.0
LLAMA3_HIGH_FREQ_FACTOR = 4.0
LLAMA3_ORIGINAL_MAX_POSITIONS = 8192

TORCH_DTYPE_NAMES = {"bf16": "bfloat16", "fp32": "float32", "fp16": "float16"}


def _rope_scaling(model: ModelConfig) -> Optional[Dict[str, Any]]:
    if model.rope_scaling_factor is None:
        return None
    return {
        "rope_type": "llama3",
        "factor": float(model.rope_scaling_factor),
        "low_freq_factor": LLAMA3_LOW_FREQ_FACTOR,
        "high_freq_factor": LLAMA3_HIGH_FREQ_FACTOR,
        "original_max_position_embeddings": LLAMA3_ORIGINAL_MAX_POSITIONS,
    }


def hf_config_from_model(
    model: ModelConfig, vocab_size: int, dtype: str, special_ids: Dict[str, Optional[int]], reward_head: bool = False
) -> Dict[str, Any]:
    """The config.json of a LlamaForCausalLM computing what `model` computes (vocabulary unpadded), or with
    `reward_head` of a one-label LlamaForSequenceClassification (it scores the last token that is not
    pad_token_id, so special_ids must name a pad id no real sequence ends with)."""
    if model.rotary_percent != 1.0:
        raise MegatronSotaError(
            f"model.rotary_percent={model.rotary_percent}: Hugging Face's Llama rotates every channel (1.0); "
            "this model cannot be exported as LlamaForCausalLM"
        )
    scaling = _rope_scaling(model)
    rope_parameters = {"rope_type": "default", "rope_theta": float(model.rotary_base)}
    if scaling:
        rope_parameters = {**scaling, "rope_theta": float(model.rotary_base)}
    head: Dict[str, Any] = {"architectures": ["LlamaForCausalLM"]}
    if reward_head:
        head = {"architectures": ["LlamaForSequenceClassification"], "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}
    return {
        **head,
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": model.hidden_size,
        "intermediate_size": model.ffn_hidden_size,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_attention_heads,
        "num_key_value_heads": model.num_query_groups,
        "head_dim": model.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": model.max_position_embeddings,
        "rms_norm_eps": model.norm_epsilon,
        "rope_theta": float(model.rotary_base),
        "rope_scaling": scaling,
        "rope_parameters": rope_parameters,
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": model.attention_dropout,
        "initializer_range": model.init_method_std,
        "tie_word_embeddings": not (model.untie_embeddings_and_output_weights or reward_head),
        "use_cache": True,
        "torch_dtype": TORCH_DTYPE_NAMES[dtype],
        "dtype": TORCH_DTYPE_NAMES[dtype],
        **special_ids,
    }


def read_hf_config(hf_dir: str) -> Dict[str, Any]:
    path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(path):
        raise MegatronSotaError(f"{path} is missing: expected a Hugging Face model directory")
    try:
        with open(path) as handle:
            config = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise MegatronSotaError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(config, dict):
        raise MegatronSotaError(f"{path}: expected a JSON object, found {type(config).__name__}")
    return config


def model_from_hf_config(config: Dict[str, Any], path: str, name: str) -> ModelConfig:
    """The ModelConfig of a Llama-architecture config.json; `path` names the file in errors."""

    def fail(key: str, expected: str) -> MegatronSotaError:
        return MegatronSotaError(f"{path}: {key}={config.get(key)!r}, expected {expected}")

    if config.get("model_type") != "llama":
        raise fail("model_type", "'llama' (only the Llama architecture converts exactly)")
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        if not isinstance(config.get(key), int) or config[key] <= 0:
            raise fail(key, "a positive integer")
    if config.get("hidden_act", "silu") != "silu":
        raise fail("hidden_act", "'silu' (SwiGLU)")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key, False):
            raise fail(key, "false: models here have no biases")
    if config.get("partial_rotary_factor", 1.0) != 1.0:
        raise fail("partial_rotary_factor", "1.0")
    heads = config["num_attention_heads"]
    groups = config.get("num_key_value_heads") or heads
    if heads % groups:
        raise fail("num_key_value_heads", f"a divisor of num_attention_heads={heads}")
    rope = config.get("rope_parameters") or {}
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    return ModelConfig(
        name=name,
        num_layers=config["num_hidden_layers"],
        hidden_size=config["hidden_size"],
        ffn_hidden_size=config["intermediate_size"],
        num_attention_heads=heads,
        num_query_groups=groups,
        kv_channels=config.get("head_dim") or config["hidden_size"] // heads,
        vocab_size=config["vocab_size"],
        max_position_embeddings=config.get("max_position_embeddings", 2048),
        rotary_base=float(theta),
        rope_scaling_factor=_scaling_factor(config, path),
        norm_epsilon=float(config.get("rms_norm_eps", 1e-6)),
        init_method_std=float(config.get("initializer_range", 0.02)),
        attention_dropout=float(config.get("attention_dropout", 0.0)),
        untie_embeddings_and_output_weights=not config.get("tie_word_embeddings", False),
    )


def _scaling_factor(config: Dict[str, Any], path: str) -> Optional[float]:
    scaling = config.get("rope_scaling") or config.get("rope_parameters") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return None
    expected = {
        "low_freq_factor": LLAMA3_LOW_FREQ_FACTOR,
        "high_freq_factor": LLAMA3_HIGH_FREQ_FACTOR,
        "original_max_position_embeddings": LLAMA3_ORIGINAL_MAX_POSITIONS,
    }
    if kind != "llama3" or any(float(scaling.get(k, -1)) != v for k, v in expected.items()):
        raise MegatronSotaError(
            f"{path}: rope scaling {scaling} is not supported; megatron-core implements rope_type 'llama3' "
            f"with {expected} and any factor, or no scaling"
        )
    return float(scaling["factor"])


def llama_export_problems(hf_dir: str) -> tuple[dict[str, Any], list[str]]:
    """The config.json of `hf_dir` and every reason it is not a Hugging Face Llama export with weights."""
    try:
        config = read_hf_config(hf_dir)  # names config.json when missing or not JSON
    except MegatronSotaError as err:
        return {}, [str(err)]
    path = os.path.join(hf_dir, "config.json")
    problems = []
    if config.get("model_type") != "llama":
        problems.append(f"{path}: model_type: expected 'llama', found {config.get('model_type')!r}")
    architectures = config.get("architectures") or []
    if "LlamaForCausalLM" not in architectures:
        problems.append(f"{path}: architectures: expected ['LlamaForCausalLM'], found {architectures!r}")
    names = sorted(os.listdir(hf_dir))
    if not any(n.endswith(".safetensors") for n in names):
        problems.append(f"{hf_dir}: expected safetensors weights (model.safetensors or shards), found {names}")
    return config, problems
