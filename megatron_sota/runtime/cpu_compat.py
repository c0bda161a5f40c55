"""Lets the real megatron-core code path run on CPU (gloo) where it assumes CUDA.

Every CPU workaround lives here and nowhere else; it must never change behaviour on a CUDA machine.

megatron-core 0.16 assumes CUDA in a handful of places: ``torch.cuda.current_device()`` and
literal ``device="cuda"`` for tensor placement, CUDA RNG state in its RNG tracker,
``torch.cuda.synchronize``/streams, and CUDA tensor type *names* asserted by its optimizers
(``param.grad.type() == 'torch.cuda.FloatTensor'``). While :func:`cpu_backend` is active:

* a ``TorchFunctionMode`` maps every CUDA device argument (``"cuda"``, ``"cuda:0"``, ``0``,
  ``torch.device("cuda")``, ``Tensor.cuda()``) to the CPU, drops ``pin_memory=True``, and answers ``Tensor.type()`` with
  the CUDA type name so the optimizers' dtype dispatch takes the same branch as on a GPU;
* the ``torch.cuda`` calls megatron-core makes are answered by CPU stand-ins (the RNG tracker
  then forks the CPU generator, which is what dropout and initialisation on CPU draw from);
* the gradient buffer's reduce-scatter and the parameter buffer's all-gather (distributed optimizer)
  are skipped where they are identities: a data-parallel group of one rank, output and input the same
  memory. gloo copies the whole buffer onto itself there (twice per step, ~0.5 s of a 5 s gpt_125m step
  on two cores); NCCL's in-place copy on a GPU is negligible, and a GPU run never enters cpu_backend;
* the weight-gradient GEMM accumulates into the fp32 main gradient in place (apex's
  ``fused_weight_gradient_mlp_cuda``, which megatron-core calls with ``gradient_accumulation_fusion``, answered by
  :class:`_WeightGradAccumulation`): one GEMM per weight and micro-batch instead of a GEMM, a gradient tensor and
  an add pass (``kernels.wgrad_accumulation=true``; it rounds differently, so CPU runs keep it off by default).

Written for megatron-core 0.16.1 and torch 2.13 (runtime/upstream.py CPU_BACKEND); each stand-in
takes the parameters of the function it replaces.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch.overrides import TorchFunctionMode

from megatron_sota.runtime.upstream import CPU_BACKEND, applies

_CUDA_TYPE_NAMES = {
    torch.float32: "torch.cuda.FloatTensor",
    torch.float16: "torch.cuda.HalfTensor",
    torch.bfloat16: "torch.cuda.BFloat16Tensor",
    torch.float64: "torch.cuda.DoubleTensor",
    torch.int64: "torch.cuda.LongTensor",
    torch.int32: "torch.cuda.IntTensor",
    torch.uint8: "torch.cuda.ByteTensor",
    torch.bool: "torch.cuda.BoolTensor",
}


def _is_cuda_device(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # A bare int is how torch spells "CUDA device i".
    return isinstance(device, int) and not isinstance(device, bool)


class _CudaToCpuMode(TorchFunctionMode):
    """Redirects CUDA placement to the CPU and reports CUDA type names for CPU tensors.

    With `target="meta"` (the scale rehearsal, runtime/fake_world.py) CUDA and CPU placements both go to the meta
    device: nothing is allocated, and what megatron-core builds on "the GPU" keeps its shapes and dtypes.
    """

    def __init__(self, target: str = "cpu") -> None:
        super().__init__()
        self.target = target

    def _redirected(self, device: Any) -> bool:
        if self.target == "meta" and (device == "cpu" or (isinstance(device, torch.device) and device.type == "cpu")):
            return True
        return _is_cuda_device(device)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            tensor = args[0]
            return _CUDA_TYPE_NAMES.get(tensor.dtype, func(*args))
        if func is torch.Tensor.cuda or (func is torch.Tensor.cpu and self.target == "meta"):
            return args[0]
        if "device" in kwargs and self._redirected(kwargs["device"]):
            kwargs["device"] = self.target
        # Pinned memory stages copies to a GPU; on a CPU-only machine asking for it raises (context
        # parallelism's RoPE slicing, get_pos_emb_on_this_cp_rank, pins its chunk indices).
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False
        if func is torch.Tensor.to and len(args) > 1 and self._redirected(args[1]):
            args = (args[0], self.target, *args[2:])
        return func(*args, **kwargs)


def _cpu_rng_state(device: Any = "cuda", clone: bool = False, graph_safe: bool = False) -> torch.Tensor:
    return torch.get_rng_state()


def _set_cpu_rng_state(new_state: torch.Tensor, device: Any = -1, graph_safe: bool = False) -> None:
    torch.set_rng_state(new_state)


class _NullStream:
    """Stands in for a CUDA stream/event: CPU work is synchronous already."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> "_NullStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def wait_stream(self, *args: Any) -> None:
        pass

    def wait_event(self, *args: Any) -> None:
        pass

    def record_event(self, *args: Any) -> "_NullStream":
        return self

    def record(self, *args: Any) -> None:
        pass

    def wait(self, *args: Any) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True


def _cuda_stand_ins() -> dict[tuple[Any, str], Any]:
    """(owner, attribute) -> CPU replacement for the torch.cuda calls megatron-core makes."""
    import megatron.core.tensor_parallel.random as mcore_random

    def noop():  # a distinct function per name: torch.compile's rule map rejects shared objects
        return lambda *args, **kwargs: None

    return {
        # A device object rather than an index: custom autograd backward functions run outside the
        # TorchFunctionMode, and `device=torch.cuda.current_device()` must still mean the CPU there.
        (torch.cuda, "current_device"): lambda: torch.device("cpu"),
        (torch.cuda, "device_count"): lambda: 1,
        (torch.cuda, "set_device"): noop(),
        (torch.cuda, "synchronize"): noop(),
        (torch.cuda, "empty_cache"): noop(),
        (torch.cuda, "get_rng_state"): lambda device="cuda": torch.get_rng_state(),
        (torch.cuda, "set_rng_state"): lambda new_state, device="cuda": torch.set_rng_state(new_state),
        (torch.cuda, "manual_seed"): lambda seed: torch.manual_seed(seed),
        (torch.cuda, "current_stream"): lambda *a, **k: _NullStream(),
        (torch.cuda, "default_stream"): lambda *a, **k: _NullStream(),
        (torch.cuda, "stream"): lambda *a, **k: _NullStream(),
        (torch.cuda, "Stream"): _NullStream,
        (torch.cuda, "Event"): _NullStream,
        (torch.cuda, "max_memory_allocated"): lambda *a, **k: 0,
        (torch.cuda, "memory_allocated"): lambda *a, **k: 0,
        (mcore_random, "_get_cuda_rng_state"): _cpu_rng_state,
        (mcore_random, "_set_cuda_rng_state"): _set_cpu_rng_state,
    }


def _is_identity(output: torch.Tensor, input: torch.Tensor, group: Any) -> bool:
    """A collective over one rank whose output is its input's own memory: there is nothing to do."""
    size = group.size() if group is not None else torch.distributed.get_world_size()
    return size == 1 and output.data_ptr() == input.data_ptr() and output.numel() == input.numel()


def _single_rank_collective_stand_ins() -> dict[tuple[Any, str], Any]:
    """(owner, attribute) -> the buffer collectives megatron-core's DDP calls, without their one-rank self-copies.

    Only synchronous calls are skipped: an asynchronous one (overlap_grad_reduce / overlap_param_gather) runs
    inside a coalescing manager that waits on the work it returns, so it keeps its real collective.
    """
    import megatron.core.distributed.param_and_grad_buffer as buffers

    all_gather = getattr(buffers, "dist_all_gather_func", None)
    reduce_scatter = getattr(buffers, "dist_reduce_scatter_func", None)
    if all_gather is None or reduce_scatter is None:  # upstream changed: its collectives run as they are
        return {}
    identity_ops = (torch.distributed.ReduceOp.SUM, torch.distributed.ReduceOp.AVG)

    def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op=False):
        if not async_op and _is_identity(output_tensor, input_tensor, group):
            return None
        return all_gather(output_tensor, input_tensor, group=group, async_op=async_op)

    def reduce_scatter_tensor(output, input, op=torch.distributed.ReduceOp.SUM, group=None, async_op=False):
        if not async_op and op in identity_ops and _is_identity(output, input, group):
            return None
        return reduce_scatter(output, input, op=op, group=group, async_op=async_op)

    return {(buffers, "dist_all_gather_func"): all_gather_into_tensor,
            (buffers, "dist_reduce_scatter_func"): reduce_scatter_tensor}


class _WeightGradAccumulation:
    """CPU stand-in for apex's fused_weight_gradient_mlp_cuda: main_grad += grad_output^T @ input, in place.

    Called by megatron-core's linear backward with 2-D [tokens, in] input and [tokens, out] grad_output. Where the
    dtypes differ (bf16/fp16 activations, fp32 main gradient) the product is formed in the activations' dtype and
    added, as the unfused path does.
    """

    @staticmethod
    def wgrad_gemm_accum_fp32(input: torch.Tensor, grad_output: torch.Tensor, main_grad: torch.Tensor) -> None:
        if input.dtype == grad_output.dtype == main_grad.dtype:
            main_grad.addmm_(grad_output.t(), input)
        else:
            main_grad.add_(grad_output.t().matmul(input))

    wgrad_gemm_accum_fp16 = wgrad_gemm_accum_fp32


def _weight_grad_stand_ins() -> dict[tuple[Any, str], Any]:
    import megatron.core.tensor_parallel.layers as layers

    if not hasattr(layers, "_grad_accum_fusion_available"):  # upstream changed: the unfused path runs
        return {}
    return {(layers, "fused_weight_gradient_mlp_cuda"): _WeightGradAccumulation,
            (layers, "_grad_accum_fusion_available"): True}


def _under_cpu_backend() -> bool:
    """Whether cpu_backend's stand-ins are in place (its current_device is one of this module's)."""
    return getattr(torch.cuda.current_device, "__module__", None) == __name__


@contextlib.contextmanager
def indexed_current_device() -> Iterator[None]:
    """Inside cpu_backend, `torch.cuda.current_device()` answers the index 0 for the duration of the block.

    Megatron-FSDP's constructor spells its default device `torch.device(f"cuda:{torch.cuda.current_device()}")`,
    which the device object cpu_backend answers with cannot form; "cuda:0" can, and the TorchFunctionMode still maps
    every tensor placed there to the CPU. Only for a constructor: custom autograd functions running outside the mode
    need the device object. Does nothing outside cpu_backend.
    """
    stand_in = torch.cuda.current_device
    if not _under_cpu_backend():
        yield  # the real CUDA function answers an index already
        return
    torch.cuda.current_device = _index_zero
    try:
        yield
    finally:
        torch.cuda.current_device = stand_in


def _index_zero() -> int:
    return 0


@contextlib.contextmanager
def cpu_device_mesh(owner: Any) -> Iterator[None]:
    """For the duration of the block, `owner.DeviceMesh.from_group` (a module's imported DeviceMesh) builds CPU meshes.

    megatron-core's FSDP2 wrapper asks for a "cuda" mesh, and FSDP2 places its shards and collectives on the mesh's
    device type; a CPU run's must be "cpu". Only for a constructor; does nothing outside cpu_backend.
    """
    real = owner.DeviceMesh
    if not _under_cpu_backend():
        yield
        return

    class _CpuMesh:
        @staticmethod
        def from_group(group, device_type, *args, **kwargs):
            return real.from_group(group, "cpu", *args, **kwargs)

    owner.DeviceMesh = _CpuMesh
    try:
        yield
    finally:
        owner.DeviceMesh = real


@contextlib.contextmanager
def cpu_backend(target: str = "cpu") -> Iterator[None]:
    """Makes megatron-core's CUDA assumptions hold on the CPU for the duration of the block.

    Meant to wrap a whole CPU run (``runtime.session`` enters it only for runtime.device=cpu,
    also on a GPU machine): the patches are process-wide while active and are undone on exit,
    so nothing leaks into code that runs afterwards. `target="meta"` places every tensor the run
    asks for on the GPU or the CPU on the meta device instead (runtime/fake_world.py).
    """
    if target not in ("cpu", "meta"):
        raise ValueError(f"cpu_backend target must be 'cpu' or 'meta', got {target!r}")
    # torch.compile (megatron-core's jit_fuser, at import) indexes torch.cuda's functions once;
    # index the real ones before any stand-in is in place.
    from torch._dynamo.trace_rules import get_torch_obj_rule_map

    get_torch_obj_rule_map()
    applies(CPU_BACKEND)  # CPU runs need it on any version; this only says where it was not written for it
    stand_ins = _cuda_stand_ins()
    if target == "cpu":  # meta tensors have no memory to compare
        stand_ins.update(_single_rank_collective_stand_ins())
        stand_ins.update(_weight_grad_stand_ins())
    originals = {key: getattr(key[0], key[1], None) for key in stand_ins}
    for (owner, name), replacement in stand_ins.items():
        setattr(owner, name, replacement)
    mode = _CudaToCpuMode(target)
    mode.__enter__()
    try:
        yield
    finally:
        mode.__exit__(None, None, None)
        for (owner, name), original in originals.items():
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
