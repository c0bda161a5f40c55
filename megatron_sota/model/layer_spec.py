"""Chooses the kernels of a transformer layer: Transformer Engine's, or megatron-core's local ones.

The local spec swaps in SDPA core attention and a sequence-parallel-capable RMSNorm (eager or
compiled); the architecture (what the layer computes) is the same either way.
"""

from __future__ import annotations

import dataclasses

import torch
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_layer import TransformerLayer, get_transformer_layer_offset

from megatron_sota.model.compiled_rms_norm import CompiledRMSNorm
from megatron_sota.model.rms_norm import RMSNorm
from megatron_sota.model.sdpa_attention import SDPACoreAttention


class SeededTransformerLayer(TransformerLayer):
    """A TransformerLayer whose initial weights depend only on (seed, global layer number).

    Reseeding the CPU generator before each layer is built makes a pipeline stage's layers
    draw the same numbers as the same layers of a single-stage model; with megatron-core's
    CPU initialisation (full master weight, then this rank's slice) the weights are also
    independent of the tensor-parallel size.
    """

    def __init__(self, config, submodules, layer_number: int = 1, init_seed: int = 0, **kwargs):
        global_number = layer_number + get_transformer_layer_offset(config, kwargs.get("vp_stage"))
        state = torch.get_rng_state()
        torch.manual_seed(init_seed * 100_003 + global_number)
        super().__init__(config, submodules, layer_number=layer_number, **kwargs)
        if global_number != config.num_layers:
            # The output layer is built right after the last layer and continues its stream.
            torch.set_rng_state(state)


def _local_spec(norm: type, attention_backend: str) -> ModuleSpec:
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    sub = spec.submodules
    attention = sub.self_attention
    core = ModuleSpec(module=SDPACoreAttention, params={"backend": attention_backend})
    attention_sub = dataclasses.replace(attention.submodules, core_attention=core)
    sub = dataclasses.replace(
        sub,
        input_layernorm=norm,
        pre_mlp_layernorm=norm,
        self_attention=dataclasses.replace(attention, submodules=attention_sub),
    )
    return dataclasses.replace(spec, submodules=sub)


def _te_spec() -> ModuleSpec:
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

    return get_gpt_layer_with_transformer_engine_spec()


def build_block_spec(
    config, use_te: bool, init_seed: int, vp_stage: int | None, compiled_norm: bool = False, attention_backend: str = "auto"
):
    """The layers of this pipeline (virtual) stage plus the final norm.

    The local final norm is ours too, so that sequence parallelism works up to the output layer;
    `compiled_norm` (kernels.rms_norm) swaps every local norm for its compiled twin and
    `attention_backend` (kernels.attention_backend) orders SDPA's kernels.
    """
    from megatron.core.transformer.transformer_block import (
        TransformerBlockSubmodules,
        get_num_layers_to_build,
    )

    local_norm = CompiledRMSNorm if compiled_norm else RMSNorm
    layer = _te_spec() if use_te else _local_spec(local_norm, attention_backend)
    layer = dataclasses.replace(layer, module=SeededTransformerLayer, params={**layer.params, "init_seed": init_seed})
    if use_te:
        from megatron.core.extensions.transformer_engine import TENorm

        final_norm = TENorm
    else:
        final_norm = local_norm
    num_layers = get_num_layers_to_build(config, vp_stage=vp_stage)
    return TransformerBlockSubmodules(layer_specs=[layer] * num_layers, layer_norm=final_norm)
