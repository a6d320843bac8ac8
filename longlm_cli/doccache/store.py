"""The document cache store: prefilled documents' keys and values on disk; saving, checking, listing, pruning.

The prompt puts the document first and the question after it, so the tokens up to the end of the document
are the same for every question. After they are prefilled once, their keys and values are saved under
``cache_dir()/"kv"``; a later `ask`, `summarize` or `chat` with the same key loads them and prefills only the rest
(pipeline.py decides when; this module only stores, checks, lists and evicts).

Entries are named by cachekeys.document_key. They are safetensors files (tensors and string metadata only,
never pickle) written under a temporary name and renamed into place, so a reader never sees a half-written
file. Entries are untrusted input: on load the header is checked against the model (layers, key/value heads,
head sizes) and the tokens before any tensor is read, then the sha256 of the tensors kept in the metadata, the
dtype and finite values. A bad entry, or anything but a regular file at its name, is reported once on stderr,
deleted and rebuilt (the checks themselves: check.py). Keys that SelfExtend re-rotated in place (see
engine/keycache.py's RotatedKeyCache) are saved as the cache holds them, with their count per layer.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..defaults import (
    DEFAULT_DOC_CACHE_MAX_BYTES,
    DEFAULT_DOC_CACHE_MIN_TOKENS,
    DOC_CACHE_MAX_BYTES_ENV,
    DOC_CACHE_MIN_TOKENS_ENV,
)
from ..environment import bytes_from_env, count_from_env
from ..errors import CacheError
from ..paths import cache_dir, holding_directory_lock, own_directory
from ..report import warn
from ..runtime import entryfile
from .check import (
    MAX_HEADER_BYTES,
    CorruptEntry,
    check_header,
    check_tensors,
    expected_tensors,
    read_header,
    rotated_counts,
    tensor_digest,
)
from .keys import FORMAT
from .mac import cache_secret, is_signed, signed

SUFFIX = ".safetensors"
TEMP_PREFIX = ".tmp-"
# The only names the cache reads, replaces or deletes: an entry (its 64-hex key) and save_entry's temporary files.
ENTRY_NAME = re.compile(r"[0-9a-f]{64}" + re.escape(SUFFIX))
TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"[0-9a-f]{16}-[a-z0-9_]+" + re.escape(SUFFIX))
STALE_TEMP_SECONDS = 3600  # temporary files older than this are leftovers of interrupted runs
_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symbolic link", stat.S_IFIFO: "a fifo"}


@dataclass(frozen=True)
class DocCacheSettings:
    """Whether to use the document cache, where it lives and how large it may grow."""

    enabled: bool = True
    directory: Path | None = None  # None: cache_dir() / "kv"
    max_bytes: int | None = None  # None: $LONGLM_CACHE_MAX_BYTES, else DEFAULT_DOC_CACHE_MAX_BYTES
    min_tokens: int | None = None  # None: $LONGLM_CACHE_MIN_TOKENS, else DEFAULT_DOC_CACHE_MIN_TOKENS

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> DocCacheSettings:
        """From the parsed --no-cache."""
        return cls(enabled=not options["no_cache"])

    def resolved_directory(self) -> Path:
        return Path(self.directory) if self.directory is not None else kv_dir()

    def resolved_max_bytes(self) -> int:
        return self.max_bytes if self.max_bytes is not None else max_bytes_from_env()

    def resolved_min_tokens(self) -> int:
        if self.min_tokens is not None:
            return self.min_tokens
        return count_from_env(
            DOC_CACHE_MIN_TOKENS_ENV, DEFAULT_DOC_CACHE_MIN_TOKENS, minimum=0, error=CacheError, unit="token"
        )


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
    return bytes_from_env(DOC_CACHE_MAX_BYTES_ENV, DEFAULT_DOC_CACHE_MAX_BYTES, minimum=0, error=CacheError)


# ---------------------------------------------------------------------------------------------------------
# Saving and loading


def entry_size(cache, tokens: int) -> int:
    """Bytes the entry of ``cache`` (holding ``tokens`` tokens) will take on disk, its small header aside."""
    kv = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    return kv + 8 * tokens  # the int64 token ids


def entry_path(directory: Path, key: str) -> Path:
    return directory / f"{key}{SUFFIX}"


def _is_directory(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def save_entry(
    directory: Path,
    key: str,
    cache,
    prefix_ids: Sequence[int],
    sources: Sequence[str],
    rotated: Mapping[int, int] | None = None,
) -> Path | None:
    """Write the keys and values of ``cache`` (holding exactly ``prefix_ids``) as the entry ``key``.
    ``rotated``: per layer, how many of its first keys the session holds re-rotated in place
    (``Session.rotated_in_place``); they are written as they are, and the count with them.

    Returns the entry's path, or None when a directory holds the entry's name: nothing can replace it, and
    load_entry has already said so.
    """
    import torch

    if _is_directory(entry_path(own_directory(directory), key)):
        return None
    tensors = {"ids": torch.tensor(list(prefix_ids), dtype=torch.int64)}
    for i, layer in enumerate(cache.layers):  # views of the cache's buffers: copied one at a time when written
        tensors[f"k.{i}"], tensors[f"v.{i}"] = layer.keys, layer.values
    metadata = {
        "format": FORMAT,
        "key": key,
        "tokens": str(len(prefix_ids)),
        "layers": str(len(cache.layers)),
        "sources": json.dumps(list(sources)),
        "rotated_keys": json.dumps({str(i): min(n, len(prefix_ids)) for i, n in sorted((rotated or {}).items())}),
        "tensor_sha256": tensor_digest(tensors),
        "created": f"{time.time():.3f}",
    }
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: see cachemac
    metadata = signed(metadata, cache_secret(directory))
    fd, temp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{key[:16]}-", suffix=SUFFIX, dir=directory)
    os.close(fd)
    try:
        entryfile.write(temp, tensors, metadata)
        os.replace(temp, entry_path(directory, key))
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    return entry_path(directory, key)


@contextmanager
def _checked_entry(path: Path, key: str, prefix_ids: Sequence[int], config, dtype):
    """The entry's tensors (an entryfile.Reader: each read when indexed) and its counts of keys re-rotated in
    place, once it is checked against the model of ``config``. Raises CorruptEntry."""
    with ExitStack() as stack:
        try:
            tensors = stack.enter_context(entryfile.open_tensors(path, MAX_HEADER_BYTES))
        except entryfile.HeaderTooLarge:
            raise CorruptEntry("its header is too large") from None
        except Exception as exc:  # OSError, a header that is not JSON or not safetensors'...
            raise CorruptEntry(f"unreadable ({type(exc).__name__})") from None
        expected = expected_tensors(config, len(prefix_ids))
        check_header(tensors.metadata, tensors.shapes, key, len(prefix_ids), expected)  # sizes are now bounded
        if not is_signed(tensors.metadata, cache_secret(path.parent)):
            raise CorruptEntry("it is not signed with this cache's secret")
        counts = rotated_counts(tensors.metadata, len(expected) // 2, len(prefix_ids))
        try:
            check_tensors(tensors, tensors.metadata, prefix_ids, dtype)
        except CorruptEntry:
            raise
        except Exception as exc:  # OSError, a file that ends inside a tensor...
            raise CorruptEntry(f"unreadable ({type(exc).__name__})") from None
        yield tensors, counts


def _discard_non_file(path: Path, key: str, mode: int) -> None:
    """Remove what holds an entry's name but is no regular file (a symlink is never followed), and say so once."""
    kind = _KINDS.get(stat.S_IFMT(mode), "a socket or device")
    if not _removed(path):  # a directory goes only when empty
        warn(f"cached document {key[:12]} is {kind}, not a file, and cannot be removed; not caching it")
    else:
        warn(f"cached document {key[:12]} was corrupt (it was {kind}, not a file); rebuilding")


def load_entry(
    directory: Path,
    key: str,
    prefix_ids: Sequence[int],
    cache,
    *,
    config,
    dtype,
    device,
    adopt: Callable[[dict[int, int]], None] | None = None,
) -> bool:
    """Fill the empty DynamicCache ``cache`` from entry ``key``; True on success, False when there is none.

    The entry is untrusted: it is checked against the model of ``config`` (layers, heads, head sizes), the tokens,
    ``dtype`` and finite values before the cache is touched. A bad entry is reported once on stderr and deleted;
    False is returned so it is rebuilt. ``adopt(counts)``: told which keys the entry holds re-rotated in place
    (``Session.adopt_rotated``); an entry holding some is refused without it (its keys would be read wrong).
    """
    path = entry_path(directory, key)
    try:
        mode = os.lstat(path).st_mode
    except OSError:  # absent, or the directory is unusable (saving will say so)
        return False
    if not stat.S_ISREG(mode):
        _discard_non_file(path, key, mode)
        return False
    try:
        with _checked_entry(path, key, prefix_ids, config, dtype) as (tensors, counts):
            if counts and adopt is None:
                raise CorruptEntry("it holds keys re-rotated in place, which this session does not keep")
            keys = values = None  # one scratch tensor each, read into layer after layer (see entryfile.Reader)
            for i in range(len(tensors) // 2):  # exactly "ids" and k.i, v.i per layer, as checked
                keys, values = tensors.read(f"k.{i}", keys), tensors.read(f"v.{i}", values)
                cache.update(keys.to(device), values.to(device), i)  # copied into the cache's own buffers...
                if (
                    cache.layers[i].keys.data_ptr() == keys.data_ptr()
                    or cache.layers[i].values.data_ptr() == values.data_ptr()
                ):
                    keys = values = None  # ...unless the cache kept the tensors themselves: new ones next time
    except CorruptEntry as exc:
        warn(f"cached document {key[:12]} was corrupt ({exc}); rebuilding")
        _removed(path)
        return False
    if counts:
        assert adopt is not None  # an entry with keys re-rotated in place was refused above without adopt
        adopt(counts)
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


def _json_strings(raw) -> tuple[str, ...]:
    """A JSON list of strings as a tuple; () for anything else."""
    try:
        value = json.loads(raw)
    except Exception:  # not text, not JSON, nested too deep...
        return ()
    return tuple(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else ()


def _metadata_of(path: Path) -> tuple[tuple[str, ...], int | None]:
    """An entry's sources and token count from its header alone; ((), None) for what save_entry never writes."""
    try:
        metadata, _ = read_header(path)  # only the header: `longlm cache list` stays free of torch
    except CorruptEntry:
        return (), None
    tokens = metadata.get("tokens", "")  # not int()'s " 1_0 ", "١٢" or 5000 digits (a ValueError)
    count = int(tokens) if tokens.isascii() and tokens.isdigit() and len(tokens) < 19 else None
    return _json_strings(metadata.get("sources")), count


def list_entries(directory: Path | None = None, *, with_sources: bool = True) -> list[Entry]:
    """Entries (regular files only: a directory, symlink or fifo is never an entry), most recently used first."""
    directory = own_directory(Path(directory) if directory is not None else kv_dir())
    if not directory.is_dir():
        return []
    entries = []
    for path in directory.glob(f"*{SUFFIX}"):
        if not ENTRY_NAME.fullmatch(path.name):  # not a name longlm writes: not its own
            continue
        try:
            info = path.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        sources, tokens = _metadata_of(path) if with_sources else ((), None)
        key = path.name[: -len(SUFFIX)]
        entries.append(Entry(key, path, size=info.st_size, last_used=info.st_mtime, sources=sources, tokens=tokens))
    entries.sort(key=lambda e: e.last_used, reverse=True)
    return entries


def unfinished_saves(directory: Path | None = None) -> list[tuple[Path, int]]:
    """(path, size) of the temporary files of saves that have not finished (interrupted, or running now)."""
    directory = own_directory(Path(directory) if directory is not None else kv_dir())
    found = []
    for path in directory.glob(f"{TEMP_PREFIX}*") if directory.is_dir() else ():
        try:
            info = path.lstat()
        except OSError:
            continue
        if TEMP_NAME.fullmatch(path.name) and stat.S_ISREG(info.st_mode):
            found.append((path, info.st_size))
    return found


def _remove_stale_temps(directory: Path, *, older_than: float) -> None:
    now = time.time()
    for path in directory.glob(f"{TEMP_PREFIX}*"):
        if not TEMP_NAME.fullmatch(path.name):
            continue
        try:
            if now - path.stat().st_mtime >= older_than:
                path.unlink()
        except OSError:
            pass


@holding_directory_lock(kv_dir)  # two processes pruning at once would each delete what the other counted
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
        if entry.key == keep or not _removed(entry.path):
            continue
        total -= entry.size
        removed.append(entry)
    return removed


def _removed(path: Path) -> bool:
    """Remove a file, a symlink (never what it points to) or an empty directory; whether it is gone."""
    try:
        path.rmdir() if _is_directory(path) else path.unlink()
    except OSError:
        return False
    return True


@holding_directory_lock(kv_dir)
def clear(directory: Path | None = None) -> list[Entry]:
    """Delete every entry and leftover temporary file; return the entries actually deleted.

    Whatever else holds an entry's name goes too if it can (a symlink, a fifo, an empty directory); it is no entry.
    """
    directory = Path(directory) if directory is not None else kv_dir()
    if not directory.is_dir():
        return []
    removed = [entry for entry in list_entries(directory, with_sources=False) if _removed(entry.path)]
    for path in directory.glob(f"*{SUFFIX}"):  # what is left: non-files, and files that could not be removed
        if ENTRY_NAME.fullmatch(path.name):
            _removed(path)
    _remove_stale_temps(directory, older_than=0)
    return removed
