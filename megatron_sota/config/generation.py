"""Typed sampling settings (the `generation` group of conf/): used by generation and written into exports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GenerationConfig:
    temperature: float = 0.7
    """0 samples greedily."""
    top_p: float = 0.95
    """Nucleus sampling: the smallest set of tokens whose probabilities sum to at least this."""
    top_k: int = 40
    """Sample among the k most likely tokens; 0 disables."""
    repetition_penalty: float = 1.1
    """Divides positive (multiplies negative) logits of tokens already present; 1.0 disables."""
    max_new_tokens: int = 8192
    """Upper bound on generated tokens; also capped by the model's context."""
