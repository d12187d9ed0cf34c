"""Streaming safetensors: read tensors through a memory map, write them one at a time.

The format is an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
then the raw bytes. Writing from a header computed up front means a 16 GB checkpoint is written tensor
by tensor, never assembled in memory; reading maps the file, so only the tensor being converted is paged in.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable, Iterator

import ml_dtypes
import numpy as np

from flmjax.errors import FlmjaxError

_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class SafetensorsError(FlmjaxError):
    pass


def dtype_name(dtype: np.dtype) -> str:
    try:
        return _NAMES[np.dtype(dtype)]
    except KeyError:
        raise SafetensorsError(f"dtype {dtype} cannot be stored in safetensors") from None


class SafetensorsFile:
    """Read-only view of one .safetensors file; `tensor(name)` returns a numpy array backed by the map."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            size = os.path.getsize(self.path)
            with open(self.path, "rb") as f:
                (header_len,) = struct.unpack("<Q", f.read(8))
                if header_len + 8 > size:
                    raise SafetensorsError(f"{self.path}: truncated or not a safetensors file")
                header = json.loads(f.read(header_len))
        except (struct.error, json.JSONDecodeError, UnicodeDecodeError):
            raise SafetensorsError(f"{self.path}: not a safetensors file") from None
        self.metadata = header.pop("__metadata__", {}) or {}
        self.header = header
        self._data_start = 8 + header_len
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r") if size > self._data_start else None

    def keys(self) -> list[str]:
        return list(self.header)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.header[name]["shape"])

    def tensor(self, name: str) -> np.ndarray:
        info = self.header[name]
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise SafetensorsError(f"{self.path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end - begin != int(np.prod(shape)) * dtype.itemsize:
            raise SafetensorsError(f"{self.path}: tensor {name} has a byte range that does not match its shape")
        if self._map is None:
            return np.zeros(shape, dtype)
        raw = self._map[self._data_start + begin : self._data_start + end]
        return raw.view(dtype).reshape(shape)


def write_safetensors(
    path: str | os.PathLike,
    entries: Iterable[tuple[str, tuple[int, ...], np.dtype]],
    produce: Callable[[str], np.ndarray],
    metadata: dict[str, str] | None = None,
) -> int:
    """Write tensors described by `entries` (name, shape, dtype); `produce(name)` makes each one when its
    turn comes. Returns the number of data bytes written."""
    entries = list(entries)
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, shape, dtype in entries:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": dtype_name(dtype), "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = os.fspath(path) + ".partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, dtype in entries:
            array = np.ascontiguousarray(produce(name), dtype=dtype)
            if array.shape != tuple(shape):
                raise SafetensorsError(f"tensor {name}: produced shape {array.shape}, declared {tuple(shape)}")
            f.write(array.tobytes())
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated file under the final name
    return offset


def iter_checkpoint_files(directory: str | os.PathLike) -> Iterator[SafetensorsFile]:
    """The files of an HF checkpoint directory: `model.safetensors`, or the shards its index names."""
    directory = os.fspath(directory)
    index = os.path.join(directory, "model.safetensors.index.json")
    single = os.path.join(directory, "model.safetensors")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f).get("weight_map", {})
        for shard in sorted(set(weight_map.values())):
            shard_path = os.path.join(directory, shard)
            if not os.path.exists(shard_path):
                raise SafetensorsError(f"{directory}: index names shard {shard}, which is missing")
            yield SafetensorsFile(shard_path)
    elif os.path.exists(single):
        yield SafetensorsFile(single)
    else:
        raise SafetensorsError(f"{directory}: no model.safetensors or model.safetensors.index.json")
