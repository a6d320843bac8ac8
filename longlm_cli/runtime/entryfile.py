"""A document-cache entry's file, one tensor at a time: written and read without every tensor in memory at once.

safetensors' own ``save_file`` and ``load_file`` take or give all tensors together, and a session's keys and
values are views of larger buffers (runtime/kvcache.py), so saving copies them all first: at the end of a long
prefill, when memory is tightest, that is a second KV cache (``benchmarks/doccache.py --memory``). The file is
plain safetensors (an 8-byte little-endian header size, a JSON header of each tensor's dtype, shape and byte
range plus string metadata, padded to 8 bytes, then the bytes), so safetensors reads it; this module writes
it tensor by tensor and reads one tensor when asked, straight into the tensor's memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeGuard

_DTYPES = {  # torch dtype name -> safetensors
    **{"float32": "F32", "bfloat16": "BF16", "float16": "F16", "int64": "I64"},
    **{"int8": "I8", "uint8": "U8"},  # quantized model weights (runtime/ggufquant.py)
}
_TORCH = {code: name for name, code in _DTYPES.items()}


def write(path: Path | str, tensors: Mapping, metadata: dict[str, str]) -> None:
    """Write ``tensors`` (name -> tensor; any strides, any device) and ``metadata`` as a safetensors file, each
    tensor copied to contiguous CPU memory only while it is written. OSError when the disk refuses."""
    import torch

    names = sorted(tensors)
    header: dict = {}
    offset = 0
    for name in names:
        t = tensors[name]
        size = t.numel() * t.element_size()
        dtype = _DTYPES[str(t.dtype).removeprefix("torch.")]
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the tensor bytes start 8-aligned, as safetensors writes them
    with open(path, "wb") as handle:
        handle.write(len(raw).to_bytes(8, "little"))
        handle.write(raw)
        for name in names:
            t = tensors[name].detach().cpu().contiguous()  # a copy of this tensor alone, when it is a view
            if t.numel():
                handle.write(t.view(torch.uint8).numpy().data)


class HeaderTooLarge(ValueError):
    """A header larger than the reader allows (a crafted file could make it gigabytes of JSON)."""


class Reader(Mapping):
    """An open entry's tensors by name, each read from the file into a new tensor when indexed (not kept; plain
    reads, not a memory map, so the file's pages do not stay in the process)."""

    def __init__(self, handle, header: dict, start: int, metadata: dict[str, str]):
        self._handle, self._header, self._start = handle, header, start
        self.metadata = metadata  # the file's string metadata ({} when it has none)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Each tensor's shape, from the header alone."""
        return {name: tuple(info["shape"]) for name, info in self._header.items()}

    def __getitem__(self, name: str):
        return self.read(name)

    def read(self, name: str, scratch=None):
        """Tensor ``name`` read from the file: into ``scratch``'s memory when it is a contiguous CPU tensor with
        room for it (a view of it is returned), else into a new tensor. Reading layer after layer through one
        scratch tensor leaves no freed blocks behind for the allocator to keep (a new tensor per layer left
        freed blocks of about the cache's size resident after loading)."""
        import torch

        info = self._header[name]  # KeyError for a name the file does not hold
        lo, hi = info["data_offsets"]
        dtype, shape = getattr(torch, _TORCH[info["dtype"]]), info["shape"]
        count = 1
        for size in shape:
            count *= size
        fits = scratch is not None and scratch.dtype == dtype and scratch.is_contiguous() and scratch.numel() >= count
        tensor = scratch.view(-1)[:count].view(shape) if fits else torch.empty(shape, dtype=dtype)
        if hi - lo != tensor.numel() * tensor.element_size():
            raise ValueError(f"tensor {name!r}: {hi - lo} bytes for shape {shape}")
        if tensor.numel():
            self._handle.seek(self._start + lo)
            if self._handle.readinto(tensor.view(torch.uint8).numpy().data) != hi - lo:
                raise ValueError(f"tensor {name!r}: the file ends inside it")
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._header)

    def __len__(self) -> int:
        return len(self._header)


@contextmanager
def open_tensors(path: Path | str, max_header: int) -> Iterator[Reader]:
    """A Reader over the safetensors file at ``path``, while open. ValueError (or OSError) when its header is
    larger than ``max_header`` bytes or not a safetensors header; its tensors are checked when read."""
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        if size > max_header:
            raise HeaderTooLarge("header too large")
        header = json.loads(handle.read(size))
        if not isinstance(header, dict):
            raise ValueError("not a safetensors header")
        metadata = header.pop("__metadata__", None) or {}
        if not _strings(metadata) or not all(map(_tensor_info, header.values())):
            raise ValueError("not a safetensors header of known dtypes")
        yield Reader(handle, header, 8 + size, metadata)


def _strings(metadata) -> bool:
    return isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())


def _tensor_info(info) -> bool:
    """A header's entry for one tensor, as safetensors writes it: a known dtype, a shape and a byte range."""
    if not isinstance(info, dict) or info.get("dtype") not in _TORCH:
        return False
    shape, offsets = info.get("shape"), info.get("data_offsets")
    return _naturals(shape) and _naturals(offsets) and len(offsets) == 2 and offsets[0] <= offsets[1]


def _naturals(values: object) -> TypeGuard[list[int]]:
    return isinstance(values, list) and all(type(v) is int and v >= 0 for v in values)
