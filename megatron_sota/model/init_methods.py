"""Initial weights that depend only on (init seed, which tensor, element position in the checkpoint's global tensor).

Each rank generates only its own slice, on the tensor's device: the value of element (i, j) of a weight whose
canonical (checkpoint) shape is [R, C] is a normal(0, std) draw computed from a 64-bit counter-based hash of
(tensor key, i * C + j). Nothing is drawn from a stateful generator, so neither the tensor-parallel size nor the
pipeline split, the virtual stages or the vocabulary padding (a row's values do not depend on R) can change a value:
the model is the same at every layout. Before this, every TP rank built each full master tensor on the CPU and kept
its slice (megatron-core's use_cpu_initialization), about 1.7e9 draws per sota_175b layer per rank.

Which tensor: transformer layers are built inside `layer_scope(global layer number)` (model/layer_spec.py), and
their weights are keyed by (layer, order of the init call within the layer); the embedding and the output layer,
built outside layers, are keyed by their init method's role. `model_scope(seed)` (model/gpt_builder.py) brings the
init seed; an init call outside it is an error.

Where the slice sits in the global tensor: megatron-core sets `partition_dim` and `partition_stride` on a local
weight before it calls the init method (tensor_parallel/layers.py _initialize_affine_weight_gpu); a local partition
of stride s holds s chunks, chunk j being global chunk j * tp + tp_rank (SwiGLU's fc1: [gate_r; up_r], the layout
apply_swiglu_sharded_factory saves). A tensor without those attributes is the whole global tensor: megatron-core's
CPU master weight, which Transformer Engine's layers still use (gpt_builder keeps use_cpu_initialization for TE,
whose own reset_parameters calls the init method before it sets the attributes); the values are the same there.

Bitwise reproducibility: integer hashing, the uniform conversion and products are exact; torch's CPU kernels for
log, cos and sqrt (vml: vectorised on every element, the tail of a piece included) give an element the same bits
whatever piece or thread computes it, which tests/unit/test_init_methods.py checks with odd piece sizes. On CUDA
every element runs the same code. CPU and CUDA runs may differ in the last bit of log/cos before the cast to the
parameter dtype; so may CPUs with different vector units (all ranks of one job share one machine type).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from megatron_sota.errors import MegatronSotaError

_CPU_PIECE = 1 << 15
"""Elements hashed per step on the CPU: the int64 temporaries stay in cache (measured ~3x faster than 3M at once)."""
_GPU_PIECE = 1 << 24

_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64: splitmix64's counter increment
_MUL1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MUL2 = -7723592293110705685  # 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1

_NON_LAYER_SLOTS = {"embedding": 0, "weight": 1, "output": 2}


@dataclass
class _Scope:
    seed: int
    layer: Optional[int] = None
    calls: int = 0
    used: Optional[set] = None


_scopes: list[_Scope] = []


@contextlib.contextmanager
def model_scope(seed: int) -> Iterator[None]:
    """Weights initialised in this block are keyed by `seed` (train.seed)."""
    _scopes.append(_Scope(seed=seed, used=set()))
    try:
        yield
    finally:
        _scopes.pop()


@contextlib.contextmanager
def layer_scope(global_layer: int) -> Iterator[None]:
    """Weights initialised in this block belong to transformer layer `global_layer` (1-based, whole model)."""
    if not _scopes:
        raise MegatronSotaError("a transformer layer was built outside model_scope: its initial weights have no seed")
    _scopes.append(_Scope(seed=_scopes[-1].seed, layer=global_layer))
    try:
        yield
    finally:
        _scopes.pop()


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


def _mix64_tensor(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (products wrap; right shifts masked to be logical)."""
    x = x ^ ((x >> 30) & ((1 << 34) - 1))
    x = x * _MUL1
    x = x ^ ((x >> 27) & ((1 << 37) - 1))
    x = x * _MUL2
    return x ^ ((x >> 31) & ((1 << 33) - 1))


def standard_normals(key: int, index: torch.Tensor) -> torch.Tensor:
    """N(0, 1) float32 values for int64 element indices `index` of the tensor keyed `key` (Box-Muller on 24-bit
    uniforms from one 64-bit hash per element); a pure function of (key, index)."""
    bits = _mix64_tensor(index * _GOLDEN + key)
    u1 = (((bits >> 40) & 0xFFFFFF) + 1).to(torch.float32) * (1.0 / 16777216)  # (0, 1]
    u2 = (bits & 0xFFFFFF).to(torch.float32) * (2 * math.pi / 16777216)  # [0, 2 pi)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(u2)


def _region(key: int, cols: int, rows: range, col_range: range, device: torch.device) -> torch.Tensor:
    """float32 [len(rows), len(col_range)] of the global tensor (`cols` columns) keyed `key`."""
    out = torch.empty(len(rows), len(col_range), dtype=torch.float32, device=device)
    width = len(col_range)
    piece = _CPU_PIECE if out.device.type == "cpu" else _GPU_PIECE
    col_step = min(width, piece)
    row_step = max(1, piece // col_step)
    for r0 in range(0, len(rows), row_step):
        r1 = min(len(rows), r0 + row_step)
        row_index = torch.arange(rows[r0], rows[0] + r1, dtype=torch.int64, device=device).unsqueeze(1) * cols
        for c0 in range(0, width, col_step):
            c1 = min(width, c0 + col_step)
            col_index = torch.arange(col_range[c0], col_range[0] + c1, dtype=torch.int64, device=device)
            out[r0:r1, c0:c1] = standard_normals(key, row_index + col_index)
    return out


def _tp_position() -> tuple[int, int]:
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return 0, 1
    return parallel_state.get_tensor_model_parallel_rank(), parallel_state.get_tensor_model_parallel_world_size()


def fill_normal(tensor: torch.Tensor, key: int, std: float) -> None:
    """Fills this rank's part of the global tensor keyed `key` with normal(0, std) values (see the module doc)."""
    if tensor.dim() != 2:
        raise MegatronSotaError(f"keyed initialisation expects a 2-D weight, found shape {tuple(tensor.shape)}")
    if tensor.device.type == "meta":
        return
    dim, stride, (rank, size) = 0, 1, (0, 1)
    if getattr(tensor, "tensor_model_parallel", False):
        dim, stride = tensor.partition_dim, tensor.partition_stride
        rank, size = _tp_position()
    chunk = tensor.shape[dim] // stride
    global_shape = list(tensor.shape)
    global_shape[dim] *= size
    with torch.no_grad():
        for j in range(stride):
            start = (j * size + rank) * chunk
            spans = [range(global_shape[0]), range(global_shape[1])]
            spans[dim] = range(start, start + chunk)
            values = _region(key, global_shape[1], spans[0], spans[1], tensor.device)
            tensor.narrow(dim, j * chunk, chunk).copy_(values.mul_(std))


@dataclass(frozen=True)
class KeyedNormalInit:
    """megatron-core's init_method: normal(0, std), keyed by the tensor's place in the global model.

    `role` names the init method (weight: config.init_method, output: config.output_layer_init_method, embedding:
    config.embedding_init_method); outside a transformer layer it is the tensor's key, so each role may initialise
    one tensor there per model.
    """

    std: float
    role: str

    def __call__(self, tensor: torch.Tensor) -> None:
        if not _scopes:
            raise MegatronSotaError(
                f"the {self.role} init method was called outside model_scope: build models with "
                "model.gpt_builder.build_model_chunks"
            )
        scope = _scopes[-1]
        if scope.layer is not None:
            key = tensor_key(scope.seed, scope.layer, scope.calls)
            scope.calls += 1
        else:
            if self.role in scope.used:
                raise MegatronSotaError(
                    f"a second tensor outside the transformer layers used the {self.role} init method; "
                    "it would get the same initial values as the first"
                )
            scope.used.add(self.role)
            key = tensor_key(scope.seed, 0, _NON_LAYER_SLOTS[self.role])
        fill_normal(tensor, key, self.std)


def keyed_init_methods(init_method_std: float, num_layers: int) -> dict[str, KeyedNormalInit]:
    """TransformerConfig's three init methods, with megatron-core's standard deviations (utils.init_method_normal,
    scaled_init_method_normal: std / sqrt(2 * num_layers) for the projections back into the residual stream)."""
    return {
        "init_method": KeyedNormalInit(init_method_std, "weight"),
        "output_layer_init_method": KeyedNormalInit(init_method_std / math.sqrt(2.0 * num_layers), "output"),
        "embedding_init_method": KeyedNormalInit(init_method_std, "embedding"),
    }
