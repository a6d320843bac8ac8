"""What names a document cache entry: the document prefix of a prompt, the model's identity, and the key.

The key is a sha256 of everything that changes the prefix's keys and values: the document prefix's token ids,
the document text, the model's identity, dtype, device type, the SelfExtend plan (W, G), the prompt template
and the longlm version. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from .. import __version__
from ..paths import expand_user, file_sha256

FORMAT = "longlm-kv-3"  # 2: keys older than the window saved as SelfExtend re-rotated them; 3: signed (cachemac)
SENTINELS = ("\n\n#1 sentinel", "~ other")  # two different continuations after the document


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def document_prefix_length(ids: Sequence[int], build_ids) -> int:
    """How many leading ``ids`` belong to the document part of the prompt.

    ``build_ids(after)`` returns the prompt ids with ``after`` in place of everything that follows the document.
    The document part is what the prompt shares with two prompts ending in different sentinels, so tokens that
    merge across the document's end are left out. At least one token is always left to prefill.
    """
    length = len(ids)
    for sentinel in SENTINELS:
        length = min(length, common_prefix_length(ids, build_ids(sentinel)))
    return min(length, len(ids) - 1)


def model_identity(requested: str, model) -> dict:
    """What identifies the model's weights: the name asked for, where it was loaded from, and a fingerprint.

    For a local directory: its resolved path, the sha256 of config.json and the size and mtime of every file in
    it (so rewritten weights miss). For a hub id: the id and the commit (revision) it was loaded at.
    """
    config = model.config
    location = str(getattr(config, "_name_or_path", "") or getattr(config, "name_or_path", "") or requested)
    identity: dict[str, object] = {
        "requested": requested,
        "location": location,
        "class": type(model).__name__,
        "revision": str(getattr(config, "_commit_hash", None) or ""),
    }
    weights = getattr(model, "longlm_weights", "none")  # set on a quantized model (runtime/quantize.py)
    if weights != "none":
        identity["weights"] = weights
    kv_dtype = getattr(model, "longlm_kv_dtype", None)  # set when the KV cache is kept narrower (runtime/kvcache.py)
    if kv_dtype is not None and kv_dtype != getattr(model, "dtype", None):
        identity["kv_dtype"] = str(kv_dtype).removeprefix("torch.")
    path = expand_user(location)
    if path.is_dir():
        identity["location"] = str(path.resolve())
        if (path / "config.json").is_file():
            identity["config_sha256"] = file_sha256(path / "config.json")
        identity["files"] = sorted(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file()
        )
    else:
        identity["config_sha256"] = hashlib.sha256(config.to_json_string().encode()).hexdigest()
    return identity


def document_key(
    *,
    prefix_ids: Sequence[int],
    document: str,
    identity: dict,
    dtype: str,
    device_type: str,
    window: int,
    group_size: int,
    extended: bool,
    version: str = __version__,
) -> str:
    """The sha256 (hex) naming a document cache entry.

    The prompt's text after the document is not part of it: the entry holds the keys and values of the prefix
    ids alone, so `ask` (any question), `summarize` and `chat` over the same document share one entry when their
    templates agree up to the document (the shipped ones do) and they run with the same W and G.
    """
    parts = {
        "format": FORMAT,
        "version": version,
        "document_sha256": hashlib.sha256(document.encode("utf-8", "surrogatepass")).hexdigest(),
        "prefix_ids_sha256": hashlib.sha256(json.dumps(list(prefix_ids)).encode()).hexdigest(),
        "prefix_tokens": len(prefix_ids),
        "model": identity,
        "dtype": dtype,
        "device_type": device_type,
        "W": window,
        "G": group_size,
        "extended": extended,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
