"""One rank of a large world in this process: PyTorch's fake process group and the meta device.

The scale rehearsal (megatron_sota/rehearsal/) builds what rank R of an N-GPU run builds, with megatron-core's own
code, without N processes or the memory: `torch.distributed` is initialised over the "fake" backend (every
collective returns at once and leaves its tensors as they are), and every tensor megatron-core places on the GPU
or the CPU lands on the meta device (runtime/cpu_compat.py with target="meta"), so shapes, dtypes and buffer sizes
are real while nothing is allocated.

Two calls need help to run over fake ranks (runtime/upstream.py FAKE_WORLD):
- megatron-core asks `torch.distributed.new_group` for gloo groups beside the NCCL ones (its CPU-side groups); a
  fake default group cannot create a gloo group, so the backend argument is dropped and every group is fake.
- `torch.distributed.all_gather_object` pickles the object into a byte tensor on the current device, the meta
  device here, and reads its size back with .item(), which meta tensors refuse. The distributed optimizer gathers its
  parameter keys this way; each entry is filled with this rank's object, which is what the other ranks of a
  data-parallel group send there (they hold the same parameters).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.distributed as dist

from megatron_sota.runtime.upstream import FAKE_WORLD, applies


def _fake_store() -> dist.Store:
    from torch.testing._internal.distributed.fake_pg import FakeStore  # registers the "fake" backend

    return FakeStore()


@contextlib.contextmanager
def fake_world(world_size: int, rank: int, device: str = "meta") -> Iterator[None]:
    """torch.distributed as rank `rank` of `world_size` fake ranks, torch.cuda answered by CPU stand-ins, and every
    tensor on the meta device, for the duration of the block; all undone on exit.

    `device="cpu"` keeps tensors real, on the CPU (timing one layer's initialisation, or running under
    FakeTensorMode, which brings its own fake tensors); collectives still move nothing.
    """
    from megatron_sota.runtime.cpu_compat import cpu_backend

    if dist.is_initialized():
        raise RuntimeError("fake_world needs a process without a torch.distributed process group")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    applies(FAKE_WORLD)  # the rehearsal cannot run without it; this only says where it was not written for it
    real_new_group, real_gather = dist.new_group, dist.all_gather_object

    def new_group(*args: Any, backend: Any = None, pg_options: Any = None, **kwargs: Any):
        return real_new_group(*args, **kwargs)

    def all_gather_object(object_list: list, obj: Any, group: Any = None) -> None:
        object_list[:] = [obj] * len(object_list)

    with contextlib.ExitStack() as stack:
        dist.init_process_group("fake", store=_fake_store(), rank=rank, world_size=world_size)
        stack.callback(dist.destroy_process_group)
        dist.new_group, dist.all_gather_object = new_group, all_gather_object
        stack.callback(setattr, dist, "all_gather_object", real_gather)
        stack.callback(setattr, dist, "new_group", real_new_group)
        stack.enter_context(cpu_backend(target=device))
        if device == "meta":
            stack.enter_context(torch.device("meta"))  # tensors made without a device argument (CPU initialisation)
        yield
