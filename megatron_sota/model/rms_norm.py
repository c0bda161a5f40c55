"""RMSNorm for the local layer spec that, unlike torch's, works with sequence parallelism.

It must stay numerically identical to ``torch.nn.RMSNorm`` (fp32 statistics, weight applied after).
"""

from __future__ import annotations

import torch
from megatron.core.transformer.transformer_config import TransformerConfig


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The normalisation itself, a plain function so that kernels.rms_norm can compile it unchanged."""
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return normed.to(x.dtype) * weight


class RMSNorm(torch.nn.Module):
    """RMSNorm whose weight is marked for megatron-core's sequence-parallel gradient all-reduce.

    With sequence parallelism each TP rank normalises a different slice of the sequence, so the
    weight's gradient is partial; megatron-core's ``finalize_model_grads`` sums the gradients of
    parameters carrying ``sequence_parallel=True`` over the TP group.
    """

    def __init__(self, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **unused):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype))
        setattr(self.weight, "sequence_parallel", config.sequence_parallel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)
