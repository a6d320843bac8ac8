"""The attention heads measured best at retrieval for each model, kept in the cache directory (``heads.json``).

evaluation/heads.py measures them (once per model, at the first `ask --evidence`); evidence reads them here.
An entry: the length and samples it was measured with, and the heads as [layer, head] pairs, best first. A
damaged file or entry is one warning and counts as none (the heads are measured again). The embedded model's
heads ship with longlm (EMBEDDED_HEADS): its first `--evidence` measures nothing. Torch-free.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import CacheError
from ..paths import NO_STATE_FILE, cache_dir, ensure_cache_dir, file_lock, read_own_file
from ..report import warn

HEADS_FILE = "heads.json"
MAX_FILE_BYTES = 4 * 1024**2
MAX_KEPT = 64  # heads kept per model, best first


@dataclass(frozen=True)
class StoredHeads:
    model: str  # the model key (tuned.model_key)
    length: int
    samples: int
    heads: tuple[tuple[int, int], ...]  # (layer, head), best first


# The embedded SmolLM2-135M-Instruct's 32 best retrieval heads, best first, as `python benchmarks/evidence.py heads
# --length 4096 --samples 8` measured them (benchmarks/results/evidence/heads-default.json; docs/evidence.md). The
# docs' evidence figures use them, and a first `--evidence` on the embedded model skips its own measurement (8 texts
# of 2,048 tokens, which picked the same best 8 when checked on machine A).
EMBEDDED_HEADS = StoredHeads(
    model="embedded",
    length=4096,
    samples=8,
    heads=(
        (18, 7), (7, 7), (21, 8), (17, 3), (23, 2), (18, 6), (23, 7), (15, 6),
        (14, 3), (22, 4), (20, 3), (18, 8), (17, 4), (22, 7), (20, 6), (23, 8),
        (23, 1), (20, 5), (21, 1), (21, 5), (17, 0), (14, 1), (26, 1), (8, 0),
        (22, 2), (24, 2), (21, 2), (23, 4), (24, 1), (29, 8), (2, 4), (22, 5),
    ),
)  # fmt: skip


def heads_path() -> Path:
    return cache_dir() / HEADS_FILE


def _warn(path: Path, why: str) -> None:
    warn(f"ignoring the measured attention heads in {path}: {why}")


def _read(path: Path) -> dict:
    try:
        raw = read_own_file(path, MAX_FILE_BYTES)
    except OSError as exc:
        if exc.errno not in NO_STATE_FILE:
            _warn(path, exc.strerror or str(exc))
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        _warn(path, "it is not JSON")
        return {}
    if not isinstance(data, dict):
        _warn(path, "it is not a JSON object")
        return {}
    return data


def find_heads(model: str, layers: int, heads_per_layer: int) -> StoredHeads | None:
    """The heads measured for ``model`` (a model key) that fit a model of ``layers`` x ``heads_per_layer``."""
    path = heads_path()
    raw = _read(path).get(model)
    if raw is None:
        return None
    entry = _entry(raw, layers, heads_per_layer)
    if entry is None:
        _warn(path, "its entry for this model is not one longlm wrote")
    return entry


def _entry(raw, layers: int, heads_per_layer: int) -> StoredHeads | None:
    try:
        entry = StoredHeads(
            model=str(raw["model"]),
            length=int(raw["length"]),
            samples=int(raw["samples"]),
            heads=tuple((int(layer), int(head)) for layer, head in raw["heads"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    fits = all(0 <= layer < layers and 0 <= head < heads_per_layer for layer, head in entry.heads)
    return entry if entry.heads and fits else None


def save_heads(entry: StoredHeads) -> Path:
    """Keep ``entry`` (replacing the model's earlier one); returns the file."""
    path = heads_path()
    ensure_cache_dir(path.parent)
    entry = StoredHeads(entry.model, entry.length, entry.samples, tuple(entry.heads[:MAX_KEPT]))
    with file_lock(path.with_suffix(".lock")):
        data = _read(path)
        data[entry.model] = asdict(entry)
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".heads-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out)
            os.replace(tmp, path)
        except OSError as exc:
            raise CacheError(f"cannot save the measured attention heads in {path}: {exc.strerror or exc}") from None
    return path
