"""How megatron-core's fused, padded tensors map onto Hugging Face Llama's separate ones, both ways.

Pure tensor functions on global (un-sharded) tensors; they know nothing of files or layouts.

megatron-core's global layouts (independent of TP, since TP shards whole query groups and
saves SwiGLU's two halves as separate fragments):
  linear_qkv  [groups * (heads_per_group + 2) * head_dim, hidden], per query group: its query
              heads, then its key head, then its value head;
  linear_fc1  [2 * ffn, hidden]: gate (SiLU applied) first, then up;
  embedding and output layer padded to a kernel-friendly vocabulary size.
megatron-core's RoPE (non-interleaved) rotates halves, as Hugging Face's Llama does, so q and k
need no permutation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch

from megatron_sota.checkpointing.dist_reader import EMBEDDING
from megatron_sota.config.model import ModelConfig
from megatron_sota.errors import MegatronSotaError

FINAL_NORM = "decoder.final_layernorm.weight"
OUTPUT_LAYER = "output_layer.weight"
# A reward model's scalar head (posttrain/reward_head.py) in place of the output layer; exported as
# LlamaForSequenceClassification's `score`.
REWARD_HEAD = "output_layer.score.weight"

# megatron-core key (layer-stacked) -> what it holds. Both the local and the TE spec save the
# pre-attention and pre-MLP norms under the fused linear layers' names.
QKV = "decoder.layers.self_attention.linear_qkv.weight"
PROJ = "decoder.layers.self_attention.linear_proj.weight"
ATTN_NORM = "decoder.layers.self_attention.linear_qkv.layer_norm_weight"
FC1 = "decoder.layers.mlp.linear_fc1.weight"
FC2 = "decoder.layers.mlp.linear_fc2.weight"
MLP_NORM = "decoder.layers.mlp.linear_fc1.layer_norm_weight"
LAYER_KEYS = (ATTN_NORM, QKV, PROJ, MLP_NORM, FC1, FC2)

HF_EMBEDDING = "model.embed_tokens.weight"
HF_FINAL_NORM = "model.norm.weight"
HF_LM_HEAD = "lm_head.weight"
HF_SCORE = "score.weight"


def hf_layer_names(layer: int) -> Dict[str, str]:
    prefix = f"model.layers.{layer}."
    names = {
        "attn_norm": "input_layernorm.weight",
        "q": "self_attn.q_proj.weight",
        "k": "self_attn.k_proj.weight",
        "v": "self_attn.v_proj.weight",
        "o": "self_attn.o_proj.weight",
        "mlp_norm": "post_attention_layernorm.weight",
        "gate": "mlp.gate_proj.weight",
        "up": "mlp.up_proj.weight",
        "down": "mlp.down_proj.weight",
    }
    return {role: prefix + name for role, name in names.items()}


@dataclass(frozen=True)
class AttentionShape:
    heads: int
    groups: int
    head_dim: int
    hidden: int

    @classmethod
    def of(cls, model: ModelConfig) -> "AttentionShape":
        return cls(model.num_attention_heads, model.num_query_groups, model.head_dim, model.hidden_size)

    @property
    def heads_per_group(self) -> int:
        return self.heads // self.groups


def split_qkv(fused: torch.Tensor, shape: AttentionShape) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    per_group = (shape.heads_per_group + 2) * shape.head_dim
    expected = (shape.groups * per_group, shape.hidden)
    _check_shape("linear_qkv", fused, expected)
    grouped = fused.view(shape.groups, per_group, shape.hidden)
    q_rows = shape.heads_per_group * shape.head_dim
    q = grouped[:, :q_rows].reshape(shape.heads * shape.head_dim, shape.hidden)
    k = grouped[:, q_rows : q_rows + shape.head_dim].reshape(shape.groups * shape.head_dim, shape.hidden)
    v = grouped[:, q_rows + shape.head_dim :].reshape(shape.groups * shape.head_dim, shape.hidden)
    return q, k, v


def merge_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, shape: AttentionShape) -> torch.Tensor:
    _check_shape("q_proj", q, (shape.heads * shape.head_dim, shape.hidden))
    _check_shape("k_proj", k, (shape.groups * shape.head_dim, shape.hidden))
    _check_shape("v_proj", v, (shape.groups * shape.head_dim, shape.hidden))
    grouped = torch.cat(
        [
            q.view(shape.groups, shape.heads_per_group * shape.head_dim, shape.hidden),
            k.view(shape.groups, shape.head_dim, shape.hidden),
            v.view(shape.groups, shape.head_dim, shape.hidden),
        ],
        dim=1,
    )
    return grouped.reshape(-1, shape.hidden)


def split_fc1(fused: torch.Tensor, ffn: int, hidden: int) -> Tuple[torch.Tensor, torch.Tensor]:
    _check_shape("linear_fc1", fused, (2 * ffn, hidden))
    gate, up = fused.chunk(2, dim=0)
    return gate, up


def merge_fc1(gate: torch.Tensor, up: torch.Tensor, ffn: int, hidden: int) -> torch.Tensor:
    _check_shape("gate_proj", gate, (ffn, hidden))
    _check_shape("up_proj", up, (ffn, hidden))
    return torch.cat([gate, up], dim=0)


def unpad_vocab(weight: torch.Tensor, vocab_size: int) -> torch.Tensor:
    if weight.shape[0] < vocab_size:
        raise MegatronSotaError(f"vocabulary tensor has {weight.shape[0]} rows, fewer than the vocabulary ({vocab_size})")
    return weight[:vocab_size]


def pad_vocab(weight: torch.Tensor, padded_size: int) -> torch.Tensor:
    """Extra rows are zero: padded ids never occur in data, and their logits start at 0."""
    padding = weight.new_zeros((padded_size - weight.shape[0], weight.shape[1]))
    return torch.cat([weight, padding], dim=0)


def layer_to_hf(tensors: Dict[str, torch.Tensor], model: ModelConfig, layer: int) -> Dict[str, torch.Tensor]:
    """One layer's megatron-core tensors (keyed as LAYER_KEYS) -> its Hugging Face tensors."""
    names = hf_layer_names(layer)
    q, k, v = split_qkv(tensors[QKV], AttentionShape.of(model))
    gate, up = split_fc1(tensors[FC1], model.ffn_hidden_size, model.hidden_size)
    return {
        names["attn_norm"]: tensors[ATTN_NORM],
        names["q"]: q,
        names["k"]: k,
        names["v"]: v,
        names["o"]: tensors[PROJ],
        names["mlp_norm"]: tensors[MLP_NORM],
        names["gate"]: gate,
        names["up"]: up,
        names["down"]: tensors[FC2],
    }


def layer_from_hf(tensors: Dict[str, torch.Tensor], model: ModelConfig, layer: int) -> Dict[str, torch.Tensor]:
    """One layer's Hugging Face tensors (full names) -> its megatron-core tensors (LAYER_KEYS)."""
    names = hf_layer_names(layer)
    qkv = merge_qkv(tensors[names["q"]], tensors[names["k"]], tensors[names["v"]], AttentionShape.of(model))
    fc1 = merge_fc1(tensors[names["gate"]], tensors[names["up"]], model.ffn_hidden_size, model.hidden_size)
    out = {ATTN_NORM: tensors[names["attn_norm"]], QKV: qkv, PROJ: tensors[names["o"]],
           MLP_NORM: tensors[names["mlp_norm"]], FC1: fc1, FC2: tensors[names["down"]]}
    expected = layer_shapes(model)
    for role in ("attn_norm", "o", "mlp_norm", "down"):
        _check_shape(names[role], tensors[names[role]], expected[role])
    return out


def layer_shapes(model: ModelConfig) -> Dict[str, Tuple[int, ...]]:
    """Shape of each Hugging Face tensor of a layer, by role (the keys of hf_layer_names)."""
    h, d, f = model.hidden_size, model.head_dim, model.ffn_hidden_size
    return {
        "attn_norm": (h,),
        "q": (model.num_attention_heads * d, h),
        "k": (model.num_query_groups * d, h),
        "v": (model.num_query_groups * d, h),
        "o": (h, model.num_attention_heads * d),
        "mlp_norm": (h,),
        "gate": (f, h),
        "up": (f, h),
        "down": (h, f),
    }


def hf_shapes(model: ModelConfig, vocab_size: int, reward_head: bool = False) -> Dict[str, Tuple[int, ...]]:
    """Every tensor of the Hugging Face model and its shape, in file order (embedding, layers, norm, head);
    with `reward_head`, the LlamaForSequenceClassification's score replaces any lm_head."""
    shapes: Dict[str, Tuple[int, ...]] = {HF_EMBEDDING: (vocab_size, model.hidden_size)}
    per_layer = layer_shapes(model)
    for layer in range(model.num_layers):
        shapes.update({name: per_layer[role] for role, name in hf_layer_names(layer).items()})
    shapes[HF_FINAL_NORM] = (model.hidden_size,)
    if reward_head:
        shapes[HF_SCORE] = (1, model.hidden_size)
    elif model.untie_embeddings_and_output_weights:
        shapes[HF_LM_HEAD] = (vocab_size, model.hidden_size)
    return shapes


def _check_shape(name: str, tensor: torch.Tensor, expected: Tuple[int, ...]) -> None:
    if tuple(tensor.shape) != tuple(expected):
        raise MegatronSotaError(f"{name}: expected shape {list(expected)}, found {list(tensor.shape)}")


def megatron_shapes(model: ModelConfig, padded_vocab: int, reward_head: bool = False) -> Dict[str, Tuple[int, ...]]:
    """Global shape of every model tensor in a megatron_sota checkpoint of `model` (a reward model's with `reward_head`)."""
    L, h, d, f = model.num_layers, model.hidden_size, model.head_dim, model.ffn_hidden_size
    shapes = {
        EMBEDDING: (padded_vocab, h),
        ATTN_NORM: (L, h),
        QKV: (L, (model.num_attention_heads + 2 * model.num_query_groups) * d, h),
        PROJ: (L, h, model.num_attention_heads * d),
        MLP_NORM: (L, h),
        FC1: (L, 2 * f, h),
        FC2: (L, h, f),
        FINAL_NORM: (h,),
    }
    if reward_head:
        shapes[REWARD_HEAD] = (1, h)
    elif model.untie_embeddings_and_output_weights:
        shapes[OUTPUT_LAYER] = (padded_vocab, h)
    return shapes
