"""The modules the test suite's run_distributed ranks import beyond runtime/local_ranks.py's own preload, for
tests/conftest.py to add to the forkserver's preload; it must not start ranks or import what it names."""

from __future__ import annotations

# Each rank imported the tests' probe modules and what they reach (the trainer, post-training, inference,
# evaluation, transformers) afresh: ~2 s of CPU per rank and ~55 multi-rank calls in the suite. The forkserver
# imports them once. Imports only: no module here reads the environment or the working directory at import, so a
# rank starts as before. The forkserver skips a name that fails to import (tests/unit/test_local_ranks.py checks).
RANK_PRELOAD = (
    "transformers",
    "megatron_sota.training.trainer",
    "megatron_sota.posttrain.run",
    "megatron_sota.evaluation.runner",
    "megatron_sota.inference.generation",
    "megatron_sota.inference.checkpoint_model",
    "tests.distributed.probes",
    "tests.posttrain.layouts",
    "tests.posttrain.rl_jobs",
    "megatron_sota.posttrain.rl",
    "tests.inference.probes",
    "tests.inference.eval_probes",
    "tests.conversion.probes",
)
