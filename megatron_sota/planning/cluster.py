"""The cluster a plan is for: which GPU (runtime/gpus.py's table), how many per node and how many nodes.

Link bandwidths default to the GPU's datasheet node figures; nothing here is measured by the planner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from megatron_sota.errors import MegatronSotaError
from megatron_sota.runtime.gpus import GPUS, GpuSpec


@dataclass(frozen=True)
class ClusterSpec:
    gpu: GpuSpec
    gpus_per_node: int
    nodes: int
    intra_node_gb_s: float
    """Per GPU and direction inside a node (NVLink, or PCIe for PCIe cards)."""
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
        intra_node_gb_s=intra_node_gb_s or spec.node_link_gb_s,
        inter_node_gb_s=inter_node_gb_s or spec.nic_gb_s,
    )
