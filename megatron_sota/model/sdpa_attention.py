"""Core attention for megatron-core's local layer spec, built on PyTorch's fused SDPA.

Flash/memory-efficient kernels on GPU, exact math on CPU; it must not change the attention's math.
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.utils import divide

from megatron_sota.model.context_parallel_attention import context_parallel_attention
from megatron_sota.model.document_attention import document_causal_attention, plan_for

# kernels.attention_backend: the kernel SDPA tries first; the others stay as fallbacks, in this order.
_PREFERRED = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}
_DEFAULT_ORDER = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def backend_order(preferred: str) -> Optional[list]:
    """SDPA kernels in the order to try them, or None for PyTorch's default choice."""
    if preferred == "auto":
        return None
    first = _PREFERRED[preferred]
    return [first] + [b for b in _DEFAULT_ORDER if b != first]


class SDPACoreAttention(MegatronModule):
    """Causal GQA attention over megatron-core's [seq, batch, heads, head_dim] tensors.

    Takes the constructor and forward arguments of megatron-core's ``DotProductAttention`` so
    that it drops into ``SelfAttentionSubmodules.core_attention``. Key/value heads are shared
    by query groups inside SDPA (``enable_gqa``) instead of being materialised per head.

    ``attention_mask`` None (training, unpadded inference) means causal. An explicit mask
    (bool, True = masked out, megatron's convention, broadcastable to [batch, heads, q_len,
    k_len]) is the complete mask, causality included: batched generation builds one per step
    to hide each row's left padding. Every query must keep at least one key: a fully masked
    row is NaN on some kernels (CPU's returns zeros), and a NaN value reaches even the queries
    that mask it out (0 * NaN).

    An integer ``attention_mask`` [batch, seq] holds each token's document id in packed rows
    (data.reset_attention_mask): attention is causal within each document and never crosses one.
    It is computed per group of documents of similar length (model/document_attention.py), with
    the same causal kernels and no [seq, seq] mask.
    """

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: Optional[float] = None,
        softmax_scale: Optional[float] = None,
        cp_comm_type: Optional[str] = None,
        pg_collection=None,
        backend: str = "auto",
    ):
        super().__init__(config=config)
        self.backend_order = backend_order(backend)
        if attn_mask_type != AttnMaskType.causal:
            raise ValueError(f"SDPACoreAttention supports causal masks only, got {attn_mask_type}")
        from megatron.core import parallel_state

        tp_size = parallel_state.get_tensor_model_parallel_world_size()
        self.heads_per_partition = divide(config.num_attention_heads, tp_size)
        self.head_dim = config.kv_channels
        self.softmax_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(self.head_dim)
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout
        # parallel.cp>1: this rank holds two of the sequence's 2*cp chunks; keys come from the whole CP group.
        self.cp_group = parallel_state.get_context_parallel_group() if config.context_parallel_size > 1 else None
        # megatron-core hands every layer config.cp_comm_type (parallel.cp_comm_type); None (a TransformerConfig not
        # built by us) means p2p, as it does for TE.
        self.cp_comm_type = cp_comm_type or "p2p"
        if self.cp_group is not None and self.dropout_p > 0:
            raise ValueError("context-parallel SDPA attention has no attention dropout (model.attention_dropout=0 with parallel.cp>1)")

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        attn_mask_type: Optional[AttnMaskType] = None,
        attention_bias: Optional[torch.Tensor] = None,
        packed_seq_params=None,
    ) -> torch.Tensor:
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError("SDPACoreAttention supports neither packed sequences nor attention bias")
        if self.cp_group is not None:
            return self._context_parallel(query, key, value, attention_mask)
        if attention_mask is not None and _holds_ids(attention_mask):
            plan = plan_for(self._checked_document_ids(attention_mask, query, key))
            if not plan.one_per_row:
                with self._kernels():
                    return document_causal_attention(query, key, value, plan, lambda q, k, v: self._sdpa(q, k, v, None))
            attention_mask = None
        # [s, b, n, d] -> [b, n, s, d], the layout SDPA's kernels expect.
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        mask = self._allowed(attention_mask, q.size(2), k.size(2), q.device)
        with self._kernels():
            context = self._sdpa(q, k, v, mask)
        seq, batch = query.size(0), query.size(1)
        return context.permute(2, 0, 1, 3).reshape(seq, batch, self.heads_per_partition * self.head_dim)

    def _kernels(self):
        return sdpa_kernel(self.backend_order, set_priority=True) if self.backend_order else contextlib.nullcontext()

    @staticmethod
    def _checked_document_ids(ids: torch.Tensor, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        seq, batch = query.size(0), query.size(1)
        if tuple(ids.shape) != (batch, seq) or key.size(0) != seq:
            raise ValueError(
                f"document ids: expected an integer tensor [batch, seq] = [{batch}, {seq}] over as many keys as queries, "
                f"found shape {tuple(ids.shape)} with {key.size(0)} keys"
            )
        return ids

    def _context_parallel(self, query, key, value, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """Causal (None) or per-document (integer ids [batch, local seq], split like the tokens) attention over the CP group."""
        if attention_mask is not None and not _holds_ids(attention_mask):
            raise ValueError(
                "attention_mask with parallel.cp>1: expected None (causal) or integer document ids [batch, local seq], "
                f"found {attention_mask.dtype} of shape {tuple(attention_mask.shape)}"
            )
        context = context_parallel_attention(
            query, key, value, self.cp_group, self.softmax_scale, attention_mask, self.cp_comm_type
        )
        return context.reshape(query.size(0), query.size(1), self.heads_per_partition * self.head_dim)

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=mask is None,
            dropout_p=self.dropout_p if self.training else 0.0,
            scale=self.softmax_scale,
            enable_gqa=k.size(1) != q.size(1),
        )

    @staticmethod
    def _allowed(attention_mask: Optional[torch.Tensor], q_len: int, k_len: int, device) -> Optional[torch.Tensor]:
        """SDPA's bool mask (True = attend), or None for its is_causal fast path."""
        if attention_mask is not None:
            if attention_mask.dtype != torch.bool or not 2 <= attention_mask.dim() <= 4 or tuple(attention_mask.shape[-2:]) != (q_len, k_len):
                raise ValueError(
                    f"attention_mask: expected a bool tensor broadcastable to [batch, heads, {q_len}, {k_len}] (True = masked out), "
                    f"found {attention_mask.dtype} of shape {tuple(attention_mask.shape)}"
                )
            return ~attention_mask
        # With a KV cache the queries are the last positions of a longer key sequence; SDPA's
        # is_causal aligns them with the first ones, so those steps get an explicit mask.
        if q_len != k_len:
            return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=k_len - q_len)
        return None


def _holds_ids(mask: torch.Tensor) -> bool:
    """Integer masks are document ids; bool ones say which keys are masked out."""
    return not (mask.dtype == torch.bool or mask.dtype.is_floating_point or mask.dtype.is_complex)
