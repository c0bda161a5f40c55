"""The root of a run's configuration: one typed field per Hydra group of conf/.

Registered in Hydra's ConfigStore, so every composed config is checked against these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from megatron_sota.config.evaluation import EvalConfig
from megatron_sota.config.generation import GenerationConfig
from megatron_sota.config.kernels import KernelConfig
from megatron_sota.config.model import ModelConfig
from megatron_sota.config.optim import OptimizerConfig, PrecisionConfig, SchedulerConfig
from megatron_sota.config.parallel import ParallelConfig
from megatron_sota.config.posttrain import PosttrainConfig
from megatron_sota.config.run import (
    CheckpointConfig,
    DataConfig,
    LoggingConfig,
    RuntimeConfig,
    TokenizerConfig,
    TrainConfig,
)


@dataclass
class JobConfig:
    name: str = "run"
    """Experiment name, shown in logs and used by launchers."""
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    kernels: KernelConfig = field(default_factory=KernelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    posttrain: Optional[PosttrainConfig] = None
    """Post-training (conf/posttrain/: sft, rm, dpo; run by `python -m megatron_sota.posttrain`); null for pretraining."""


def register_configs() -> None:
    """Registers JobConfig as ``job_schema``, the first entry of conf/config.yaml's defaults.

    Hydra then checks every group file and override against these types while composing.
    """
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="job_schema", node=JobConfig)
