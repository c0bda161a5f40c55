"""GPU and cluster figures the planner computes with: peak bf16 FLOP/s, memory, HBM and link bandwidths.

Vendor datasheet numbers (dense, no sparsity), cited per entry; nothing here is measured by the planner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from megatron_sota.errors import MegatronSotaError


@dataclass(frozen=True)
class GpuSpec:
    name: str
    bf16_tflops: float
    """Dense bf16 tensor-core peak, TFLOP/s."""
    memory_gib: float
    """Memory a process can allocate, GiB (what the driver reports, less than the marketed GB)."""
    hbm_tb_s: float
    """HBM bandwidth, TB/s: the pace of element-wise (memory-bound) kernels."""
    nvlink_gb_s: float
    """NVLink bandwidth per GPU and direction, GB/s (half the datasheet's bidirectional figure)."""
    nic_gb_s: float
    """Inter-node bandwidth per GPU and direction, GB/s, of the usual 8-NIC node of this GPU."""


GPUS = {
    # NVIDIA H100 Tensor Core GPU datasheet (SXM5): 989.4 TFLOP/s dense bf16 (1,979 with sparsity),
    # 80 GB HBM3 at 3.35 TB/s, NVLink 900 GB/s; nvidia-smi reports 81,559 MiB. DGX H100: 8x ConnectX-7
    # 400 Gb/s = 50 GB/s per GPU.
    "h100-80gb": GpuSpec("H100-80GB SXM", 989.4, 79.6, 3.35, 450.0, 50.0),
    # NVIDIA H200 datasheet: same compute as the H100, 141 GB HBM3e at 4.8 TB/s, NVLink 900 GB/s;
    # 139 GiB usable as seen on the project's H200 (docs/performance.md).
    "h200": GpuSpec("H200 SXM", 989.4, 139.0, 4.8, 450.0, 50.0),
    # NVIDIA A100 datasheet (SXM4 80GB): 312 TFLOP/s dense bf16, 2,039 GB/s, NVLink 600 GB/s;
    # DGX A100: 8x ConnectX-6 200 Gb/s = 25 GB/s per GPU.
    "a100-80gb": GpuSpec("A100-80GB SXM", 312.0, 80.0, 2.039, 300.0, 25.0),
    # NVIDIA DGX B200 datasheet: 72 PFLOP/s fp8 training per 8 GPUs -> 2.25 PFLOP/s dense bf16 per GPU,
    # 1,440 GB per 8 GPUs (180 GB usable of 192 GB), 8 TB/s, NVLink 5 1.8 TB/s; 8x ConnectX-7 400 Gb/s.
    "b200": GpuSpec("B200", 2250.0, 179.0, 8.0, 900.0, 50.0),
}


@dataclass(frozen=True)
class ClusterSpec:
    gpu: GpuSpec
    gpus_per_node: int
    nodes: int
    intra_node_gb_s: float
    """Per GPU and direction inside a node (NVLink)."""
    inter_node_gb_s: float
    """Per GPU and direction between nodes (InfiniBand/RoCE NICs)."""

    @property
    def world_size(self) -> int:
        return self.gpus_per_node * self.nodes

    def link_gb_s(self, group_span: int) -> float:
        """Bandwidth of a collective whose ranks span `group_span` consecutive GPUs."""
        return self.intra_node_gb_s if group_span <= self.gpus_per_node else self.inter_node_gb_s


def build_cluster(
    gpu: str,
    gpus_per_node: int,
    nodes: int,
    intra_node_gb_s: Optional[float] = None,
    inter_node_gb_s: Optional[float] = None,
) -> ClusterSpec:
    if gpu not in GPUS:
        raise MegatronSotaError(f"--gpu {gpu}: unknown GPU; expected one of {', '.join(GPUS)}")
    if gpus_per_node < 1 or nodes < 1:
        raise MegatronSotaError(f"--gpus-per-node and --nodes must be >= 1, got {gpus_per_node} and {nodes}")
    spec = GPUS[gpu]
    return ClusterSpec(
        gpu=spec,
        gpus_per_node=gpus_per_node,
        nodes=nodes,
        intra_node_gb_s=intra_node_gb_s or spec.nvlink_gb_s,
        inter_node_gb_s=inter_node_gb_s or spec.nic_gb_s,
    )
