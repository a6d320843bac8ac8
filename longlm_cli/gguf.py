"""A torch-free reader of the key/value header of GGUF files (versions 1-3).

Only the header is parsed: the gguf package's GGUFReader also maps every tensor (seconds, even for a 100 MB
file), too slow for `longlm plan`, which must stay instant.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

_GGUF_MAGIC = b"GGUF"
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def read_gguf_metadata(stream: BinaryIO) -> dict[str, object]:
    """Read the key/value metadata at the start of a GGUF file (versions 1-3); array values are skipped (None).

    Raises ValueError (or struct.error) for a file that is not GGUF or ends early.
    """
    if stream.read(4) != _GGUF_MAGIC:
        raise ValueError("missing GGUF magic bytes")
    (version,) = _unpack(stream, "<I")
    count_format = "<I" if version == 1 else "<Q"
    _unpack(stream, count_format)  # tensor count
    (kv_count,) = _unpack(stream, count_format)
    metadata: dict[str, object] = {}
    for _ in range(kv_count):
        key = _read_gguf_string(stream, count_format)
        (value_type,) = _unpack(stream, "<I")
        metadata[key] = _read_gguf_value(stream, value_type, count_format)
    return metadata


def _read_gguf_value(stream: BinaryIO, value_type: int, count_format: str) -> object:
    if value_type in _GGUF_SCALARS:
        return _unpack(stream, _GGUF_SCALARS[value_type])[0]
    if value_type == _GGUF_STRING:
        return _read_gguf_string(stream, count_format)
    if value_type == _GGUF_ARRAY:
        (item_type,) = _unpack(stream, "<I")
        (length,) = _unpack(stream, count_format)
        if item_type in _GGUF_SCALARS:
            stream.seek(length * struct.calcsize(_GGUF_SCALARS[item_type]), 1)
        elif item_type == _GGUF_STRING:
            _skip_gguf_strings(stream, length, count_format)
        else:
            for _ in range(length):
                _read_gguf_value(stream, item_type, count_format)
        return None
    raise ValueError(f"unknown GGUF value type {value_type}")


def _skip_gguf_strings(stream: BinaryIO, count: int, count_format: str) -> None:
    size = struct.calcsize(count_format)
    read, seek, unpack = stream.read, stream.seek, struct.Struct(count_format).unpack
    for _ in range(count):
        seek(unpack(read(size))[0], 1)


def _read_gguf_string(stream: BinaryIO, count_format: str) -> str:
    (length,) = _unpack(stream, count_format)
    data = stream.read(length)
    if len(data) != length:
        raise ValueError("file ends inside a string")
    return data.decode("utf-8")


def _unpack(stream: BinaryIO, fmt: str) -> tuple:
    size = struct.calcsize(fmt)
    data = stream.read(size)
    if len(data) != size:
        raise ValueError("file ends inside the metadata")
    return struct.unpack(fmt, data)
