"""Hides, one named message at a time, the warnings and megatron-core log records known to say nothing to our users.

Each entry names its message and where it comes from; unknown warnings, new deprecations and every error still show.
"""

from __future__ import annotations

import logging
import re
import warnings

# (category, message): the message is a regex matched at the start of the warning's text, without a
# colon, so that pytest can take the same entries as `filterwarnings` lines (tests/conftest.py).
KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # megatron-core announcing each optional GPU library it lacks (optimizer/, models/backends.py,
    # gpt_layer_specs.py, Megatron-FSDP's mixed_precision.py): CPU runs and machines without them.
    (UserWarning, r"Transformer Engine and Apex are not installed"),
    (UserWarning, r"Apex is not installed"),
    # megatron-core transformer_config.py: its own default cuda_graph_scope, which we never set.
    (UserWarning, r"full scope is deprecated"),
    # megatron-core datasets/megatron_dataset.py: SentencePiece/Null tokenizers give pad the id of
    # EOS; megatron-core then masks no pad token, which is what training here expects.
    (UserWarning, r"The pad token id in the tokenizer collides"),
    # torch autograd, for a .grad read of megatron-core's forwarded through runtime/cpu_compat.py's
    # TorchFunctionMode (CPU runs only).
    (UserWarning, r"The \.grad attribute of a Tensor that is not a leaf Tensor"),
    # megatron-core tensor_parallel/layers.py with TP > 1: a GPU scheduling hint (the SLURM and
    # sbatch set-ups export the variable; CPU runs have no use for it).
    (UserWarning, r"When using (sequence parallelism|async grad allreduce) it is recommended to set the environment variable CUDA_DEVICE_MAX_CONNECTIONS"),
    # torch c10d deprecations of the collectives megatron-core's distributed optimizer calls.
    (FutureWarning, r"`torch\.distributed\.(reduce_scatter_tensor|all_gather_into_tensor)` is deprecated"),
    # torch.distributed.checkpoint's old load_state_dict and ShardedTensor, used by megatron-core's
    # dist_checkpointing torch strategy (strategies/torch.py) to load checkpoints.
    (FutureWarning, r"`load_state_dict` is deprecated"),
    (FutureWarning, r"Please use DTensor instead and we are deprecating ShardedTensor"),
    # torch's own torch/utils/mkldnn.py, imported by torch._inductor.
    (DeprecationWarning, r"`torch\.jit\.script_method` is deprecated"),
    # megatron-core inference/contexts/__init__.py, at import.
    (DeprecationWarning, r"The following imports from `dynamic_context\.py` will be removed"),
    # megatron-core multi_latent_attention.py importing its own deprecated custom_layers module.
    (DeprecationWarning, r"The 'megatron\.core\.transformer\.custom_layers\.transformer_engine'"),
    # megatron-core spec_utils.py building the MLP of its own layer spec.
    (DeprecationWarning, r"MLP requires ffn_hidden_size, but it was not provided"),
    # megatron-core tensor_parallel/layers.py calling itself without a tp_group ("Warning: tp_group...").
    (DeprecationWarning, r"Warning. tp_group is None, using default tp group"),
    # megatron-core Megatron-FSDP (param_and_grad_buffer.py, the all-gather pipeline's reset): before a checkpoint's
    # whole weights are built (checkpointing/fsdp_state.py), the gathers a forward prefetched are waited for and
    # released; the warning announces that wait.
    (UserWarning, r"There are still pending all-gather tasks, process them"),
    # numpy 2, when megatron-core's IndexedDatasetBuilder.add_document (datasets/indexed_dataset.py)
    # converts a torch tensor whose __array__ takes no copy keyword (preprocessing, merging shards).
    (DeprecationWarning, r"__array__ implementation doesn't accept a copy keyword"),
    # torch.onnx's exporter (_internal/exporter/_dynamic_shapes.py) for each input axis whose torch.export.Dim already
    # named another input's axis: conversion/onnx_export.py shares one Dim (batch, seq, past) across inputs on purpose.
    (UserWarning, r"# The axis name. \w+ will not be used, since it shares the same shape constraints"),
    # torch's own utils/_pytree.py, reached from torch.onnx.export's decompositions (conversion/onnx_export.py).
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
)

# (logger, message) of megatron-core's (and torch's, torch.onnx's, torchao's) log records below ERROR that are known
# and harmless.
KNOWN_LOG_RECORDS: tuple[tuple[str, str], ...] = (
    # megatron-core datasets/blended_dataset.py, once per split, when the blend data/mix.py gives it has
    # one prefix (the quickstart's): a remark on efficiency, not a problem.
    ("megatron.core.datasets.blended_dataset", r"Building a BlendedDataset for a single MegatronDataset"),
    # megatron-core megatron_fsdp.py, on CPU runs (parallel.fsdp): its device is the CPU, never "cuda:<index>".
    ("megatron.core.distributed.fsdp.src.megatron_fsdp.megatron_fsdp", r"\[Rank \d+\] Megatron-FSDP is using device cpu instead of"),
    # torch.onnx's exporter registry, once per torchvision operator it could translate (ONNX export without
    # torchvision, which no model here uses).
    ("torch.onnx._internal.exporter._registration", r"torchvision is not installed\. Skipping torchvision::"),
    # torchao __init__.py, at import (conversion/int8.py): its wheel's MXFP8 kernels are built for CPython 3.10 and
    # its CUTLASS ones need an SM90 GPU; the int8 configs used here need neither.
    ("torchao", r"Failed to load \S*_C_(mxfp8|cutlass_90a)\S*: Could not load this library"),
    # torch utils/_pytree.py, when torchao utils.py registers its own enums (KernelPreference, ScaleCalculationMode)
    # at import: a deprecation addressed to torchao.
    ("torch.utils._pytree", r"<enum '(KernelPreference|ScaleCalculationMode)'> is an Enum subclass and is now natively supported"),
)


class KnownRecordFilter(logging.Filter):
    """Drops a logger's records whose message starts with `pattern`, up to WARNING; errors always pass."""

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not self.pattern.match(record.getMessage())


def quiet_megatron() -> None:
    """Installs the filters above; safe to call more than once. Call it before importing megatron-core."""
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, message in KNOWN_LOG_RECORDS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, KnownRecordFilter) and f.pattern.pattern == message for f in logger.filters):
            logger.addFilter(KnownRecordFilter(message))
