"""Refuses a checkpoint whose pickled metadata would construct anything but plain checkpoint records.

torch.distributed.checkpoint reads its `.metadata` file with pickle; this check replays the same
bytes through an unpickler that only admits the classes such metadata is made of, before the
real load runs. It must not load tensors.
"""

from __future__ import annotations

import os
import pickle

from megatron_sota.errors import MegatronSotaError

_ALLOWED_MODULE_PREFIXES = (
    "torch.distributed.checkpoint.",
    "megatron.core.dist_checkpointing.",
)
_ALLOWED_GLOBALS = {
    ("torch", "Size"),
    ("torch", "float32"), ("torch", "float16"), ("torch", "bfloat16"), ("torch", "float64"),
    ("torch", "int64"), ("torch", "int32"), ("torch", "int8"), ("torch", "uint8"), ("torch", "bool"),
    ("torch", "strided"), ("torch", "contiguous_format"),
    ("torch.serialization", "_get_layout"),  # maps a layout name such as "torch.strided" back to it
    ("collections", "OrderedDict"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS or module.startswith(_ALLOWED_MODULE_PREFIXES):
            return super().find_class(module, name)
        raise MegatronSotaError(
            f"{self.path}: refusing to unpickle {module}.{name}; a checkpoint's metadata holds only "
            "torch.distributed.checkpoint records (is this a foreign or tampered checkpoint?)"
        )


def verify_checkpoint_metadata(checkpoint_dir: str) -> None:
    path = os.path.join(checkpoint_dir, ".metadata")
    if not os.path.exists(path):
        raise MegatronSotaError(f"{path} is missing: {checkpoint_dir} is not a complete torch_dist checkpoint")
    with open(path, "rb") as handle:
        try:
            _RestrictedUnpickler(handle, path).load()
        except MegatronSotaError:
            raise
        except Exception as err:
            raise MegatronSotaError(f"{path} is unreadable ({type(err).__name__}: {err}); the checkpoint is truncated or corrupt") from None
