"""ONNX export of a Hugging Face Llama export (the directory `megatron-sota-convert export` writes) with KV-cache inputs and outputs.

Writes model.onnx (+ external weights), the tokenizer files and onnx_io.json into a staged directory; it must not
change the source directory, and checking the result against PyTorch lives in onnx_verify.py.

Graph contract (names in onnx_io.json): inputs input_ids [batch, seq] int64, attention_mask [batch, past + seq] int64
(1 = real token; left padding allowed), position_ids [batch, seq] int64 and past.{i}.key / past.{i}.value
[batch, kv_heads, past, head_dim]; outputs logits [batch, seq, vocab] and present.{i}.key / present.{i}.value
[batch, kv_heads, past + seq, head_dim]. The prefill passes a past of length 0 (empty tensors): the graph is traced
with a past of length 2 (torch.export specialises sample sizes 0 and 1), and past, like batch and seq, is a
symbolic dimension of the ONNX graph, which onnxruntime runs with size 0 (tests/conversion/test_onnx_export.py).
torch.export rejects arithmetic on Dims, so the mask's length is a Dim of its own ("total"), equal to past + seq.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from megatron_sota.conversion.hf_config import llama_export_problems
from megatron_sota.conversion.staged_output import check_target, staged_directory
from megatron_sota.conversion.tokenizer_export import OUTPUT_FILES as TOKENIZER_FILES
from megatron_sota.errors import MegatronSotaError

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
WEIGHTS_FILE = "model.onnx.data"
IO_FILE = "onnx_io.json"
DEFAULT_OPSET = 18
EXTERNAL_DATA_MIN_BYTES = 1024
"""Every tensor this large or larger goes to model.onnx.data, whatever the model's size: a protobuf cannot exceed
2 GiB, and one layout for all sizes is one layout to test. Small constants stay inline: onnxruntime's shape
inference cannot read shape-like constants (an Unsqueeze's axes) from external data, and refuses the model."""
_SAMPLE = {"batch": 2, "seq": 3, "past": 2}  # sizes 0 and 1 would be specialised by torch.export


@dataclass(frozen=True)
class OnnxIO:
    """onnx_io.json: what a consumer needs to feed the graph and build the empty cache of a prefill."""

    inputs: list[str]
    outputs: list[str]
    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    dtype: str
    opset: int
    cache_layout: str = "[batch, num_kv_heads, past, head_dim]; the prefill passes past = 0"
    bos_token_id: int | None = None
    eos_token_id: Any = None


def cache_names(num_layers: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def read_onnx_io(onnx_dir: str) -> OnnxIO:
    path = os.path.join(onnx_dir, IO_FILE)
    if not os.path.isfile(path):
        raise MegatronSotaError(f"{path} is missing: expected a directory written by megatron-sota-export-onnx")
    with open(path) as handle:
        return OnnxIO(**json.load(handle))


def check_inputs(hf_dir: str, save_dir: str, overwrite: bool) -> dict[str, Any]:
    """config.json of the source; raises listing every problem of the source and the target at once."""
    config, problems = llama_export_problems(hf_dir)
    problems = [f"--hf {p}" for p in problems]
    try:
        check_target(save_dir, overwrite)
    except MegatronSotaError as err:
        problems.append(str(err))
    if problems:
        raise MegatronSotaError("cannot export to ONNX:\n  " + "\n  ".join(problems))
    return config


def load_llama(hf_dir: str) -> torch.nn.Module:
    """The export as transformers loads it, in fp32 whatever its dtype (the graph is fp32), on CPU.

    Eager attention: plain matmul/softmax/mask ops that the exporter translates one by one (the verification's
    reference keeps transformers' default attention, so the two paths differ)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="eager")
    return model.eval()


class CachedLlama(torch.nn.Module):
    """LlamaForCausalLM with the cache as flat tensors in and out, the calling convention of the ONNX graph."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.num_layers = model.config.num_hidden_layers

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.num_layers)])
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
        )
        present = []
        for layer in out.cache.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def describe(config: dict[str, Any], opset: int) -> OnnxIO:
    layers = config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    return OnnxIO(
        inputs=["input_ids", "attention_mask", "position_ids", *cache_names(layers, "past")],
        outputs=["logits", *cache_names(layers, "present")],
        num_layers=layers,
        num_kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        vocab_size=config["vocab_size"],
        dtype="float32",
        opset=opset,
        bos_token_id=config.get("bos_token_id"),
        eos_token_id=config.get("eos_token_id"),
    )


def _sample_inputs(io: OnnxIO) -> tuple[torch.Tensor, ...]:
    batch, seq, past = _SAMPLE["batch"], _SAMPLE["seq"], _SAMPLE["past"]
    ids = torch.randint(0, io.vocab_size, (batch, seq))
    mask = torch.ones(batch, past + seq, dtype=torch.long)
    positions = torch.arange(past, past + seq).expand(batch, seq)
    cache = [torch.randn(batch, io.num_kv_heads, past, io.head_dim) for _ in range(2 * io.num_layers)]
    return (ids, mask, positions, *cache)


def _dynamic_shapes(io: OnnxIO) -> tuple[Any, ...]:
    Dim = torch.export.Dim
    batch, seq, past, total = Dim("batch"), Dim("seq"), Dim("past"), Dim("total")
    cache = tuple({0: batch, 2: past} for _ in range(2 * io.num_layers))
    return ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq}, cache)  # `cache` matches *past


def export_onnx(hf_dir: str, save_dir: str, opset: int = DEFAULT_OPSET, overwrite: bool = False) -> dict[str, Any]:
    """Writes the ONNX directory; returns what was measured (seconds, file sizes)."""
    config = check_inputs(hf_dir, save_dir, overwrite)
    io = describe(config, opset)
    start = time.perf_counter()
    with staged_directory(save_dir, overwrite) as staging:
        wrapper = CachedLlama(load_llama(hf_dir)).eval()
        log.info("exporting %s with torch.onnx (dynamo), opset %d", hf_dir, opset)
        with torch.no_grad():
            program = torch.onnx.export(
                wrapper,
                _sample_inputs(io),
                input_names=io.inputs,
                output_names=io.outputs,
                dynamic_shapes=_dynamic_shapes(io),
                opset_version=opset,
                dynamo=True,
            )
        _save(program.model_proto, staging)
        log.info("copying the tokenizer files")
        for name in TOKENIZER_FILES:
            if os.path.isfile(os.path.join(hf_dir, name)):
                shutil.copy2(os.path.join(hf_dir, name), os.path.join(staging, name))
        with open(os.path.join(staging, IO_FILE), "w") as handle:
            json.dump(asdict(io), handle, indent=2)
            handle.write("\n")
    seconds = time.perf_counter() - start
    sizes = {name: os.path.getsize(os.path.join(save_dir, name)) for name in (MODEL_FILE, WEIGHTS_FILE)}
    log.info("exported %s to %s in %.1f s (%s)", hf_dir, save_dir, seconds, sizes)
    return {"seconds": seconds, "bytes": sizes}


def _save(proto: Any, directory: str) -> None:
    import onnx

    onnx.save_model(
        proto,
        os.path.join(directory, MODEL_FILE),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=WEIGHTS_FILE,
        size_threshold=EXTERNAL_DATA_MIN_BYTES,
    )
    os.chmod(os.path.join(directory, WEIGHTS_FILE), 0o644)  # onnx creates it owner-only; a server may run as another user
