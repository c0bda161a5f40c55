"""Silences megatron-core's known, harmless start-up chatter in our entry points and tools.

Call once before importing megatron-core; it only filters messages, it must not hide errors.
"""

from __future__ import annotations

import logging
import warnings

# megatron-core announcing each optional GPU library it lacks, deprecations inside it and torch,
# the pad id of SentencePiece/Null tokenizers sharing EOS's id (megatron-core then masks nothing).
_HARMLESS = (
    ".*Transformer Engine and Apex are not installed.*",
    ".*Apex is not installed.*",
    ".*full scope is deprecated.*",
    ".*pad token id in the tokenizer collides.*",
    ".*The .grad attribute of a Tensor that is not a leaf Tensor.*",
    ".*CUDA_DEVICE_MAX_CONNECTIONS.*",
)


def quiet_megatron() -> None:
    for pattern in _HARMLESS:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
    # megatron-core logs every import/dataset/bucket decision at INFO (and some at WARNING, such
    # as the legacy-tokenizer deprecation); errors still show.
    logging.getLogger("megatron").setLevel(logging.ERROR)
