"""The document cache store: prefilled documents' keys and values on disk; saving, checking, listing, pruning.

The prompt puts the document first and the question after it, so the tokens up to the end of the document
are the same for every question. After they are prefilled once, their keys and values are saved under
``cache_dir()/"kv"``; a later `ask`, `summarize` or `chat` with the same key loads them and prefills only the rest
(pipeline.py decides when; this module only stores, checks, lists and evicts).

Entries are named by cachekeys.document_key. They are safetensors files (tensors and string metadata only,
never pickle) written under a temporary name and renamed into place, so a reader never sees a half-written
file. A sha256 of the tensor bytes is kept in the metadata and checked on load: a corrupt, truncated or
mismatched entry is reported once on stderr, deleted and rebuilt. The SelfExtend grouped keys are not saved:
they are recomputed on the next forward call from the restored cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .cachekeys import FORMAT
from .defaults import DEFAULT_DOC_CACHE_MAX_BYTES, DOC_CACHE_MAX_BYTES_ENV
from .errors import CacheError
from .paths import cache_dir

SUFFIX = ".safetensors"
TEMP_PREFIX = ".tmp-"
STALE_TEMP_SECONDS = 3600  # temporary files older than this are leftovers of interrupted runs


@dataclass(frozen=True)
class DocCacheSettings:
    """Whether to use the document cache, where it lives and how large it may grow."""

    enabled: bool = True
    directory: Path | None = None  # None: cache_dir() / "kv"
    max_bytes: int | None = None  # None: $LONGLM_CACHE_MAX_BYTES, else DEFAULT_DOC_CACHE_MAX_BYTES

    def resolved_directory(self) -> Path:
        return Path(self.directory) if self.directory is not None else kv_dir()

    def resolved_max_bytes(self) -> int:
        return self.max_bytes if self.max_bytes is not None else max_bytes_from_env()


@dataclass(frozen=True)
class Entry:
    """One cache entry as `longlm cache list` shows it."""

    key: str
    path: Path
    size: int
    last_used: float  # seconds since the epoch (the file's mtime, refreshed on every use)
    sources: tuple[str, ...]
    tokens: int | None


def kv_dir() -> Path:
    """The directory holding document cache entries."""
    return cache_dir() / "kv"


def max_bytes_from_env() -> int:
    """The size limit from $LONGLM_CACHE_MAX_BYTES (bytes), else the 4 GiB default."""
    raw = os.environ.get(DOC_CACHE_MAX_BYTES_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_DOC_CACHE_MAX_BYTES
    try:
        value = int(raw.strip())
    except ValueError:
        raise CacheError(f"{DOC_CACHE_MAX_BYTES_ENV}={raw!r} is not a whole number of bytes") from None
    if value < 0:
        raise CacheError(f"{DOC_CACHE_MAX_BYTES_ENV}={raw!r} must not be negative")
    return value


def warn(message: str) -> None:
    print(f"Warning: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# Saving and loading


def cache_unsupported_reason(cache) -> str | None:
    """Why a DynamicCache cannot be saved and restored (sliding-window or other special layers), or None."""
    from transformers.cache_utils import DynamicLayer

    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            return f"the model has {type(layer).__name__} cache layers (sliding-window attention); not cached"
    return None


def _tensor_digest(tensors: dict) -> str:
    import torch

    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        digest.update(name.encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(str(t.dtype).encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def entry_path(directory: Path, key: str) -> Path:
    return directory / f"{key}{SUFFIX}"


def save_entry(directory: Path, key: str, cache, prefix_ids: Sequence[int], sources: Sequence[str]) -> Path:
    """Write the keys and values of ``cache`` (holding exactly ``prefix_ids``) as the entry ``key``."""
    import torch
    from safetensors.torch import save_file

    tensors = {"ids": torch.tensor(list(prefix_ids), dtype=torch.int64)}
    for i, layer in enumerate(cache.layers):
        tensors[f"k.{i}"] = layer.keys.detach().contiguous().cpu()
        tensors[f"v.{i}"] = layer.values.detach().contiguous().cpu()
    metadata = {
        "format": FORMAT,
        "key": key,
        "tokens": str(len(prefix_ids)),
        "layers": str(len(cache.layers)),
        "sources": json.dumps(list(sources)),
        "tensor_sha256": _tensor_digest(tensors),
        "created": f"{time.time():.3f}",
    }
    directory.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{key[:16]}-", suffix=SUFFIX, dir=directory)
    os.close(fd)
    try:
        save_file(tensors, temp, metadata=metadata)
        os.replace(temp, entry_path(directory, key))
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    return entry_path(directory, key)


class CorruptEntry(Exception):
    """An entry that must not be used (internal: turned into a warning and a rebuild)."""


def _read_entry(path: Path, key: str, prefix_ids: Sequence[int], cache_template) -> dict:
    """Load and check an entry; return its tensors. Raises CorruptEntry on any problem."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types, OSError, ValueError...
        raise CorruptEntry(f"unreadable ({type(exc).__name__})") from None
    if metadata.get("format") != FORMAT or metadata.get("key") != key:
        raise CorruptEntry("its metadata does not match")
    if metadata.get("tensor_sha256") != _tensor_digest(tensors):
        raise CorruptEntry("its tensor checksum does not match")
    ids = tensors.get("ids")
    n = len(prefix_ids)
    if ids is None or metadata.get("tokens") != str(n) or ids.tolist() != list(prefix_ids):
        raise CorruptEntry("it holds other tokens")
    layers = len(cache_template.layers) or int(metadata.get("layers") or 0)  # 0: layers are created lazily
    if metadata.get("layers") != str(layers) or set(tensors) != {
        "ids",
        *(f"{p}.{i}" for p in "kv" for i in range(layers)),
    }:
        raise CorruptEntry("it holds a different number of layers")
    for i in range(layers):
        k, v = tensors[f"k.{i}"], tensors[f"v.{i}"]
        if k.ndim != 4 or v.ndim != 4 or k.shape[0] != 1 or k.shape[2] != n or v.shape[:3] != k.shape[:3]:
            raise CorruptEntry("its tensor shapes do not match")
    return tensors


def tensors_layers(tensors: dict) -> int:
    return sum(1 for name in tensors if name.startswith("k."))


def load_entry(directory: Path, key: str, prefix_ids: Sequence[int], cache, *, dtype, device) -> bool:
    """Fill the empty DynamicCache ``cache`` from entry ``key``; True on success, False when there is none.

    A corrupt or mismatched entry is reported once on stderr and deleted; False is returned so it is rebuilt.
    """
    path = entry_path(directory, key)
    if not path.is_file():
        return False
    try:
        tensors = _read_entry(path, key, prefix_ids, cache)
        if any(t.dtype != dtype for name, t in tensors.items() if name != "ids"):
            raise CorruptEntry("its dtype does not match")
        for i in range(int(tensors_layers(tensors))):
            cache.update(tensors[f"k.{i}"].to(device), tensors[f"v.{i}"].to(device), i)
        if cache.get_seq_length() != len(prefix_ids):
            raise CorruptEntry("it restored a different number of tokens")
    except CorruptEntry as exc:
        warn(f"cached document {key[:12]} was corrupt ({exc}); rebuilding")
        for layer in cache.layers:  # leave the cache empty for the rebuild
            layer.reset()
        try:
            path.unlink()
        except OSError:
            pass
        return False
    touch(path)
    return True


def touch(path: Path) -> None:
    """Mark an entry as just used (its mtime is the LRU clock)."""
    try:
        os.utime(path)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------------------
# Listing, pruning, clearing


def _sources_of(path: Path) -> tuple[tuple[str, ...], int | None]:
    try:
        from safetensors import safe_open

        # Only the header is read: the numpy framework keeps `longlm cache list` free of torch.
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
        return tuple(json.loads(metadata.get("sources", "[]"))), int(metadata.get("tokens", ""))
    except Exception:
        return (), None


def list_entries(directory: Path | None = None, *, with_sources: bool = True) -> list[Entry]:
    """Entries, most recently used first."""
    directory = Path(directory) if directory is not None else kv_dir()
    if not directory.is_dir():
        return []
    entries = []
    for path in directory.glob(f"*{SUFFIX}"):
        if path.name.startswith(TEMP_PREFIX):
            continue
        try:
            stat = path.stat()
        except OSError:
            continue
        sources, tokens = _sources_of(path) if with_sources else ((), None)
        entries.append(
            Entry(
                key=path.name[: -len(SUFFIX)],
                path=path,
                size=stat.st_size,
                last_used=stat.st_mtime,
                sources=sources,
                tokens=tokens,
            )
        )
    entries.sort(key=lambda e: e.last_used, reverse=True)
    return entries


def _remove_stale_temps(directory: Path, *, older_than: float) -> None:
    now = time.time()
    for path in directory.glob(f"{TEMP_PREFIX}*"):
        try:
            if now - path.stat().st_mtime >= older_than:
                path.unlink()
        except OSError:
            pass


def prune(directory: Path | None = None, *, max_bytes: int | None = None, keep: str | None = None) -> list[Entry]:
    """Delete least-recently-used entries until the total is at most ``max_bytes``; return those deleted.

    The entry ``keep`` (the one just written) is never deleted.
    """
    directory = Path(directory) if directory is not None else kv_dir()
    limit = max_bytes if max_bytes is not None else max_bytes_from_env()
    if not directory.is_dir():
        return []
    _remove_stale_temps(directory, older_than=STALE_TEMP_SECONDS)
    entries = list_entries(directory, with_sources=False)
    total = sum(e.size for e in entries)
    removed = []
    for entry in reversed(entries):  # oldest first
        if total <= limit:
            break
        if entry.key == keep:
            continue
        try:
            entry.path.unlink()
        except OSError:
            continue
        total -= entry.size
        removed.append(entry)
    return removed


def clear(directory: Path | None = None) -> list[Entry]:
    """Delete every entry (and leftover temporary files); return the entries deleted."""
    directory = Path(directory) if directory is not None else kv_dir()
    if not directory.is_dir():
        return []
    entries = list_entries(directory, with_sources=False)
    for entry in entries:
        try:
            entry.path.unlink()
        except OSError:
            pass
    _remove_stale_temps(directory, older_than=0)
    return entries
