"""What makes a document-cache entry safe to load: the tensors it must hold for the model, its header and values
checked before use, its tensors' checksum. Entries are untrusted input (a crafted file, a damaged disk); every
check raises CorruptEntry, which store.py turns into one warning and a rebuild.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..models.architecture import cached_head_shape, text_config
from .keys import FORMAT

MAX_HEADER_BYTES = 4 << 20  # a real entry's header is a few kilobytes; sources may list many documents


def tensor_digest(tensors: Mapping) -> str:
    """The sha256 of every tensor's name, shape, dtype and bytes (an entry keeps it in its metadata); one tensor
    in contiguous memory at a time."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        _digest_tensor(digest, name, tensors[name])
    return digest.hexdigest()


def _digest_tensor(digest, name: str, tensor) -> None:
    import torch

    t = tensor.detach().contiguous().cpu()
    digest.update(name.encode())
    digest.update(str(tuple(t.shape)).encode())
    digest.update(str(t.dtype).encode())
    digest.update(t.view(torch.uint8).numpy().data if t.numel() else b"")


class CorruptEntry(Exception):
    """An entry that must not be used (internal: turned into a warning and a rebuild)."""


def expected_tensors(config, tokens: int) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor (no more, no fewer) of an entry of ``tokens`` tokens for the model."""
    kv_heads, key_dim, value_dim = cached_head_shape(config)
    shapes: dict[str, tuple[int, ...]] = {"ids": (tokens,)}
    for i in range(text_config(config).num_hidden_layers):
        shapes[f"k.{i}"], shapes[f"v.{i}"] = (1, kv_heads, tokens, key_dim), (1, kv_heads, tokens, value_dim)
    return shapes


def read_header(path: Path) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """An entry's metadata and tensor shapes from its header alone (no tensor data, no torch). Raises CorruptEntry."""
    from safetensors import safe_open

    try:
        with open(path, "rb") as handle:  # a crafted header could make safetensors parse up to 100 MB of JSON
            too_large = int.from_bytes(handle.read(8), "little") > MAX_HEADER_BYTES
        if not too_large:
            with safe_open(str(path), framework="numpy") as handle:
                return handle.metadata() or {}, {n: tuple(handle.get_slice(n).get_shape()) for n in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types, OSError, ValueError...
        raise CorruptEntry(f"unreadable ({type(exc).__name__})") from None
    raise CorruptEntry("its header is too large")


def check_header(metadata: dict, shapes: dict, key: str, tokens: int, expected: dict) -> None:
    """Raise CorruptEntry unless the header describes ``tokens`` tokens of ``key`` shaped as ``expected``."""
    if metadata.get("format") != FORMAT or metadata.get("key") != key or "tensor_sha256" not in metadata:
        raise CorruptEntry("its metadata does not match")
    if metadata.get("tokens") != str(tokens):
        raise CorruptEntry("it holds other tokens")
    if metadata.get("layers") != str(len(expected) // 2) or set(shapes) != set(expected):
        raise CorruptEntry("it holds a different number of layers or other tensors")
    if any(shapes[name] != shape for name, shape in expected.items()):
        raise CorruptEntry("its tensor shapes do not match the model")


def rotated_counts(metadata: dict, layers: int, tokens: int) -> dict[int, int]:
    """The entry's per-layer counts of keys re-rotated in place ({} when none). Raises CorruptEntry."""
    try:
        raw = json.loads(metadata.get("rotated_keys", "{}"))
        counts = {int(i): n for i, n in raw.items()}
    except (TypeError, ValueError, AttributeError):
        raise CorruptEntry("its re-rotated key counts are malformed") from None
    if any(not 0 <= i < layers or type(n) is not int or not 0 < n <= tokens for i, n in counts.items()):
        raise CorruptEntry("its re-rotated key counts are malformed")
    return counts


def check_tensors(tensors: Mapping, metadata: dict, prefix_ids: Sequence[int], dtype) -> None:
    """Raise CorruptEntry unless the tensors (an entryfile.Reader: each read once, one at a time) match the
    checksum of ``metadata`` and hold ``prefix_ids`` and finite keys and values of ``dtype``."""
    digest = hashlib.sha256()
    problems: dict[int, str] = {}  # rank -> reason: the same reason whichever tensor shows it first
    read = getattr(tensors, "read", None)
    scratch = None  # one tensor the keys and values are read into, one after another (entryfile.Reader.read)
    for name in sorted(tensors):
        tensor = read(name, scratch) if read is not None and name != "ids" else tensors[name]
        if name != "ids" and (scratch is None or tensor.data_ptr() != scratch.data_ptr()):
            scratch = tensor  # the first one read, or one too large for the scratch tensor so far
        _digest_tensor(digest, name, tensor)
        problem = _value_problem(name, tensor, prefix_ids, dtype)
        if problem is not None:
            problems.setdefault(*problem)
    if metadata["tensor_sha256"] != digest.hexdigest():
        raise CorruptEntry("its tensor checksum does not match")
    if problems:
        raise CorruptEntry(problems[min(problems)])


def _value_problem(name: str, tensor, prefix_ids: Sequence[int], dtype) -> tuple[int, str] | None:
    import torch

    if name == "ids":
        if tensor.dtype != torch.int64 or tensor.tolist() != list(prefix_ids):
            return 0, "it holds other tokens"
        return None
    if tensor.dtype != dtype:
        return 1, "its dtype does not match the model"
    # A NaN key or value passes every other check and silently turns every later answer into garbage.
    if not bool(torch.isfinite(tensor).all()):
        return 2, "it holds NaN or infinite values"
    return None
