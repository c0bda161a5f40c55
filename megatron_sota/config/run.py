"""Typed configuration of everything around the model: data, tokenizer, loop, checkpoints, logs.

Plain dataclasses only; validation across groups lives in config/validation.py.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass
class TrainConfig:
    iters: int = 1000
    global_batch_size: int = 8
    micro_batch_size: int = 2
    seq_length: int = 256
    seed: int = 1234
    eval_interval: int = 100
    """Validation loss every this many iterations; 0 disables periodic validation."""
    eval_iters: int = 5
    """Global batches averaged for one validation loss."""
    recompute: str = "none"
    """Activation recomputation: none, selective (attention core) or full (whole layers)."""
    exit_duration_minutes: Optional[float] = None
    """Save and exit (code 75) before this much wall time has passed; null for no budget."""
    max_skipped_steps: int = 5
    """Stop after this many consecutive steps skipped for a non-finite loss or gradient norm."""
    loss_spike_factor: float = 3.0
    """Log a loss spike when the loss exceeds this factor times its recent mean; 0 disables."""


@dataclass
class DataSource:
    """One named part of the blend (web, code, books...): its share and its shards."""

    weight: Optional[float] = None
    """Required. Share of the blend relative to the other sources' (45 and 20, or 0.45 and 0.2); 0 leaves it out."""
    paths: List[str] = field(default_factory=list)
    """Prefixes of Megatron .bin/.idx shards (without the extension)."""
    weights: Optional[List[float]] = None
    """Share of each prefix within the source; proportional to each shard's token count when null."""


@dataclass
class DataConfig:
    sources: Dict[str, DataSource] = field(default_factory=dict)
    """Named sources of the blend; each prefix gets source share x share within its source.
    Use either sources or paths/weights (a run with only paths is one source)."""
    root: Optional[str] = None
    """Directory the presets' prefixes live under (they interpolate ${data.root}); not read by the code."""
    paths: List[str] = field(default_factory=list)
    """Prefixes of Megatron .bin/.idx shards (without the extension)."""
    weights: Optional[List[float]] = None
    """Blend weight per prefix; proportional to each shard's token count when null."""
    split: List[float] = field(default_factory=lambda: [98.0, 1.0, 1.0])
    """train/valid/test proportions of every shard."""
    mock: bool = False
    """Random tokens instead of shards (benchmarks, smoke tests)."""
    cache_dir: Optional[str] = None
    """Where megatron-core caches its document/sample/shuffle indices; <run_dir>/data_cache when null."""
    num_workers: int = 1
    """DataLoader worker processes per rank."""
    reset_attention_mask: bool = False
    """Packed rows: a token attends only within its document (documents end at the tokenizer's eod).
    Needs the local layer spec's SDPA attention (model.transformer_impl=local or auto on CPU) and parallel.cp=1."""
    reset_position_ids: bool = False
    """Packed rows: position ids restart at 0 after each eod. RoPE (every preset) ignores position ids in
    megatron-core and depends only on distances, so with reset_attention_mask it changes nothing there."""
    eod_mask_loss: bool = False
    """No loss where the input token is eod (its target is the next document's first token)."""


@dataclass
class TokenizerConfig:
    type: Optional[str] = None
    """A Megatron-LM --tokenizer-type (SentencePieceTokenizer, GPTSentencePieceTokenizer,
    HuggingFaceTokenizer, GPT2BPETokenizer, TikTokenizer, NullTokenizer); null uses the model
    preset's vocabulary size."""
    model: Optional[str] = None
    """SentencePiece .model, HF tokenizer.json (or its directory), or tiktoken .json vocabulary."""
    vocab_size: Optional[int] = None
    """NullTokenizer (model preset's when null); TikTokenizer (ids incl. specials, 131072 when null)."""
    vocab_file: Optional[str] = None
    """GPT2BPETokenizer only: GPT-2 vocab.json."""
    merge_file: Optional[str] = None
    """GPT2BPETokenizer only: GPT-2 merges.txt."""

    def with_absolute_paths(self) -> "TokenizerConfig":
        """The file settings made absolute: checkpoints store this config, and exports read it from any directory."""

        def absolute(path: Optional[str]) -> Optional[str]:
            return os.path.abspath(path) if path else path

        return dataclasses.replace(
            self, model=absolute(self.model), vocab_file=absolute(self.vocab_file), merge_file=absolute(self.merge_file)
        )


@dataclass
class CheckpointConfig:
    dir: Optional[str] = None
    """Checkpoint directory (iter_NNNNNNN/ folders + tracker file); <run_dir>/checkpoints when null."""
    interval: int = 0
    """Save every this many iterations; 0 saves only at the end (and on a stop signal)."""
    keep: int = 2
    """Complete checkpoints kept; older ones are deleted only once a newer one is complete; 0 keeps every one."""
    resume: str = "auto"
    """auto (latest complete checkpoint in `dir`, if any), never, or a checkpoint path."""
    load_optimizer: bool = True
    """false: restart from the weights only (fresh optimizer, scheduler and data order)."""
    init_from: Optional[str] = None
    """Start a new run from this checkpoint's weights (e.g. one made by `tools/convert_checkpoint.py import`),
    at step 0 with a fresh optimizer; used only while `dir` holds no checkpoint to resume, so a
    requeued job resumes its own latest checkpoint instead."""
    async_save: bool = False
    """Write checkpoints from a background process while training goes on."""
    exit_on_signal: bool = True
    """On SIGTERM/SIGUSR1: finish the step, save, exit with the 'preempted' code (75)."""
    save_at_end: bool = True
    export_hf_every: int = 0
    """Also export a Hugging Face LlamaForCausalLM directory every this many iterations and at the end
    (to <dir>/hf/iter_NNNNNNN, from a checkpoint saved at that step, in a background process); 0 never."""
    export_hf_dtype: str = "bf16"
    """Weight dtype of those exports: bf16 or fp32."""


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass
class LoggingConfig:
    interval: int = 10
    """Console line, TensorBoard scalars and a metrics.jsonl row every this many iterations."""
    tensorboard: bool = True
    level: str = "INFO"
    """Console verbosity: DEBUG (also megatron-core's INFO lines), INFO, WARNING or ERROR."""
    all_ranks: bool = False
    """Every rank prints its INFO lines, each with its rank prefix; false: rank 0 only (warnings and errors always)."""


@dataclass
class RuntimeConfig:
    device: str = "auto"
    """auto (cuda when available), cuda (NCCL) or cpu (gloo)."""
    timeout_minutes: int = 10
    """Collective timeout."""
