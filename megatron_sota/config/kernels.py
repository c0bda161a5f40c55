"""Typed choice of fused kernels for runs without Transformer Engine (the `kernels` group of conf/).

Each switch is independent so that its speed can be timed alone; none may change what the model computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

ATTENTION_BACKENDS = ("auto", "cudnn", "flash", "efficient", "math")


@dataclass
class KernelConfig:
    """null means auto: on for CUDA runs where the fusion applies, off on CPU (where compiling takes
    longer than a short run and the eager path is the reference)."""

    swiglu: Optional[bool] = None
    """megatron-core's fused SwiGLU (bias_activation_fusion): silu(gate) * up and its backward as
    one torch.compile'd kernel each, instead of separate silu and multiply kernels."""
    cross_entropy: Optional[bool] = None
    """megatron-core's native fused vocab-parallel cross-entropy (one all-reduce instead of two,
    compiled elementwise parts). Its kernel rounds the logits gradient to bf16, so auto turns it
    on only for bf16 runs; in fp32/fp16 runs it would lose gradient precision."""
    rms_norm: Optional[bool] = None
    """torch.compile'd RMSNorm forward and backward (local layer spec only; TE has its own)."""
    compile_layers: Optional[bool] = None
    """torch.compile each transformer layer in place: norms, RoPE, SwiGLU and residual adds fused in
    one graph per layer (local layer spec only; tensor-parallel collectives split the graph).
    Auto is off everywhere until the H200 measurement (docs/performance.md) has run it on a GPU."""
    fused_adam: Optional[bool] = None
    """torch's fused AdamW kernel where megatron-core builds torch's AdamW (no Transformer Engine or apex): the
    whole update in one pass, ~5x faster than torch's default per-parameter loop on CPU, equal to it within float32
    rounding, without temporaries. Off: torch's own choice (the loop on CPU, `foreach` on CUDA). Auto is off
    everywhere until it has run on a GPU (docs/performance.md)."""
    wgrad_accumulation: Optional[bool] = None
    """megatron-core's gradient_accumulation_fusion: the weight-gradient GEMM accumulates into DDP's fp32
    main_grad in place (no gradient tensor, no add pass). Needs Transformer Engine or apex on a GPU; on CPU the
    CPU backend's kernel (runtime/cpu_compat.py). Rounds differently from GEMM-then-add; not with parallel.fsdp.
    Auto is off everywhere until it has run on a GPU (docs/performance.md)."""
    attention_backend: str = "auto"
    """Which of PyTorch's SDPA kernels to try first (local layer spec): auto (PyTorch's own order),
    cudnn, flash, efficient or math; the others stay as fallbacks for shapes the first cannot run."""
