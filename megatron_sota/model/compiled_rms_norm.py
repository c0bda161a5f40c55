"""The local RMSNorm with its forward (and so its backward) compiled into fused kernels (kernels.rms_norm).

Same parameters, state-dict keys and math as RMSNorm; only the kernels differ.
"""

from __future__ import annotations

import torch

from megatron_sota.model.rms_norm import RMSNorm, rms_norm

# Compiled lazily on the first call. One wrapper for every norm: they differ only in their weights.
_fused_rms_norm = torch.compile(rms_norm)


class CompiledRMSNorm(RMSNorm):
    """Eager RMSNorm launches about six kernels with fp32 intermediates in memory; compiled, a fused
    kernel or two each way."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _fused_rms_norm(x, self.weight, self.eps)
