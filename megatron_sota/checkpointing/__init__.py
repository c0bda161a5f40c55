"""Distributed checkpoints: megatron-core dist_checkpointing under a layout that is never half-visible."""
