"""Resolves the `kernels` group against the device, dtype and layer spec of a run.

It decides which fusions a model is built with; it must not build anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from megatron_sota.config.kernels import KernelConfig


@dataclass(frozen=True)
class KernelChoice:
    """The fusions one model is built with. All off (the default) is the eager reference path,
    which inference and checkpoint import use."""

    swiglu: bool = False
    cross_entropy: bool = False
    rms_norm: bool = False
    compile_layers: bool = False
    attention_backend: str = "auto"
    fused_adam: bool = False
    """torch's fused AdamW kernel (training/optimization.py); False: torch's own choice."""
    wgrad_accumulation: bool = False
    """megatron-core's gradient_accumulation_fusion (weight gradients accumulate into main_grad in the GEMM)."""

    def describe(self) -> str:
        """For the start-up line, e.g. "fused swiglu, rms_norm; layers compiled; SDPA prefers cudnn"."""
        fused = [name for name in ("swiglu", "cross_entropy", "rms_norm") if getattr(self, name)]
        parts = [f"fused {', '.join(fused)}" if fused else "no fusions"]
        if self.compile_layers:
            parts.append("layers compiled")
        if self.attention_backend != "auto":
            parts.append(f"SDPA prefers {self.attention_backend}")
        if self.fused_adam:
            parts.append("fused AdamW")
        if self.wgrad_accumulation:
            parts.append("weight gradients accumulated in the GEMM")
        return "; ".join(parts)


def choose_kernels(cfg: KernelConfig, device_type: str, dtype: str, use_te: bool) -> KernelChoice:
    """Auto (null) means on for CUDA runs where the fusion applies. Explicit values that cannot apply
    (local-spec fusions with Transformer Engine) were refused by config.validation.validate_job."""
    cuda = device_type == "cuda"

    def pick(value: Optional[bool], auto: bool) -> bool:
        return auto if value is None else value

    return KernelChoice(
        swiglu=pick(cfg.swiglu, cuda),
        # megatron-core's fused kernel returns the logits gradient in bf16: exact only for bf16 runs.
        cross_entropy=pick(cfg.cross_entropy, cuda and dtype == "bf16"),
        rms_norm=pick(cfg.rms_norm, cuda and not use_te),
        # Whole-layer compilation is untested on a GPU so far (docs/performance.md): opt-in until measured.
        compile_layers=pick(cfg.compile_layers, False),
        attention_backend=cfg.attention_backend,
        # Both round differently from the reference path and are untested on a GPU: opt-in until measured.
        fused_adam=pick(cfg.fused_adam, False),
        wgrad_accumulation=pick(cfg.wgrad_accumulation, False),
    )
