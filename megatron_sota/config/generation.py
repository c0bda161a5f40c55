"""Typed sampling settings (the `generation` group of conf/) and the ranges every source of them must keep.

Used by generation and written into exports; the same rules check conf/generation, tools/generate.py's
flags (and any request schema), so a setting accepted in one place is accepted in all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from megatron_sota.config.ranges import Bound, above, at_least, range_problems, within


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
    num_beams: int = 1
    """Beam search with this many beams when > 1 (deterministic: the sampling settings above are not used)."""


# A negative temperature would favour the least likely tokens; a top_p above 1 or a budget below 1 means nothing.
SAMPLING_RANGES: dict[str, Bound] = {
    "temperature": at_least(0),
    "top_p": within(0, 1, low_open=True),
    "top_k": at_least(0),
    "repetition_penalty": above(0),
    "max_new_tokens": at_least(1),
    "num_beams": at_least(1),
}


def generation_problems(settings: Any, name: Callable[[str], str] = lambda field: f"generation.{field}") -> list[str]:
    """The out-of-range fields of `settings` (a GenerationConfig, parsed flags, a request: anything with
    the fields of SAMPLING_RANGES), each reported under `name(field)`: a config key or a flag. A source without
    one of the fields (a command line with no --num-beams) is not checked for it."""
    return range_problems(
        (name(field), getattr(settings, field), bound) for field, bound in SAMPLING_RANGES.items() if hasattr(settings, field)
    )


def read_generation_defaults(path: Optional[str] = None) -> GenerationConfig:
    """The sampling defaults of the tools and the server: GenerationConfig's, overlaid with `path` (default: the
    shipped conf/generation/default.yaml) when it exists. Range problems are the caller's to report."""
    from omegaconf import OmegaConf

    from megatron_sota.config.files import conf_dir

    path = conf_dir("generation", "default.yaml") if path is None else path
    base = OmegaConf.structured(GenerationConfig)
    if os.path.exists(path):
        base = OmegaConf.merge(base, OmegaConf.load(path))
    return OmegaConf.to_object(base)
