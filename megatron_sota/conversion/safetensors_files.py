"""Writes and reads Hugging Face weight files: model.safetensors, or model-0000i-of-0000n.safetensors + index.

The writer knows every tensor's name, shape and dtype up front, so it writes each file's header
first and then each tensor at its place as it arrives: memory holds one tensor, never a shard
or the model. Format: 8-byte little-endian header length, JSON header (name -> dtype, shape,
data_offsets), then the raw little-endian bytes (https://github.com/huggingface/safetensors).
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from megatron_sota.errors import MegatronSotaError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_DTYPE_CODES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def parse_size(text: str) -> int:
    """'5GB', '500MB', '2GiB' or a byte count -> bytes (decimal units as Hugging Face's max_shard_size)."""
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
    upper = str(text).strip().upper()
    for suffix, factor in units.items():
        if upper.endswith(suffix) and upper[: -len(suffix)].strip().replace(".", "", 1).isdigit():
            return int(float(upper[: -len(suffix)]) * factor)
    if upper.isdigit():
        return int(upper)
    raise MegatronSotaError(f"shard size {text!r}: expected a size such as 5GB, 500MB or 2GiB")


@dataclass(frozen=True)
class _Entry:
    file: str
    start: int
    """Offset of the tensor's bytes from the start of the file."""
    shape: Tuple[int, ...]


def _plan_files(shapes: Dict[str, Tuple[int, ...]], itemsize: int, max_shard_bytes: int) -> List[List[str]]:
    files: List[List[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = math.prod(shape) * itemsize
        if files[-1] and size + nbytes > max_shard_bytes:
            files.append([])
            size = 0
        files[-1].append(name)
        size += nbytes
    return files


class StreamingSafetensorsWriter:
    """Writes `shapes` (name -> shape, in file order) in `dtype` under out_dir, one tensor at a time."""

    def __init__(self, out_dir: str, shapes: Dict[str, Tuple[int, ...]], dtype: torch.dtype, max_shard_bytes: int):
        self.out_dir = out_dir
        self.dtype = dtype
        groups = _plan_files(shapes, torch.empty((), dtype=dtype).element_size(), max_shard_bytes)
        count = len(groups)
        self.file_names = [SINGLE_FILE] if count == 1 else [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
        self._entries: Dict[str, _Entry] = {}
        self._pending = set(shapes)
        self.total_bytes = 0
        for file_name, names in zip(self.file_names, groups):
            self._start_file(file_name, {name: shapes[name] for name in names})

    def _start_file(self, file_name: str, shapes: Dict[str, Tuple[int, ...]]) -> None:
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        for name, shape in shapes.items():
            nbytes = math.prod(shape) * itemsize
            header[name] = {"dtype": _DTYPE_CODES[self.dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
        data_start = 8 + len(encoded)
        with open(os.path.join(self.out_dir, file_name), "wb") as handle:
            handle.write(struct.pack("<Q", len(encoded)))
            handle.write(encoded)
            handle.truncate(data_start + offset)
        for name, shape in shapes.items():
            self._entries[name] = _Entry(file_name, data_start + header[name]["data_offsets"][0], tuple(shape))
        self.total_bytes += offset

    def write(self, name: str, tensor: torch.Tensor) -> None:
        entry = self._entries.get(name)
        if entry is None or name not in self._pending:
            raise MegatronSotaError(f"{name}: not expected by the export plan, or written twice")
        if tuple(tensor.shape) != entry.shape:
            raise MegatronSotaError(f"{name}: expected shape {list(entry.shape)}, found {list(tensor.shape)}")
        data = tensor.detach().to(device="cpu", dtype=self.dtype).contiguous()
        with open(os.path.join(self.out_dir, entry.file), "r+b") as handle:
            handle.seek(entry.start)
            handle.write(data.view(-1).view(torch.uint8).numpy())  # the buffer itself, no bytes copy
        self._pending.discard(name)

    def finish(self) -> List[str]:
        """Checks every tensor was written; writes the index when sharded. Returns the files written."""
        if self._pending:
            raise MegatronSotaError(f"export incomplete: {len(self._pending)} tensors never written, e.g. {sorted(self._pending)[:3]}")
        if len(self.file_names) == 1:
            return list(self.file_names)
        index = {
            "metadata": {"total_size": self.total_bytes},
            "weight_map": {name: entry.file for name, entry in self._entries.items()},
        }
        with open(os.path.join(self.out_dir, INDEX_FILE), "w") as handle:
            json.dump(index, handle, indent=2)
        return [*self.file_names, INDEX_FILE]


class SafetensorsDirectory:
    """The weights of a Hugging Face model directory, sharded (index file) or not, read lazily."""

    def __init__(self, hf_dir: str):
        from safetensors import safe_open

        self.hf_dir = hf_dir
        self._files: Dict[str, str] = {}  # tensor name -> file
        index_path = os.path.join(hf_dir, INDEX_FILE)
        if os.path.exists(index_path):
            self._files = _read_index(index_path)
            for file_name in sorted(set(self._files.values())):
                if not os.path.isfile(os.path.join(hf_dir, file_name)):
                    example = next(n for n, f in self._files.items() if f == file_name)
                    raise MegatronSotaError(
                        f"{index_path} names {file_name} (holding {example} and others), but {os.path.join(hf_dir, file_name)} does not exist"
                    )
                read_header(os.path.join(hf_dir, file_name))  # a damaged shard is named now, not mid-import
        elif os.path.isfile(os.path.join(hf_dir, SINGLE_FILE)):
            header = read_header(os.path.join(hf_dir, SINGLE_FILE))
            self._files = {name: SINGLE_FILE for name in header if name != "__metadata__"}
        else:
            found = sorted(os.listdir(hf_dir)) if os.path.isdir(hf_dir) else "no such directory"
            raise MegatronSotaError(f"{hf_dir}: expected {SINGLE_FILE} or {INDEX_FILE} (found: {found})")
        self._open = {}
        self._safe_open = safe_open

    def names(self) -> List[str]:
        return list(self._files)

    def _handle(self, file_name: str):
        if file_name not in self._open:
            path = os.path.join(self.hf_dir, file_name)
            try:
                self._open[file_name] = self._safe_open(path, framework="pt")
            except Exception as err:
                raise MegatronSotaError(f"{path}: not a readable safetensors file ({err})") from None
        return self._open[file_name]

    def get(self, name: str) -> torch.Tensor:
        file_name = self._files.get(name)
        if file_name is None:
            raise MegatronSotaError(f"{self.hf_dir}: tensor {name} is missing from the weights")
        handle = self._handle(file_name)
        if name not in handle.keys():
            raise MegatronSotaError(f"{os.path.join(self.hf_dir, file_name)}: tensor {name} is missing (the index file names it there)")
        return handle.get_tensor(name)

    def shape(self, name: str) -> Optional[Tuple[int, ...]]:
        file_name = self._files.get(name)
        if file_name is None:
            return None
        return tuple(self._handle(file_name).get_slice(name).get_shape())


def read_header(path: str) -> dict:
    """The JSON header of a safetensors file, once the file is known to hold every byte the header promises.

    safetensors' own errors ("incomplete metadata, file not fully covered") name neither the file nor the
    cause; a download or copy cut short is the usual one.
    """
    size = os.path.getsize(path)
    redo = "download or copy it again"
    with open(path, "rb") as handle:
        length_field = handle.read(8)
        if len(length_field) < 8:
            raise MegatronSotaError(
                f"{path}: expected a safetensors file (8-byte header length, JSON header, tensor data), "
                f"found a file of {size} bytes; it is truncated or not a safetensors file; {redo}"
            )
        (length,) = struct.unpack("<Q", length_field)
        if 8 + length > size:
            raise MegatronSotaError(
                f"{path}: expected a header length (its first 8 bytes) that fits in the file, found a header of "
                f"{length:,} bytes in a file of {size:,}; the file is truncated or damaged; {redo}"
            )
        try:
            header = json.loads(handle.read(length))
            data_bytes = max((e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"), default=0)
        except (UnicodeDecodeError, ValueError, AttributeError, KeyError, TypeError, IndexError) as err:
            raise MegatronSotaError(
                f"{path}: expected a JSON header of {length:,} bytes listing each tensor's data_offsets, found one "
                f"that does not parse ({type(err).__name__}: {err}); the file is damaged; {redo}"
            ) from None
    found = size - 8 - length
    if found != data_bytes:
        damage = "truncated (an interrupted download or copy?)" if found < data_bytes else "damaged"
        raise MegatronSotaError(
            f"{path}: expected {data_bytes:,} bytes of tensor data (as its header says), found {found:,}; "
            f"the file is {damage}; {redo}"
        )
    return header


def _read_index(index_path: str) -> Dict[str, str]:
    try:
        with open(index_path) as handle:
            weight_map = json.load(handle)["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise MegatronSotaError(f"{index_path}: expected JSON with a 'weight_map' object ({type(err).__name__}: {err})") from None
    if not isinstance(weight_map, dict):
        raise MegatronSotaError(f"{index_path}: 'weight_map' must map tensor names to file names")
    return {str(name): str(file_name) for name, file_name in weight_map.items()}
