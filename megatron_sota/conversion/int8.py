"""Quantises a Hugging Face Llama export to int8 with torchao (through transformers) and saves it beside its tokenizer.

The saved directory reloads bit-exactly in transformers and carries config.json's torchao quantization_config for
vLLM; it must not evaluate the result (cli/quantize.py measures it) nor change the source export.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Dict, List

import torch

from megatron_sota.conversion.hf_config import llama_export_problems
from megatron_sota.conversion.staged_output import staged_directory
from megatron_sota.conversion.tokenizer_export import OUTPUT_FILES
from megatron_sota.errors import MegatronSotaError

SCHEMES = ("weight_only", "dynamic")
"""weight_only: int8 weights, computation in the model's dtype; dynamic: int8 weights and activations (quantised
per token at run time), int8 matmuls."""
COPIED_FILES = (*OUTPUT_FILES, "generation_config.json")
"""Files of the source export copied as they are (save_pretrained writes config.json and the weights)."""


@dataclass(frozen=True)
class Int8Summary:
    save: str
    scheme: str
    quantized_linears: int
    """nn.Linear weights stored as int8 (the embeddings and the output layer stay in the export's dtype)."""
    files: List[str]


def quant_config(scheme: str):
    """transformers' TorchAoConfig for `scheme` (one of SCHEMES)."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    configs = {"weight_only": Int8WeightOnlyConfig, "dynamic": Int8DynamicActivationInt8WeightConfig}
    if scheme not in configs:
        raise MegatronSotaError(f"int8 scheme: expected one of {', '.join(SCHEMES)}, found {scheme!r}")
    return TorchAoConfig(quant_type=configs[scheme]())


def check_hf_export(directory: str, flag: str = "--hf") -> dict:
    """config.json of a Hugging Face Llama export that is not quantised yet; every problem is reported at once."""
    config, problems = llama_export_problems(directory)
    config_path = os.path.join(directory, "config.json")
    quantization = config.get("quantization_config")
    if quantization is not None:
        method = quantization.get("quant_method") if isinstance(quantization, dict) else quantization
        problems.append(f"{config_path}: quantization_config: expected none (an unquantised export), found quant_method {method!r}")
    if config and not os.path.isfile(os.path.join(directory, "tokenizer.json")):
        problems.append(f"{directory}: expected tokenizer.json (megatron-sota-convert export writes it), found none")
    if problems:
        raise MegatronSotaError(f"{flag} {directory}: not a Hugging Face Llama export to quantise:\n  " + "\n  ".join(problems))
    return config


def quantize_export(source: str, save: str, scheme: str, overwrite: bool = False) -> Int8Summary:
    """Loads `source` quantised to int8 (`scheme`), writes it to `save` (staged: nothing half-written on failure)."""
    from transformers import AutoModelForCausalLM

    check_hf_export(source)
    config = quant_config(scheme)
    with staged_directory(save, overwrite) as staging:
        # dtype "auto": the non-quantised tensors (embeddings, norms, output layer) keep the export's dtype.
        model = AutoModelForCausalLM.from_pretrained(source, quantization_config=config, dtype="auto")
        model.save_pretrained(staging, safe_serialization=True)
        for name in COPIED_FILES:  # the source's generation_config.json replaces the one save_pretrained derives
            if os.path.isfile(os.path.join(source, name)):
                shutil.copyfile(os.path.join(source, name), os.path.join(staging, name))
        files = sorted(os.listdir(staging))
    quantized = sum(1 for tensor in model.state_dict().values() if is_quantized(tensor))
    return Int8Summary(os.path.abspath(save), scheme, quantized, files)


def is_quantized(tensor: torch.Tensor) -> bool:
    """A torchao tensor subclass (int8 data plus scales), as opposed to a plain tensor."""
    from torchao.utils import TorchAOBaseTensor

    return isinstance(tensor, TorchAOBaseTensor)


def tensor_parts(tensor: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The plain tensors that hold `tensor`: itself, or a torchao tensor's int8 data, scales and zero points."""
    if not is_quantized(tensor):
        return {"": tensor.detach()}
    names = [*tensor.tensor_data_names, *getattr(tensor, "optional_tensor_data_names", ())]
    return {name: getattr(tensor, name) for name in names if getattr(tensor, name, None) is not None}


def state_parts(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Every plain tensor of the model's state, keyed "<state key>" or "<state key>:<part>" (int8 data and scales)."""
    return {
        f"{key}:{part}" if part else key: value
        for key, tensor in model.state_dict().items()
        for part, value in tensor_parts(tensor).items()
    }


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers as stored in memory (int8 data plus scales for quantised ones);
    tied weights counted once."""
    seen, total = set(), 0
    for tensor in [*model.parameters(), *model.buffers()]:
        for part in tensor_parts(tensor).values():
            if part.data_ptr() not in seen:
                seen.add(part.data_ptr())
                total += part.numel() * part.element_size()
    return total


def weight_file_bytes(directory: str) -> int:
    """Bytes of the weight files (*.safetensors) in `directory`."""
    return sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory) if n.endswith(".safetensors"))
