"""The server's prompts kept across restarts, in the document cache (doccache/store.py, `longlm cache`).

After a request that prefilled at least MIN_NEW_TOKENS new tokens, the keys and values of its prompt are saved
as an entry, under a key made of the model, the attention the cache was made with and the prompt's ids. A request
that finds less than that reusable in memory looks among the SEARCHED most recently used entries for the one
whose prompt shares the longest prefix with its own, loads it (checked and authenticated as every entry is) and
cuts it back to that prefix. So a second question on a long document is cheap after a restart too, however the
client puts the document and the question into its messages.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from types import SimpleNamespace

from ..answering.pipeline import save_within_limit, unusable_directory
from ..doccache.check import MAX_HEADER_BYTES
from ..doccache.keys import FORMAT, common_prefix_length, model_identity
from ..doccache.store import DocCacheSettings, list_entries, load_entry
from ..runtime import entryfile

MIN_NEW_TOKENS = 1024  # a prompt is saved when its request prefilled at least this many tokens
SEARCHED = 16  # the most recently used entries looked through for a shared prefix


class PromptStore:
    def __init__(self, loaded, requested: str, settings: DocCacheSettings = DocCacheSettings()):
        self.loaded = loaded
        self.settings = settings
        self.identity = model_identity(requested, loaded.model)
        self.usable = settings.enabled and unusable_directory(settings.resolved_directory()) is None

    def key(self, state: tuple, ids: Sequence[int]) -> str:
        parts = {
            "format": FORMAT,
            "kind": "serve prompt",
            "model": self.identity,
            "attention": list(state),
            "device": str(self.loaded.device),
            "ids_sha256": hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest(),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def longest(self, state: tuple, ids: Sequence[int], at_least: int) -> tuple[int, list[int], str] | None:
        """(tokens shared, the entry's ids, its key) of the saved prompt sharing the longest prefix with ``ids``,
        more than ``at_least`` tokens; None when there is none."""
        if not self.usable:
            return None
        best = None
        for entry in list_entries(self.settings.resolved_directory(), with_sources=False)[:SEARCHED]:
            stored = _stored_ids(entry.path)
            shared = min(common_prefix_length(stored, ids), len(ids) - 1)
            if shared > (best[0] if best else at_least) and self.key(state, stored) == entry.key:
                best = (shared, stored, entry.key)
        return best

    def load(self, session, found: tuple[int, list[int], str]) -> bool:
        """Fill the empty ``session`` with the entry ``found`` (longest), cut back to the shared prefix."""
        shared, stored, key = found
        adopt = session.adopt_rotated if session.rotates_in_place else None
        directory, model = self.settings.resolved_directory(), self.loaded.model
        done = load_entry(
            directory,
            key,
            stored,
            session.cache,
            config=model.config,
            dtype=session.kv_dtype,
            device=self.loaded.device,
            adopt=adopt,
        )
        if done and shared < session.length:
            session.cache.crop(shared - session.length)
        return done

    def save(self, session, state: tuple, ids: Sequence[int]) -> None:
        """Save the first len(ids) tokens the session holds (its prompt) as an entry; a failure is one warning."""
        n = len(ids)
        if not self.usable or session.length < n:
            return
        layers = [
            SimpleNamespace(keys=layer.keys[..., :n, :], values=layer.values[..., :n, :])
            for layer in session.cache.layers
        ]
        view = SimpleNamespace(cache=SimpleNamespace(layers=layers), rotated_in_place=session.rotated_in_place)
        directory, limit = self.settings.resolved_directory(), self.settings.resolved_max_bytes()
        save_within_limit(directory, self.key(state, ids), view, list(ids), ("served prompt",), limit)


def _stored_ids(path) -> list[int]:
    try:
        with entryfile.open_tensors(path, max_header=MAX_HEADER_BYTES) as tensors:
            return tensors.read("ids").tolist()
    except (OSError, ValueError, KeyError):
        return []
