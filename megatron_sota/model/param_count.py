"""Exact parameter counts and training FLOPs of a preset, from its shape alone (no model built).

Used at start-up (total and per pipeline stage), for MFU, and by planning tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from megatron_sota.config.model import ModelConfig


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


def layer_params(model: ModelConfig) -> int:
    h, d = model.hidden_size, model.head_dim
    q = model.num_attention_heads * d
    kv = 2 * model.num_query_groups * d
    attention = h * (q + kv) + q * h
    mlp = h * 2 * model.ffn_hidden_size + model.ffn_hidden_size * h  # SwiGLU: gate+up, down
    norms = 2 * h
    return attention + mlp + norms


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
