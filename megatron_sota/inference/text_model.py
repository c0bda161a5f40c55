"""A checkpoint loaded for text in, text out: the distributed session of an inference command and its model with tokenizer.

Shared by the commands that read prompts (generation, constitutional AI); it must not generate or score anything.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Tuple

from megatron_sota.errors import MegatronSotaError


@contextlib.contextmanager
def inference_session() -> Iterator[Tuple[object, object]]:
    """(launch env, session): one process (TP=1) or one rank per TP shard under torchrun; PP is always 1."""
    from megatron_sota.inference.checkpoint_model import inference_parallel
    from megatron_sota.runtime.launch_env import read_launch_env
    from megatron_sota.runtime.session import distributed_session

    env = read_launch_env()
    with distributed_session(inference_parallel(env.world_size), "auto", env=env) as session:
        yield env, session


def load_text_model(checkpoint: str, session) -> Tuple[object, object]:
    """(InferenceModel, its run's tokenizer) of `checkpoint`, fp32 on CPU; a model without a text tokenizer is refused."""
    from megatron_sota.data.tokenizer import build_configured_tokenizer
    from megatron_sota.inference.checkpoint_model import load_inference_model

    model = load_inference_model(checkpoint, session.device, "fp32" if session.is_cpu else None)
    if model.job.tokenizer.type in (None, "NullTokenizer"):
        raise MegatronSotaError(f"{checkpoint}: the model was trained without a text tokenizer (NullTokenizer); it cannot read prompts")
    return model, build_configured_tokenizer(model.job.tokenizer, model.job.model.vocab_size)
