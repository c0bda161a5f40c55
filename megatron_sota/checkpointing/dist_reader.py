"""Reads single tensors, or one layer of a stacked tensor, from a torch_dist checkpoint in one process.

megatron-core stores every parameter under a layout-free global name (layers stacked on a
leading axis), so any region can be read without knowing the TP/PP layout it was saved with and
without a process group. Only the stored chunks that overlap the requested region are read,
which keeps the memory of an export at one layer, not one model.
"""

from __future__ import annotations

import warnings
from typing import Dict, Optional, Tuple

import torch
from omegaconf import OmegaConf
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, TensorStorageMetadata
from torch.distributed.checkpoint.planner import LoadPlan
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

from megatron_sota.checkpointing.manager import read_common
from megatron_sota.config.job import JobConfig
from megatron_sota.config.typed import to_job_config
from megatron_sota.errors import MegatronSotaError

EMBEDDING = "embedding.word_embeddings.weight"
"""megatron-core's stored name of the token embedding; its rows are the vocabulary padded for kernels."""


class _RegionPlanner(DefaultLoadPlanner):
    """Reads the region [offset, offset + dest.shape) of each requested global tensor into dest."""

    def __init__(self, offsets: Dict[str, Tuple[int, ...]]):
        super().__init__()
        self.offsets = offsets

    def create_local_plan(self) -> LoadPlan:
        items = []
        for key, dest in self.state_dict.items():
            region = ChunkStorageMetadata(offsets=torch.Size(self.offsets[key]), sizes=dest.shape)
            items += create_read_items_for_chunk_list(key, self.metadata.state_dict_metadata[key], [region])
        return LoadPlan(items)

    def lookup_tensor(self, index):
        return self.state_dict[index.fqn]


class _MetadataOnceReader(FileSystemReader):
    """Unpickles the checkpoint's .metadata once, not once per tensor read (it grows with the model)."""

    def __init__(self, path: str):
        super().__init__(path)
        self._metadata = super().read_metadata()

    def read_metadata(self):
        return self._metadata


class DistCheckpointReader:
    """One iter_NNNNNNN/ directory of a megatron_sota checkpoint, opened read-only."""

    def __init__(self, checkpoint_dir: str):
        self.path = checkpoint_dir
        self.common = read_common(checkpoint_dir)  # checks .metadata is safe before torch unpickles it below
        self._storage = _MetadataOnceReader(checkpoint_dir)
        self._tensors: Dict[str, TensorStorageMetadata] = {
            key: md
            for key, md in self._storage.read_metadata().state_dict_metadata.items()
            if isinstance(md, TensorStorageMetadata)
        }

    def job_config(self) -> JobConfig:
        """The run config the checkpoint was saved with (model shape, tokenizer, sampling defaults)."""
        text = self.common.get("config_yaml")
        if not text:
            raise MegatronSotaError(f"{self.path}/common.pt holds no run config (config_yaml); cannot tell the model's shape")
        try:
            return to_job_config(OmegaConf.create(text))
        except MegatronSotaError as err:
            raise MegatronSotaError(f"{self.path}: the run config stored in the checkpoint is not valid here: {err}") from None

    def padded_vocab_size(self) -> int:
        return self.shape(EMBEDDING)[0]

    def has(self, key: str) -> bool:
        return key in self._tensors

    def shape(self, key: str) -> Tuple[int, ...]:
        return tuple(self._metadata(key).size)

    def dtype(self, key: str) -> torch.dtype:
        return self._metadata(key).properties.dtype

    def read(self, key: str, layer: Optional[int] = None) -> torch.Tensor:
        """The whole global tensor, or the `layer`-th slice of a layer-stacked one."""
        shape = self.shape(key)
        if layer is None:
            dest, offset = torch.empty(shape, dtype=self.dtype(key)), (0,) * len(shape)
        else:
            if not 0 <= layer < shape[0]:
                raise MegatronSotaError(f"{self.path}: {key} has {shape[0]} layers, layer {layer} requested")
            dest, offset = torch.empty((1, *shape[1:]), dtype=self.dtype(key)), (layer,) + (0,) * (len(shape) - 1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # no_dist: torch warns that no process group is used
                dcp.load({key: dest}, storage_reader=self._storage, planner=_RegionPlanner({key: offset}), no_dist=True)
        except BaseException as err:  # torch's CheckpointException is a BaseException
            if isinstance(err, (KeyboardInterrupt, SystemExit)):
                raise
            raise MegatronSotaError(
                f"{self.path}: reading {key}{'' if layer is None else f' (layer {layer})'} failed: "
                f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
            ) from None
        return dest if layer is None else dest[0]

    def _metadata(self, key: str) -> TensorStorageMetadata:
        if key not in self._tensors:
            model_keys = sorted(k for k in self._tensors if not k.startswith("optimizer."))
            raise MegatronSotaError(
                f"{self.path}: the checkpoint has no tensor {key!r} (model tensors there: {', '.join(model_keys[:12])})"
            )
        return self._tensors[key]
