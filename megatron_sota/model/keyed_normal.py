"""normal(0, std) values that are a pure function of (tensor key, element position in the global tensor).

The value of element n = i * C + j of a global [R, C] tensor keyed k is the cos (n even) or sin (n odd) half of
Box-Muller on two 24-bit uniforms from splitmix64 of (k, n // 2): a counter-based generator, so a rank computes only its own slice, on the tensor's device, and
no layout (TP slice and stride, vocabulary padding: a row's values do not depend on R) can change a value.
model/init_methods.py decides which tensor gets which key.

Bitwise reproducibility: integer hashing, the uniform conversion and products are exact; torch's CPU kernels for
log, cos and sqrt (vml: vectorised on every element, the tail of a piece included) give an element the same bits
whatever piece or thread computes it, which tests/unit/test_init_methods.py checks with odd piece sizes. On CUDA
every element runs the same code. CPU and CUDA runs may differ in the last bit of log/cos before the cast to the
parameter dtype; so may CPUs with different vector units (all ranks of one job share one machine type).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Optional

import torch
from torch._subclasses.fake_tensor import is_fake

from megatron_sota.errors import MegatronSotaError

_CPU_PIECE = 1 << 17
"""Elements per step on the CPU, on one thread: small enough for the int64 temporaries to stay in cache, large enough
to amortise each op's dispatch (measured on this 2-core machine: 2^15 99, 2^17 136, 2^18 127 M values/s); pieces
this small gain less from OpenMP's second thread than its hand-offs cost (1.7 M/s on two threads under load)."""
_GPU_PIECE = 1 << 24

_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64: splitmix64's counter increment
_MUL1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MUL2 = -7723592293110705685  # 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """splitmix64's finaliser on a Python int (keys)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


def tensor_key(seed: int, layer: int, slot: int) -> int:
    """The 64-bit key of one tensor of the global model: layer 0 holds the embedding and output layer."""
    return _signed(_mix64(_mix64(_mix64(seed) ^ layer) ^ slot))


def _radius_angle(key: int, pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Box-Muller's radius sqrt(-2 ln u1) and angle 2 pi u2 for int64 pair indices `pair` (overwritten): two 24-bit
    uniforms from one splitmix64 hash of (key, pair). In place where possible: each pass is most of a CPU's cost."""
    x = pair.mul_(_GOLDEN).add_(key)
    x ^= (x >> 30).bitwise_and_((1 << 34) - 1)  # masked: int64 shifts are arithmetic
    x *= _MUL1
    x ^= (x >> 27).bitwise_and_((1 << 37) - 1)
    x *= _MUL2
    x ^= (x >> 31).bitwise_and_((1 << 33) - 1)
    angle = (x & 0xFFFFFF).to(torch.float32).mul_(2 * math.pi / 16777216)  # [0, 2 pi)
    u1 = (x >> 40).bitwise_and_(0xFFFFFF).add_(1).to(torch.float32).mul_(1.0 / 16777216)  # (0, 1]
    return u1.log_().mul_(-2.0).sqrt_(), angle


def standard_normals(key: int, index: torch.Tensor) -> torch.Tensor:
    """N(0, 1) float32 values for int64 element indices `index` (overwritten) of the tensor keyed `key`, a pure
    function of (key, index): elements 2m and 2m + 1 are Box-Muller's cos and sin pair of hash (key, m)."""
    odd = (index & 1).bool()
    radius, angle = _radius_angle(key, index.bitwise_right_shift_(1))
    return torch.where(odd, radius * angle.sin(), radius * angle.cos_())


def _even_run_normals(key: int, first_pair: torch.Tensor, pairs: int) -> torch.Tensor:
    """standard_normals of the indices 2 * first_pair + [0, 2 * pairs) (a [rows, 1] column of starts): one hash per
    pair, both of its values kept, about half the passes of the general path."""
    pair = first_pair + torch.arange(pairs, dtype=torch.int64, device=first_pair.device)
    radius, angle = _radius_angle(key, pair)
    return torch.stack((radius * angle.cos(), radius.mul_(angle.sin_())), dim=-1).view(pair.shape[0], 2 * pairs)


def _fill_region(out: torch.Tensor, key: int, cols: int, row0: int, col0: int, std: float) -> None:
    """Writes std * N(0, 1) into `out`, the block of the global tensor (`cols` columns) at (row0, col0)."""
    rows, width = out.shape
    piece = _CPU_PIECE if out.device.type == "cpu" else _GPU_PIECE
    col_step = min(width, piece)
    col_step -= col_step % 2 if col_step > 1 else 0
    row_step = max(1, piece // col_step)
    for r0 in range(0, rows, row_step):
        r1 = min(rows, r0 + row_step)
        row_index = torch.arange(row0 + r0, row0 + r1, dtype=torch.int64, device=out.device).unsqueeze(1) * cols
        for c0 in range(0, width, col_step):
            c1 = min(width, c0 + col_step)
            if cols % 2 == 0 and (col0 + c0) % 2 == 0 and (c1 - c0) % 2 == 0:  # whole pairs in every row
                values = _even_run_normals(key, (row_index + col0 + c0) // 2, (c1 - c0) // 2)
            else:
                col_index = torch.arange(col0 + c0, col0 + c1, dtype=torch.int64, device=out.device)
                values = standard_normals(key, row_index + col_index)
            out[r0:r1, c0:c1].copy_(values.mul_(std))


@contextlib.contextmanager
def _cpu_threads(count: Optional[int]) -> Iterator[None]:
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tp_position() -> tuple[int, int]:
    """(TP rank, TP size) of this process; (0, 1) before megatron-core's parallel state exists."""
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return 0, 1
    return parallel_state.get_tensor_model_parallel_rank(), parallel_state.get_tensor_model_parallel_world_size()


def fill_normal(tensor: torch.Tensor, key: int, std: float) -> None:
    """Fills this rank's part of the global tensor keyed `key` with normal(0, std) values.

    Where the part sits: megatron-core marks a TP-split weight with `partition_dim` and `partition_stride`; a local
    partition of stride s holds s chunks, chunk j being global chunk j * tp + tp_rank (SwiGLU's fc1: [gate_r; up_r],
    the layout apply_swiglu_sharded_factory saves). An unmarked tensor is the whole global tensor.
    """
    if tensor.dim() != 2:
        raise MegatronSotaError(f"keyed initialisation expects a 2-D weight, found shape {tuple(tensor.shape)}")
    if tensor.device.type == "meta" or is_fake(tensor):
        return  # the rehearsal's shapes-only builds (runtime/fake_world.py, FakeTensorMode): no values to fill
    dim, stride, (rank, size) = 0, 1, (0, 1)
    if getattr(tensor, "tensor_model_parallel", False):
        dim, stride = tensor.partition_dim, tensor.partition_stride
        rank, size = tp_position()
    chunk = tensor.shape[dim] // stride
    global_shape = list(tensor.shape)
    global_shape[dim] *= size
    with torch.no_grad(), _cpu_threads(1 if tensor.device.type == "cpu" else None):
        for j in range(stride):
            start = (j * size + rank) * chunk
            origin = (start, 0) if dim == 0 else (0, start)
            _fill_region(tensor.narrow(dim, j * chunk, chunk), key, global_shape[1], origin[0], origin[1], std)
