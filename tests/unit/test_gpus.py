"""The one GPU table: each CUDA device name gets its own part's peak (an H100 PCIe is not an H100 SXM), planner and MFU agree."""

from __future__ import annotations

import pytest
import torch

from megatron_sota.planning.cluster import build_cluster
from megatron_sota.runtime.gpus import GPUS, gpu_named, peak_flops_per_device

# torch.cuda.get_device_name() of each part -> its dense bf16 peak in TFLOP/s (datasheet, sparse / 2).
REPORTED = {
    "NVIDIA H100 80GB HBM3": 989.4,
    "NVIDIA H100 PCIe": 756.5,
    "NVIDIA H100 NVL": 835.5,
    "NVIDIA H200": 989.4,
    "NVIDIA H200 NVL": 835.5,
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA A100-PCIE-40GB": 312.0,
    "NVIDIA B200": 2250.0,
}


def _peak_reported_for(monkeypatch, device_name: str):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: device_name)
    return peak_flops_per_device(torch.device("cuda", 0))


@pytest.mark.parametrize("device_name, tflops", sorted(REPORTED.items()))
def test_each_device_name_gets_its_own_parts_peak(monkeypatch, device_name, tflops):
    assert _peak_reported_for(monkeypatch, device_name) == pytest.approx(tflops * 1e12)


def test_the_h100_pcie_and_nvl_do_not_get_the_sxm_peak(monkeypatch):
    sxm = _peak_reported_for(monkeypatch, "NVIDIA H100 80GB HBM3")
    assert _peak_reported_for(monkeypatch, "NVIDIA H100 PCIe") < 0.8 * sxm
    assert _peak_reported_for(monkeypatch, "NVIDIA H100 NVL") < 0.9 * sxm


def test_an_unknown_gpu_or_the_cpu_has_no_peak(monkeypatch):
    assert _peak_reported_for(monkeypatch, "NVIDIA GeForce RTX 4090") is None
    assert _peak_reported_for(monkeypatch, "H100") is None  # a fragment names no part
    assert peak_flops_per_device(torch.device("cpu")) is None


def test_device_names_are_unique_and_the_planner_reads_the_same_table():
    names = [n for spec in GPUS.values() for n in spec.device_names]
    assert len(names) == len(set(names))
    assert gpu_named(" NVIDIA H100 PCIe\n") is GPUS["h100-pcie"]
    for key, spec in GPUS.items():
        assert build_cluster(key, gpus_per_node=8, nodes=1).gpu is spec
    # PCIe cards talk over PCIe inside the node, not at the SXM part's NVLink speed.
    assert build_cluster("h100-pcie", 8, 2).link_gb_s(8) < build_cluster("h100-80gb", 8, 2).link_gb_s(8) / 4


def test_the_trainers_mfu_and_the_benchmark_read_this_table():
    from megatron_sota.perf import benchmark
    from megatron_sota.training.callbacks import metrics_log

    assert metrics_log.peak_flops_per_device is peak_flops_per_device
    assert benchmark.peak_flops_per_device is peak_flops_per_device
