"""A torch-free reader and checker of GGUF file headers (versions 1-3): the key/value metadata and the tensor table.

Only the header is parsed: the gguf package's GGUFReader also maps every tensor (seconds, even for a 100 MB
file), too slow for `longlm plan`, which must stay instant.

A .gguf file is untrusted input: every count and length in it is checked against the bytes left in the file
before anything is read, skipped or allocated, so a damaged or hostile header ends in one ValueError, never in
an OverflowError, a MemoryError or minutes of looping.
"""

from __future__ import annotations

import math
import os
import struct
from typing import BinaryIO

_GGUF_MAGIC = b"GGUF"
_GGUF_VERSIONS = (1, 2, 3)
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
MAX_KEYS = 65_536  # real files hold a few dozen keys; this bounds the work a header can ask for
MAX_ARRAY_DEPTH = 4  # real files never nest arrays; a deep nest would exhaust Python's recursion limit
MAX_DIMS = 8  # ggml tensors have at most 4 dimensions; a little slack for future versions
_DEFAULT_ALIGNMENT = 32


class _Cursor:
    """A stream and the number of bytes left in it; every length is checked against those bytes before use."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.pos = stream.tell()
        self.end = stream.seek(0, os.SEEK_END)
        stream.seek(self.pos)
        self.count_format = "<Q"  # "<I" in version 1

    def need(self, size: int, what: str) -> None:
        if size > self.end - self.pos:
            raise ValueError(f"{what} runs past the end of the file (truncated or damaged)")

    def unpack(self, fmt: str, what: str = "the header") -> tuple:
        size = struct.calcsize(fmt)
        self.need(size, what)
        data = self.stream.read(size)
        if len(data) != size:  # the file shrank while it was read
            raise ValueError(f"file ends inside {what}")
        self.pos += size
        return struct.unpack(fmt, data)

    def count(self, what: str) -> int:
        return self.unpack(self.count_format, what)[0]

    def skip(self, size: int, what: str) -> None:
        self.need(size, what)
        self.stream.seek(size, os.SEEK_CUR)
        self.pos += size

    def string(self, what: str) -> str:
        length = self.count(what)
        self.need(length, f"{what} ({length} bytes)")
        data = self.stream.read(length)
        if len(data) != length:
            raise ValueError(f"file ends inside {what}")
        self.pos += length
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{what} is not UTF-8 text") from None


def read_gguf_metadata(stream: BinaryIO) -> dict[str, object]:
    """Read the key/value metadata at the start of a GGUF file (versions 1-3); array values are skipped (None).

    Raises ValueError for a file that is not GGUF, ends early or declares counts its bytes cannot hold.
    """
    return _read_metadata(_Cursor(stream))[1]


def check_gguf(stream: BinaryIO) -> dict[str, object]:
    """Read the metadata and the tensor table of a GGUF file and check every tensor lies inside the file.

    Run before a GGUF is handed to a full loader, so a truncated download or a damaged header is reported in
    one line. Returns the metadata; raises ValueError like read_gguf_metadata.
    """
    cursor = _Cursor(stream)
    tensor_count, metadata = _read_metadata(cursor)
    tensors = _read_tensor_table(cursor, tensor_count)
    alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1):
        raise ValueError(f"general.alignment {alignment!r} is not a power of two")
    data_start = -(-cursor.pos // alignment) * alignment
    sizes = _block_sizes()
    for name, elements, ggml_type, offset, _ in tensors:
        # A type the gguf package does not know still stores more than one bit per element: a lower bound.
        block, block_bytes = sizes.get(ggml_type, (8, 1))
        if data_start + offset + -(-elements // block) * block_bytes > cursor.end:
            raise ValueError(f"the data of tensor {name!r} lies past the end of the file (truncated?)")
    return metadata


def tensor_elements(stream: BinaryIO) -> dict[int, int]:
    """The number of elements of each ggml type in a GGUF file's tensor table (what a conversion will hold).

    Raises ValueError like read_gguf_metadata.
    """
    cursor = _Cursor(stream)
    tensor_count, _ = _read_metadata(cursor)
    counts: dict[int, int] = {}
    for _, elements, ggml_type, _, _ in _read_tensor_table(cursor, tensor_count):
        counts[ggml_type] = counts.get(ggml_type, 0) + elements
    return counts


def tensor_names(stream: BinaryIO) -> list[tuple[str, int, int]]:
    """(name, number of elements, number of dimensions) of every tensor in a GGUF file's tensor table.

    Raises ValueError like read_gguf_metadata.
    """
    cursor = _Cursor(stream)
    tensor_count, _ = _read_metadata(cursor)
    return [(name, elements, dims) for name, elements, _, _, dims in _read_tensor_table(cursor, tensor_count)]


def _read_tensor_table(cursor: _Cursor, tensor_count: int) -> list[tuple[str, int, int, int, int]]:
    min_info = struct.calcsize(cursor.count_format) + 4 + 4 + 8  # name length, n_dims, type, offset
    if tensor_count > (cursor.end - cursor.pos) // min_info:
        raise ValueError(f"it declares {tensor_count} tensors, more than the file can describe")
    return [_read_tensor_info(cursor) for _ in range(tensor_count)]


def _block_sizes() -> dict[int, tuple[int, int]]:
    """(elements, bytes) of a block of each ggml tensor type, from the gguf package, which follows new types."""
    from gguf import GGML_QUANT_SIZES  # imported here: numpy and 0.2 s that `plan` does not need

    return {int(ggml_type): size for ggml_type, size in GGML_QUANT_SIZES.items()}


def _read_metadata(cursor: _Cursor) -> tuple[int, dict[str, object]]:
    """(tensor count, metadata) of the header at the cursor."""
    if cursor.stream.read(4) != _GGUF_MAGIC:
        raise ValueError("missing GGUF magic bytes")
    cursor.pos += 4
    (version,) = cursor.unpack("<I", "the version")
    if version not in _GGUF_VERSIONS:
        raise ValueError(f"unsupported GGUF version {version} (longlm reads versions 1 to 3, little-endian)")
    cursor.count_format = "<I" if version == 1 else "<Q"
    tensor_count = cursor.count("the tensor count")
    kv_count = cursor.count("the key count")
    min_kv = struct.calcsize(cursor.count_format) + 4 + 1  # key length, value type, a one-byte value
    if kv_count > MAX_KEYS or kv_count > (cursor.end - cursor.pos) // min_kv:
        raise ValueError(f"it declares {kv_count} metadata keys, more than the file can hold")
    metadata: dict[str, object] = {}
    for _ in range(kv_count):
        key = cursor.string("a metadata key")
        (value_type,) = cursor.unpack("<I", f"the type of {key!r}")
        metadata[key] = _read_value(cursor, value_type, key)
    return tensor_count, metadata


def _read_value(cursor: _Cursor, value_type: int, key: str) -> object:
    if value_type in _GGUF_SCALARS:
        return cursor.unpack(_GGUF_SCALARS[value_type], f"the value of {key!r}")[0]
    if value_type == _GGUF_STRING:
        return cursor.string(f"the value of {key!r}")
    if value_type == _GGUF_ARRAY:
        _skip_array(cursor, key, depth=1)
        return None
    raise ValueError(f"unknown GGUF value type {value_type} for {key!r}")


def _skip_array(cursor: _Cursor, key: str, *, depth: int) -> None:
    (item_type,) = cursor.unpack("<I", f"the array {key!r}")
    length = cursor.count(f"the array {key!r}")
    count_size = struct.calcsize(cursor.count_format)
    what = f"the array {key!r} ({length} items)"
    if item_type in _GGUF_SCALARS:
        cursor.skip(length * struct.calcsize(_GGUF_SCALARS[item_type]), what)
    elif item_type == _GGUF_STRING:
        cursor.need(length * count_size, what)  # each string takes at least its length field
        _skip_strings(cursor, length, key)
    elif item_type == _GGUF_ARRAY:
        if depth >= MAX_ARRAY_DEPTH:
            raise ValueError(f"the array {key!r} nests arrays more than {MAX_ARRAY_DEPTH} deep")
        cursor.need(length * (4 + count_size), what)
        for _ in range(length):
            _skip_array(cursor, key, depth=depth + 1)
    else:
        raise ValueError(f"unknown GGUF value type {item_type} in the array {key!r}")


def _skip_strings(cursor: _Cursor, count: int, key: str) -> None:
    """Skip ``count`` strings: a tight loop, since a vocabulary holds 100,000 of them and `plan` must stay instant."""
    size = struct.calcsize(cursor.count_format)
    read, seek, unpack = cursor.stream.read, cursor.stream.seek, struct.Struct(cursor.count_format).unpack
    pos, end = cursor.pos, cursor.end
    for _ in range(count):
        data = read(size)
        if len(data) != size:
            raise ValueError(f"file ends inside the array {key!r}")
        (length,) = unpack(data)
        pos += size + length
        if pos > end:
            raise ValueError(f"a string ({length} bytes) in the array {key!r} runs past the end of the file")
        seek(length, os.SEEK_CUR)
    cursor.pos = pos


def _read_tensor_info(cursor: _Cursor) -> tuple[str, int, int, int, int]:
    """(name, number of elements, ggml type, data offset, number of dimensions) of one entry of the tensor
    table."""
    name = cursor.string("a tensor name")
    (n_dims,) = cursor.unpack("<I", f"the tensor {name!r}")
    if n_dims > MAX_DIMS:
        raise ValueError(f"the tensor {name!r} declares {n_dims} dimensions")
    dims = cursor.unpack(f"<{n_dims}{cursor.count_format[1]}", f"the tensor {name!r}")  # uint32 in version 1
    (ggml_type,) = cursor.unpack("<I", f"the tensor {name!r}")
    (offset,) = cursor.unpack("<Q", f"the tensor {name!r}")
    return name, math.prod(dims), ggml_type, offset, n_dims
