"""The GPUs this project knows, by the name CUDA reports: dense bf16 peak, memory, HBM and link bandwidths.

The one table behind MFU (training, benchmark) and the planner: datasheet figures (docs/performance.md), never measured here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class GpuSpec:
    name: str
    device_names: tuple[str, ...]
    """What torch.cuda.get_device_name() reports for this part, matched whole: "H100" alone names three parts."""
    bf16_tflops: float
    """Dense bf16 tensor-core peak, TFLOP/s (datasheets print it with sparsity, twice this)."""
    memory_gib: float
    """Memory a process can allocate, GiB (what the driver reports, less than the marketed GB)."""
    hbm_tb_s: float
    """HBM bandwidth, TB/s: the pace of element-wise (memory-bound) kernels."""
    node_link_gb_s: float
    """GPU-to-GPU bandwidth inside a node, per GPU and direction, GB/s: NVLink (half the datasheet's
    bidirectional figure), or PCIe for the PCIe and NVL cards, whose bridges join only pairs or quads."""
    nic_gb_s: float
    """Inter-node bandwidth per GPU and direction, GB/s, of the usual one-NIC-per-GPU node of this generation."""


# Datasheet figures, halved where the datasheet prints bf16 "with sparsity"; docs/performance.md has the
# table with its sources. Memory: what nvidia-smi reports (H100 80GB 81,559 MiB; H100 NVL 95,830 MiB;
# H200 139 GiB usable of 143,771 MiB on the project's H200). PCIe and NVL cards: the node link is PCIe
# (Gen5 x16 64 GB/s, Gen4 x16 32 GB/s per direction), and one NIC per GPU is assumed as for the SXM nodes.
GPUS = {
    # NVIDIA H100 datasheet: SXM 1,979 (sparse) bf16, 3.35 TB/s, NVLink 900 GB/s; PCIe 1,513, 2 TB/s;
    # NVL 1,671, 94 GB at 3.9 TB/s. DGX H100: 8x ConnectX-7 400 Gb/s = 50 GB/s per GPU.
    "h100-80gb": GpuSpec("H100-80GB SXM", ("NVIDIA H100 80GB HBM3",), 989.4, 79.6, 3.35, 450.0, 50.0),
    "h100-pcie": GpuSpec("H100-80GB PCIe", ("NVIDIA H100 PCIe",), 756.5, 79.6, 2.0, 64.0, 50.0),
    "h100-nvl": GpuSpec("H100-94GB NVL", ("NVIDIA H100 NVL",), 835.5, 93.6, 3.9, 64.0, 50.0),
    # NVIDIA H200 datasheet: SXM 1,979 (sparse) bf16, NVL 1,671; both 141 GB HBM3e at 4.8 TB/s; NVLink 900 GB/s.
    "h200": GpuSpec("H200 SXM", ("NVIDIA H200",), 989.4, 139.0, 4.8, 450.0, 50.0),
    "h200-nvl": GpuSpec("H200 NVL", ("NVIDIA H200 NVL",), 835.5, 139.0, 4.8, 64.0, 50.0),
    # NVIDIA A100 datasheet: 312 dense bf16 for every form; HBM 2,039 GB/s (80GB SXM), 1,935 (80GB PCIe),
    # 1,555 (40GB); NVLink 600 GB/s (SXM). DGX A100: 8x ConnectX-6 200 Gb/s = 25 GB/s per GPU.
    # Older drivers report the 40GB parts without the "NVIDIA " prefix.
    "a100-80gb": GpuSpec(
        "A100-80GB SXM", ("NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM-80GB"), 312.0, 80.0, 2.039, 300.0, 25.0
    ),
    "a100-40gb": GpuSpec("A100-40GB SXM", ("NVIDIA A100-SXM4-40GB", "A100-SXM4-40GB"), 312.0, 40.0, 1.555, 300.0, 25.0),
    "a100-80gb-pcie": GpuSpec("A100-80GB PCIe", ("NVIDIA A100 80GB PCIe",), 312.0, 80.0, 1.935, 32.0, 25.0),
    "a100-40gb-pcie": GpuSpec("A100-40GB PCIe", ("NVIDIA A100-PCIE-40GB", "A100-PCIE-40GB"), 312.0, 40.0, 1.555, 32.0, 25.0),
    # NVIDIA DGX B200 datasheet: 72 PFLOP/s fp8 training per 8 GPUs -> 2.25 PFLOP/s dense bf16 per GPU,
    # 1,440 GB per 8 GPUs (180 GB usable of 192 GB), 8 TB/s, NVLink 5 1.8 TB/s; 8x ConnectX-7 400 Gb/s.
    "b200": GpuSpec("B200", ("NVIDIA B200",), 2250.0, 179.0, 8.0, 900.0, 50.0),
}


def gpu_named(device_name: str) -> Optional[GpuSpec]:
    """The part whose CUDA name is exactly `device_name` (surrounding blanks aside), or None."""
    name = device_name.strip()
    return next((spec for spec in GPUS.values() if name in spec.device_names), None)


def peak_flops_per_device(device) -> Optional[float]:  # type: ignore[no-untyped-def]
    """Dense bf16 FLOP/s of a CUDA `device` (a torch.device); None on CPU or for a GPU not in the table."""
    if device.type != "cuda":
        return None
    import torch  # the table itself is read by the planner, which needs no torch

    spec = gpu_named(torch.cuda.get_device_name(device))
    return spec.bf16_tflops * 1e12 if spec else None
