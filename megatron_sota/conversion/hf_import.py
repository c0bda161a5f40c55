"""Imports a Hugging Face Llama-architecture directory as a megatron_sota checkpoint at a chosen TP/PP layout.

Everything that can be wrong with the input (architecture, missing or extra tensors, shapes,
missing shards) is found from config.json and the safetensors headers before any process
starts. Then tp*pp ranks each build their part of the real model, fill it from the layers they
hold, and save together through the training checkpoint code, so the result is exactly what
training writes and loads. It also writes the model config as a Hydra preset beside it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Dict, List, Optional

import torch
from omegaconf import OmegaConf

from megatron_sota.config.job import JobConfig
from megatron_sota.config.model import ModelConfig
from megatron_sota.config.optim import PrecisionConfig
from megatron_sota.config.parallel import ParallelConfig
from megatron_sota.config.run import RuntimeConfig, TokenizerConfig
from megatron_sota.config.typed import to_job_config
from megatron_sota.conversion import llama_mapping as names
from megatron_sota.conversion.hf_config import model_from_hf_config, read_hf_config
from megatron_sota.conversion.safetensors_files import SafetensorsDirectory
from megatron_sota.conversion.staged_output import staged_directory
from megatron_sota.errors import MegatronSotaError

# Buffers some exporters save that carry no learned state.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
_DTYPE_NAMES = {"bfloat16": "bf16", "float32": "fp32", "float16": "fp16"}


@dataclass
class ImportOptions:
    load: str
    """A Hugging Face model directory (config.json + model.safetensors or sharded safetensors with index)."""
    save: str
    """The checkpoint directory to write (iter_0000000/ + tracker, and conf/model/<name>.yaml)."""
    tp: int = 1
    pp: int = 1
    dtype: Optional[str] = None
    """fp32, bf16 or fp16 for the stored weights; the config.json dtype when null."""
    name: Optional[str] = None
    """Preset name for the model config (default: the directory's name)."""
    overwrite: bool = False


@dataclass
class ImportSummary:
    out_dir: str
    checkpoint: str
    preset_file: str
    model: ModelConfig
    num_params: int
    seconds: float
    notes: List[str] = field(default_factory=list)


def _tokenizer_config(hf_dir: str) -> TokenizerConfig:
    if os.path.isfile(os.path.join(hf_dir, "tokenizer.json")):
        return TokenizerConfig(type="HuggingFaceTokenizer", model=os.path.abspath(hf_dir))
    if os.path.isfile(os.path.join(hf_dir, "tokenizer.model")):
        return TokenizerConfig(type="SentencePieceTokenizer", model=os.path.abspath(os.path.join(hf_dir, "tokenizer.model")))
    return TokenizerConfig()  # NullTokenizer over the model's vocabulary


def check_hf_weights(weights: SafetensorsDirectory, model: ModelConfig, vocab_size: int, config_path: str) -> None:
    """Every expected tensor present with its shape; nothing the model here cannot hold (biases...)."""
    expected = names.hf_shapes(model, vocab_size)
    present = set(weights.names())
    problems = []
    for name, shape in expected.items():
        if name not in present:
            hint = ""
            if name == names.HF_LM_HEAD:
                hint = f" ({config_path} says tie_word_embeddings=false, which needs a separate lm_head.weight)"
            problems.append(f"{name}: missing from the weights{hint}")
        elif weights.shape(name) != shape:
            problems.append(f"{name}: expected shape {list(shape)} from config.json, found {list(weights.shape(name))}")
    for name in sorted(present - set(expected)):
        if name.endswith(_IGNORED_SUFFIXES) or (name == names.HF_LM_HEAD and not model.untie_embeddings_and_output_weights):
            continue
        reason = "a bias; models here have none" if name.endswith(".bias") else "not part of a Llama model of this config"
        problems.append(f"{name}: unexpected tensor ({reason})")
    if problems:
        shown = problems[:12] + ([f"... and {len(problems) - 12} more"] if len(problems) > 12 else [])
        raise MegatronSotaError(f"{weights.hf_dir} cannot be imported:\n  - " + "\n  - ".join(shown))


def build_import_job(options: ImportOptions) -> JobConfig:
    config_path = os.path.join(options.load, "config.json")
    hf_config = read_hf_config(options.load)
    name = options.name or os.path.basename(os.path.normpath(options.load))
    model = model_from_hf_config(hf_config, config_path, name)
    dtype = options.dtype or _DTYPE_NAMES.get(hf_config.get("dtype") or hf_config.get("torch_dtype"), "fp32")
    job = JobConfig(
        name=f"import_{name}",
        model=model,
        parallel=ParallelConfig(tp=options.tp, pp=options.pp, distributed_optimizer=False),
        precision=PrecisionConfig(dtype=dtype),
        tokenizer=_tokenizer_config(options.load),
        runtime=RuntimeConfig(device="cpu"),
    )
    _check_layout(model, options)
    return job


def _check_layout(model: ModelConfig, options: ImportOptions) -> None:
    problems = []
    if options.tp < 1 or model.num_query_groups % options.tp or model.num_attention_heads % options.tp:
        problems.append(f"--tp {options.tp} must divide num_attention_heads={model.num_attention_heads} and num_key_value_heads={model.num_query_groups}")
    if options.pp < 1 or model.num_layers % options.pp:
        problems.append(f"--pp {options.pp} must divide num_hidden_layers={model.num_layers}")
    if options.dtype not in (None, "fp32", "bf16", "fp16"):
        problems.append(f"--dtype {options.dtype}: expected fp32, bf16 or fp16")
    if problems:
        raise MegatronSotaError("invalid import layout:\n  - " + "\n  - ".join(problems))


def import_checkpoint(options: ImportOptions) -> ImportSummary:
    from megatron_sota.runtime.local_ranks import run_distributed

    start = time.perf_counter()
    job = build_import_job(options)
    weights = SafetensorsDirectory(options.load)
    vocab_size = job.model.vocab_size
    check_hf_weights(weights, job.model, vocab_size, os.path.join(options.load, "config.json"))
    notes = _tokenizer_notes(job, vocab_size)
    job_yaml = OmegaConf.to_yaml(OmegaConf.structured(job))
    with staged_directory(options.save, options.overwrite) as staging:
        run_distributed(_import_rank, options.tp * options.pp, job_yaml, os.path.abspath(options.load), staging, vocab_size)
        preset = os.path.join(staging, "conf", "model", f"{job.model.name}.yaml")
        os.makedirs(os.path.dirname(preset))
        with open(preset, "w") as handle:
            handle.write(f"# Imported from {os.path.abspath(options.load)} by tools/convert_checkpoint.py\n")
            handle.write(OmegaConf.to_yaml(OmegaConf.structured(job.model)))
    out_dir = os.path.abspath(options.save)
    return ImportSummary(
        out_dir=out_dir,
        checkpoint=os.path.join(out_dir, "iter_0000000"),
        preset_file=os.path.join(out_dir, "conf", "model", f"{job.model.name}.yaml"),
        model=job.model,
        num_params=sum(math.prod(shape) for shape in names.hf_shapes(job.model, vocab_size).values()),
        seconds=time.perf_counter() - start,
        notes=notes,
    )


def _tokenizer_notes(job: JobConfig, vocab_size: int) -> List[str]:
    if job.tokenizer.type is None:
        return ["no tokenizer in the directory: training from this checkpoint needs tokenizer=... settings of your own"]
    from megatron_sota.data.tokenizer import build_configured_tokenizer

    tokenizer = build_configured_tokenizer(job.tokenizer, vocab_size)
    if tokenizer.vocab_size != vocab_size:
        return [
            f"the tokenizer has {tokenizer.vocab_size} tokens but config.json's vocab_size is {vocab_size}: "
            f"train with tokenizer.vocab_size={vocab_size}"
            if tokenizer.vocab_size < vocab_size else
            f"the tokenizer has {tokenizer.vocab_size} tokens, more than config.json's vocab_size {vocab_size}"
        ]
    return []


def _import_rank(rank: int, job_yaml: str, hf_dir: str, save_dir: str, vocab_size: int) -> None:
    from megatron.core import parallel_state

    from megatron_sota.checkpointing.manager import CheckpointManager, Progress, checkpoint_layout
    from megatron_sota.model.gpt_builder import build_model_chunks, build_transformer_config, padded_vocab_size
    from megatron_sota.quiet import quiet_megatron
    from megatron_sota.runtime.session import distributed_session

    quiet_megatron()
    job = to_job_config(OmegaConf.create(job_yaml))
    with distributed_session(job.parallel, "cpu", job.runtime.timeout_minutes, job.train.seed):
        config = build_transformer_config(job.model, job.parallel, job.precision, "none", "cpu", use_te=False)
        config.perform_initialization = False  # every weight is overwritten below
        padded = padded_vocab_size(vocab_size, job.model.make_vocab_size_divisible_by, job.parallel.tp)
        chunks = build_model_chunks(job.model, config, padded, job.model.max_position_embeddings, job.train.seed, use_te=False)
        for chunk in chunks:
            for param in chunk.parameters():
                param.data.fill_(float("nan"))  # any weight the import misses shows up below
            fill_from_hf(chunk, SafetensorsDirectory(hf_dir), job.model, padded)
            unset = [n for n, p in chunk.named_parameters() if torch.isnan(p.data).any()]
            if unset:
                raise RuntimeError(f"import left parameters unset (a bug): {unset}")
        manager = CheckpointManager(job.checkpoint, save_dir, vocab_size=vocab_size)
        state = SimpleNamespace(models=chunks, optimizer=None, scheduler=None)
        layout = checkpoint_layout(job.parallel, parallel_state.get_data_parallel_world_size())
        manager.save(state, Progress(), job_yaml, layout, include_optimizer=False)
        manager.close()


def fill_from_hf(chunk: torch.nn.Module, weights: SafetensorsDirectory, model: ModelConfig, padded: int) -> None:
    """Copies into this rank's share of every parameter its slice of the global tensor built from HF weights."""
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, apply_factories

    sharded = chunk.sharded_state_dict()
    apply_factories(sharded)  # SwiGLU's fc1 becomes its gate and up halves, each a view of the parameter
    by_layer: Dict[Optional[int], List[ShardedTensor]] = {}
    for item in nested_values(sharded):
        if isinstance(item, ShardedTensor):
            layer = item.global_offset[0] if item.key in names.LAYER_KEYS else None
            by_layer.setdefault(layer, []).append(item)
    for layer, items in sorted(by_layer.items(), key=lambda kv: -1 if kv[0] is None else kv[0]):
        full = _global_tensors(weights, model, padded, layer)
        with torch.no_grad():
            for item in items:
                # global_slice() starts with the layer index for layer-stacked tensors; full has no layer axis.
                item.data.copy_(full[item.key][item.global_slice()[item.prepend_axis_num:]])


def _global_tensors(weights: SafetensorsDirectory, model: ModelConfig, padded: int, layer: Optional[int]) -> Dict[str, torch.Tensor]:
    """Global megatron-core tensors of one layer (without the layer axis), or of the non-layer parameters."""
    if layer is not None:
        hf = {name: weights.get(name) for name in names.hf_layer_names(layer).values()}
        return names.layer_from_hf(hf, model, layer)
    embedding = weights.get(names.HF_EMBEDDING)
    head = weights.get(names.HF_LM_HEAD) if model.untie_embeddings_and_output_weights else embedding
    return {
        names.EMBEDDING: names.pad_vocab(embedding, padded),
        names.OUTPUT_LAYER: names.pad_vocab(head, padded),
        names.FINAL_NORM: weights.get(names.HF_FINAL_NORM),
    }
