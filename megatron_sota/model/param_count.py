"""Exact parameter counts and training FLOPs of a preset, from its shape alone (no model built).

Used at start-up (total and per pipeline stage), for MFU, and by planning tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from megatron_sota.config.model import ModelConfig
from megatron_sota.errors import MegatronSotaError


@dataclass(frozen=True)
class ParamCount:
    total: int
    embedding: int
    """Input embedding (padded vocabulary x hidden)."""
    output: int
    """Output projection (0 when tied to the embedding)."""
    per_layer: int
    final_norm: int
    per_stage: List[int]
    """Parameters held by each pipeline stage (summed over its virtual stages), TP unsplit."""

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding


@dataclass(frozen=True)
class ParamShape:
    """One parameter of a model chunk as megatron-core's GPTModel registers it (local layer spec)."""

    name: str
    """Its name in the chunk's named_parameters() (layers numbered within the chunk)."""
    numel: int
    """Elements on one TP rank."""
    shared_embedding: bool = False
    """The tied word-embedding/output weight of a pipelined model: megatron-core's DDP gives it a
    bucket of its own under the distributed optimizer (param.shared_embedding)."""


def _split(n: int, tp: int, what: str, strict: bool) -> int:
    if n % tp and strict:
        raise MegatronSotaError(f"{what} ({n}) is not divisible by the tensor-parallel size {tp}")
    return n // tp


def layer_parameters(model: ModelConfig, tp: int = 1, strict: bool = True) -> List[ParamShape]:
    """A TransformerLayer's parameters on one TP rank, in registration order (megatron-core 0.16.1,
    local spec: Attention builds linear_proj before SelfAttention adds linear_qkv). Norms replicated.

    `strict=False` rounds a matrix that TP does not split evenly down instead of refusing it (the planner
    also estimates layouts it rejects); where TP divides, both give the same shapes.
    """
    h, d, f = model.hidden_size, model.head_dim, model.ffn_hidden_size
    heads, groups = model.num_attention_heads, model.num_query_groups
    for n, what in ((heads, "model.num_attention_heads"), (groups, "model.num_query_groups"), (f, "model.ffn_hidden_size")):
        _split(n, tp, what, strict)
    return [
        ParamShape("input_layernorm.weight", h),
        ParamShape("self_attention.linear_proj.weight", h * heads * d // tp),
        ParamShape("self_attention.linear_qkv.weight", (heads + 2 * groups) * d * h // tp),
        ParamShape("pre_mlp_layernorm.weight", h),
        ParamShape("mlp.linear_fc1.weight", 2 * f * h // tp),  # SwiGLU: gate+up
        ParamShape("mlp.linear_fc2.weight", h * f // tp),
    ]


def layer_params(model: ModelConfig) -> int:
    return sum(p.numel for p in layer_parameters(model))


def chunk_parameters(
    model: ModelConfig, padded_vocab: int, tp: int, pp: int, vpp: int, pipeline_rank: int, vp_stage: int, strict: bool = True
) -> List[ParamShape]:
    """The parameters of model chunk `vp_stage` of `pipeline_rank` on one TP rank, in named_parameters() order.

    Chunk v of rank r is virtual stage v*pp + r and holds its num_layers/(pp*vpp) consecutive layers
    (megatron-core's get_transformer_layer_offset); the embedding lives on the first virtual stage,
    the final norm and the output layer on the last. With tied weights and pp > 1 the last stage
    builds its own copy of the embedding as output_layer.weight (pp = 1 shares one tensor).
    `strict=False` rounds down where the layout does not divide the model (layer_parameters).
    """
    stages = pp * vpp
    if model.num_layers % stages and strict:
        raise MegatronSotaError(
            f"model.num_layers ({model.num_layers}) is not divisible by pp*vpp = {pp}*{vpp} virtual pipeline stages"
        )
    first = pipeline_rank == 0 and vp_stage == 0
    last = pipeline_rank == pp - 1 and vp_stage == vpp - 1
    tied = not model.untie_embeddings_and_output_weights
    vocab_rows = _split(padded_vocab, tp, "the padded vocabulary", strict) * model.hidden_size
    params: List[ParamShape] = []
    if first:
        params.append(ParamShape("embedding.word_embeddings.weight", vocab_rows, shared_embedding=tied and not last))
    layer = layer_parameters(model, tp, strict)
    for index in range(model.num_layers // stages):
        params += [ParamShape(f"decoder.layers.{index}.{p.name}", p.numel) for p in layer]
    if last:
        params.append(ParamShape("decoder.final_layernorm.weight", model.hidden_size))
        if not tied or not first:
            params.append(ParamShape("output_layer.weight", vocab_rows, shared_embedding=tied))
    return params


def count_params(model: ModelConfig, padded_vocab: int, pp: int = 1) -> ParamCount:
    per_layer = layer_params(model)
    embedding = padded_vocab * model.hidden_size
    output = padded_vocab * model.hidden_size if model.untie_embeddings_and_output_weights else 0
    final_norm = model.hidden_size
    layers_per_stage = model.num_layers // pp
    per_stage = [layers_per_stage * per_layer for _ in range(pp)]
    per_stage[0] += embedding
    per_stage[-1] += output + final_norm
    if not model.untie_embeddings_and_output_weights and pp > 1:
        per_stage[-1] += embedding  # the last stage keeps its own copy of the tied weight
    total = model.num_layers * per_layer + embedding + output + final_norm
    return ParamCount(total, embedding, output, per_layer, final_norm, per_stage)


def train_flops_per_token(model: ModelConfig, padded_vocab: int, seq_length: int, causal: bool = False) -> float:
    """Forward+backward FLOPs per token: 6 x (matmul parameters) + attention scores/values.

    Matmul parameters are all but the input embedding and the norms. Attention costs
    12 * layers * (heads * head_dim) * seq per token when every query attends to the full
    sequence (the convention of the GPU baseline and of most MFU reports); ``causal=True``
    counts only the lower triangle (half of that), which is what the kernels really compute.
    """
    matmul_params = model.num_layers * (layer_params(model) - 2 * model.hidden_size)
    matmul_params += padded_vocab * model.hidden_size  # output projection (tied or not)
    attention = 12 * model.num_layers * model.num_attention_heads * model.head_dim * seq_length
    if causal:
        attention //= 2
    return 6 * matmul_params + attention


def format_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)
