"""Typed configuration of the model architecture (the `model` group of conf/).

Only the shape of the network lives here; how it is parallelised or trained lives elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class ModelConfig:
    """A dense decoder-only Llama-style transformer: RoPE, RMSNorm, SwiGLU, GQA, no biases."""

    name: str = "tiny"
    """Preset name, for logs and exports."""
    num_layers: int = 4
    hidden_size: int = 256
    ffn_hidden_size: int = 704
    """Width of the SwiGLU inner projection (each of gate and up)."""
    num_attention_heads: int = 4
    num_query_groups: int = 2
    """Key/value heads (GQA); equal to num_attention_heads for plain multi-head attention."""
    kv_channels: Optional[int] = None
    """Head dimension; hidden_size // num_attention_heads when null."""
    vocab_size: int = 8000
    """Nominal vocabulary of the preset; a configured tokenizer's vocabulary replaces it (with a warning where a
    value other than the preset's was set), and the run's config.yaml records the size the model was built for."""
    make_vocab_size_divisible_by: int = 128
    """The embedding is padded to a multiple of this times TP size (kernel-friendly shapes)."""
    max_position_embeddings: int = 4096
    rotary_base: float = 10000.0
    """RoPE theta."""
    rope_scaling_factor: Optional[float] = None
    """Llama 3.x RoPE frequency scaling by this factor (megatron-core's: low/high frequency factors
    1 and 4, original context 8192); null for plain RoPE."""
    rotary_percent: float = 1.0
    norm_epsilon: float = 1e-5
    init_method_std: float = 0.02
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    untie_embeddings_and_output_weights: bool = True
    transformer_impl: str = "auto"
    """auto (Transformer Engine when importable on CUDA, else local), transformer_engine or local."""

    @property
    def head_dim(self) -> int:
        return self.kv_channels or self.hidden_size // self.num_attention_heads
