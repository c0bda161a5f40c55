"""Exports a megatron_sota checkpoint (any TP/PP/DP layout) as a Hugging Face LlamaForCausalLM directory
(LlamaForSequenceClassification when the checkpoint holds a reward model's scalar head).

Reads one layer at a time from the layout-free global tensors and streams each converted
tensor into pre-planned safetensors files, so memory stays at about one layer whatever the
model size. Writes config.json, generation_config.json and the tokenizer beside the weights.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from tqdm import tqdm

from megatron_sota.checkpointing.dist_reader import DistCheckpointReader
from megatron_sota.checkpointing.paths import resolve_checkpoint_dir
from megatron_sota.config.job import JobConfig
from megatron_sota.conversion import llama_mapping as names
from megatron_sota.conversion.hf_config import hf_config_from_model
from megatron_sota.conversion.safetensors_files import StreamingSafetensorsWriter, parse_size
from megatron_sota.conversion.staged_output import check_target, staged_directory
from megatron_sota.conversion.tokenizer_export import special_token_ids, write_hf_tokenizer
from megatron_sota.data.tokenizer import build_configured_tokenizer, build_tokenizer
from megatron_sota.errors import MegatronSotaError

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
log = logging.getLogger(__name__)


@dataclass
class ExportOptions:
    load: str
    """A checkpoint directory (its latest iteration) or one iter_NNNNNNN/ directory."""
    save: str
    """The Hugging Face directory to write."""
    dtype: str = "bf16"
    max_shard_size: str = "5GB"
    tokenizer_model: Optional[str] = None
    """A tokenizer to ship instead of the one in the checkpoint's config (.model file or tokenizer.json/dir)."""
    overwrite: bool = False
    show_progress: bool = True
    pad_token_id: Optional[int] = None
    """The pad id written to config.json instead of the tokenizer's (a reward model needs one: transformers
    scores the last token that is not this id)."""


@dataclass
class ExportSummary:
    source: str
    out_dir: str
    iteration: int
    num_params: int
    weight_bytes: int
    files: List[str] = field(default_factory=list)
    seconds: float = 0.0


def export_checkpoint(options: ExportOptions) -> ExportSummary:
    start = time.perf_counter()
    if options.dtype not in DTYPES:
        raise MegatronSotaError(f"--dtype {options.dtype}: expected one of {', '.join(DTYPES)}")
    max_shard_bytes = parse_size(options.max_shard_size)
    check_target(options.save, options.overwrite)  # before any reading: fail fast
    source = resolve_checkpoint_dir(options.load, "--load")
    reader = DistCheckpointReader(source)
    job = reader.job_config()
    model = job.model
    tokenizer = _tokenizer(job, options.tokenizer_model)
    vocab_size = reader.common.get("vocab_size") or tokenizer.vocab_size
    if tokenizer.vocab_size != vocab_size:
        raise MegatronSotaError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but {source} was trained with a vocabulary of {vocab_size}"
        )
    padded = reader.padded_vocab_size()
    reward = reader.has(names.REWARD_HEAD)
    _check_shapes(reader, names.megatron_shapes(model, padded, reward), vocab_size)
    special_ids = special_token_ids(tokenizer)
    if options.pad_token_id is not None:
        special_ids["pad_token_id"] = options.pad_token_id
    if reward:
        problem = reward_pad_problem(special_ids, vocab_size)
        if problem:
            raise MegatronSotaError(f"{problem}; pass --pad-token-id")
    hf_config = hf_config_from_model(model, vocab_size, options.dtype, special_ids, reward)
    hf_config["megatron_sota"] = {"source": source, "iteration": reader.common["progress"]["iteration"], "preset": model.name}
    shapes = names.hf_shapes(model, vocab_size, reward)

    with staged_directory(options.save, options.overwrite) as staging:
        tokenizer_files = _write_tokenizer(job, options.tokenizer_model, staging)  # first: it may refuse
        writer = StreamingSafetensorsWriter(staging, shapes, DTYPES[options.dtype], max_shard_bytes)
        writer.write(names.HF_EMBEDDING, names.unpad_vocab(reader.read(names.EMBEDDING), vocab_size))
        for layer in tqdm(range(model.num_layers), desc="export layers", disable=not options.show_progress):
            megatron_layer = {key: reader.read(key, layer) for key in names.LAYER_KEYS}
            for name, tensor in names.layer_to_hf(megatron_layer, model, layer).items():
                writer.write(name, tensor)
        writer.write(names.HF_FINAL_NORM, reader.read(names.FINAL_NORM))
        if reward:
            writer.write(names.HF_SCORE, reader.read(names.REWARD_HEAD))
        elif model.untie_embeddings_and_output_weights:
            writer.write(names.HF_LM_HEAD, names.unpad_vocab(reader.read(names.OUTPUT_LAYER), vocab_size))
        files = writer.finish()
        files += _write_json(staging, "config.json", hf_config)
        files += _write_json(staging, "generation_config.json", _generation_config(job, hf_config))
        files += tokenizer_files

    return ExportSummary(
        source=source,
        out_dir=os.path.abspath(options.save),
        iteration=reader.common["progress"]["iteration"],
        num_params=sum(math.prod(shape) for shape in shapes.values()),
        weight_bytes=writer.total_bytes,
        files=files,
        seconds=time.perf_counter() - start,
    )


def _check_shapes(reader: DistCheckpointReader, expected: Dict[str, tuple], vocab_size: int) -> None:
    problems = []
    for key, shape in expected.items():
        if not reader.has(key):
            problems.append(f"{key}: missing (expected {list(shape)})")
        elif reader.shape(key) != shape:
            problems.append(f"{key}: checkpoint {list(reader.shape(key))}, the stored model config implies {list(shape)}")
    if expected[names.EMBEDDING][0] < vocab_size:
        problems.append(f"{names.EMBEDDING}: {expected[names.EMBEDDING][0]} rows, fewer than the vocabulary ({vocab_size})")
    if problems:
        raise MegatronSotaError(f"{reader.path} does not match its own model config:\n  - " + "\n  - ".join(problems))


def reward_pad_problem(special_ids: Dict[str, Optional[int]], vocab_size: int) -> Optional[str]:
    """Why `special_ids` (special_token_ids' dict) cannot go into a reward model's export, or None.

    LlamaForSequenceClassification reads the score at the last token that is not the pad id: with no
    pad id it cannot score a padded batch, and with pad = eos it skips a trailing eos that was scored here."""
    pad, eos = special_ids.get("pad_token_id"), special_ids.get("eos_token_id")
    if pad is None or pad == eos or not 0 <= pad < vocab_size:
        found = "none" if pad is None else ("the eos id" if pad == eos else "outside the vocabulary") + f" ({pad})"
        return (
            f"exporting a reward model needs a pad token id that no sequence ends with: expected an id in "
            f"[0, {vocab_size}) other than eos ({eos}), found {found}"
        )
    return None


def _tokenizer_source(job: JobConfig, override: Optional[str]):
    """(tokenizer type, model path) of the tokenizer to ship: the checkpoint's, or the --tokenizer-model file."""
    if override is None:
        return job.tokenizer.type, job.tokenizer.model
    if not os.path.exists(override):
        raise MegatronSotaError(f"--tokenizer-model {override}: no such file or directory")
    kind = "SentencePieceTokenizer" if override.endswith(".model") else "HuggingFaceTokenizer"
    return kind, override


def _tokenizer(job: JobConfig, override: Optional[str]):
    kind, path = _tokenizer_source(job, override)
    if override is not None:
        return build_tokenizer(kind, path)
    try:
        return build_configured_tokenizer(job.tokenizer, job.model.vocab_size)
    except MegatronSotaError as err:
        raise MegatronSotaError(f"{err} (the checkpoint's tokenizer; pass --tokenizer-model to use another copy)") from None


def _write_tokenizer(job: JobConfig, override: Optional[str], out_dir: str) -> List[str]:
    kind, path = _tokenizer_source(job, override)
    if kind in (None, "NullTokenizer"):
        log.info(
            "note: the checkpoint was trained without a text tokenizer (NullTokenizer); no tokenizer files written "
            "(pass --tokenizer-model to ship one)"
        )
        return []
    tok = job.tokenizer
    return write_hf_tokenizer(
        kind, path, out_dir,
        vocab_file=tok.vocab_file if override is None else None,
        merge_file=tok.merge_file if override is None else None,
        vocab_size=tok.vocab_size if override is None else None,
        # What a post-training run rendered its conversations with (posttrain/run.py records it).
        chat_template=job.posttrain.chat_template_text if job.posttrain is not None else None,
    )


def _generation_config(job: JobConfig, hf_config: dict) -> dict:
    g = job.generation
    return {
        "do_sample": g.temperature > 0 and g.num_beams == 1,  # our beam search never samples
        "temperature": g.temperature,
        "top_p": g.top_p,
        "top_k": g.top_k,
        "repetition_penalty": g.repetition_penalty,
        "max_new_tokens": min(g.max_new_tokens, job.model.max_position_embeddings),
        **{key: hf_config.get(key) for key in ("bos_token_id", "eos_token_id", "pad_token_id")},
        # Only beam search is written: the exports of every run that does not ask for it stay as they were.
        **({"num_beams": g.num_beams} if g.num_beams > 1 else {}),
    }


def _write_json(out_dir: str, name: str, payload: dict) -> List[str]:
    with open(os.path.join(out_dir, name), "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return [name]


def summary_text(summary: ExportSummary) -> str:
    return (
        f"exported {summary.source} (iteration {summary.iteration}) to {summary.out_dir}: {summary.num_params:,} parameters, "
        f"{summary.weight_bytes / 2**20:,.1f} MiB of weights in {summary.seconds:.1f}s; files: {', '.join(summary.files)}"
    )

