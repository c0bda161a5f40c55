"""megatron_sota: a Hydra-configured pretraining codebase composed on megatron-core."""

__version__ = "0.1.0"
