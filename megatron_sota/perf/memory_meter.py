"""Peak memory of a block of code: CUDA's allocator statistics on a GPU, live aten storages on CPU.

It only measures; it must not change what the measured code allocates or computes.
"""

from __future__ import annotations

import weakref
from typing import Dict, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class _StorageTracker(TorchDispatchMode):
    """Counts the bytes of each storage an aten op creates while active, until the storage is freed.

    Storages, not tensors, so views count once. torch keeps a storage's Python object alive as long
    as any tensor uses it, so a finalizer on that object fires when the memory is really released.
    """

    def __init__(self, device_type: str):
        super().__init__()
        self.device_type = device_type
        self.sizes: Dict[int, int] = {}
        self.current = self.peak = 0

    def _storage(self, leaf) -> Optional[torch.UntypedStorage]:
        if not isinstance(leaf, torch.Tensor) or leaf.device.type != self.device_type:
            return None
        try:
            return leaf.untyped_storage()
        except (NotImplementedError, RuntimeError):  # sparse and other storage-less layouts
            return None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # An output on an input's storage (in-place ops, views, out=) is no new allocation.
        inputs = {id(s) for s in map(self._storage, tree_leaves((args, kwargs))) if s is not None}
        out = func(*args, **kwargs)
        for storage in filter(None, map(self._storage, tree_leaves(out))):
            key = id(storage)
            if key not in self.sizes and key in inputs:
                continue
            if key not in self.sizes:
                weakref.finalize(storage, self._free, key)
            # Also catches tracked storages grown or shrunk in place (resize_).
            self.current += storage.nbytes() - self.sizes.get(key, 0)
            self.sizes[key] = storage.nbytes()
            self.peak = max(self.peak, self.current)
        return out

    def _free(self, key: int) -> None:
        self.current -= self.sizes.pop(key, 0)


class PeakMemoryMeter:
    """``with PeakMemoryMeter(device) as meter: ...`` then ``meter.peak_bytes``.

    Counts bytes allocated after entry (what was held before is the baseline). On CUDA: the caching
    allocator's statistics; on CPU: tensors made by aten ops on this thread (gloo collectives too).
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        self._tracker = None if self._cuda else _StorageTracker(self.device.type)
        self._baseline = 0
        self._peak_at_exit: Optional[int] = None

    def __enter__(self) -> "PeakMemoryMeter":
        if self._cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
            self._peak_at_exit = None
        else:
            self._tracker.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._cuda:
            torch.cuda.synchronize(self.device)
            self._peak_at_exit = self.peak_bytes  # later work must not raise it, as on CPU
        else:
            self._tracker.__exit__(*exc)

    @property
    def peak_bytes(self) -> int:
        if not self._cuda:
            return self._tracker.peak
        if self._peak_at_exit is not None:
            return self._peak_at_exit
        return torch.cuda.max_memory_allocated(self.device) - self._baseline

    @property
    def current_bytes(self) -> int:
        return torch.cuda.memory_allocated(self.device) - self._baseline if self._cuda else self._tracker.current

    def reset_peak(self) -> None:
        """The peak restarts from what is allocated now."""
        if self._cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._tracker.peak = self._tracker.current
