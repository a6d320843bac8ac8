"""Keys re-rotated at an extension method's key positions, kept across the forward calls over one KV cache:
in a buffer of their own, or in place of the true keys in the KV cache's own buffer once the method never reads
those at their true positions again (SelfExtend beyond the window, Dual Chunk Attention before the query's
chunk). selfextend.py and dca.py each subclass RotatedKeyCache and say what a key's position is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeGuard

import torch

from ..errors import LongLMError


@dataclass
class RotatedKeyCache:
    """Keys re-rotated at a method's key positions, kept across forward calls that share one KV cache.

    Both methods place a key at a position that does not depend on the query (``j // G``, ``j % c``), so a key
    rotated once stays valid. Pass the same instance to every forward call that uses the same
    ``past_key_values``; decoding then rotates only the new keys instead of the whole cache. Without it the
    result is identical, only slower. Memory: one extra copy of the keys of each extended layer, unless the
    method re-rotates in place (``in_place``).

    In place: given the KV cache it goes with (``kv``), a method whose true keys are never read again once they
    are old enough (SelfExtend: older than the window) re-rotates them in the KV cache's own key buffer, so it
    needs no extra copy. The KV cache's first ``in_place_counts()[i]`` keys of layer i are then at the method's
    positions (a cropped cache's keys are turned back when they are read at their true positions again); a
    document-cache entry keeps them so, and ``adopt`` says it of a KV cache filled from one.
    """

    layers: dict = field(default_factory=dict)
    reserve: int = 0  # keys a layer's first buffer makes room for (the session's planned tokens; 0: grow)
    kv: Any = None  # the DynamicCache these keys go with (None: a buffer of their own, never in place)
    in_place_capable: ClassVar[bool] = False  # the method's old true keys are never read again

    @property
    def in_place(self) -> bool:
        return self.kv is not None and self.in_place_capable

    def clear(self) -> None:
        self.layers.clear()

    def in_place_counts(self) -> dict[int, int]:
        """Per layer, how many of its first keys the KV cache holds re-rotated in place (layers with none left out)."""
        return {i: e["n"] for i, e in self.layers.items() if e.get("in_place") and e["n"] and isinstance(i, int)}

    def adopt(self, counts: dict[int, int]) -> None:
        """The KV cache was filled with keys of which layer i's first ``counts[i]`` are already re-rotated, by
        this method with these settings (a document-cache entry of the same plan)."""
        for i, n in counts.items():
            self.layers[i] = {"signature": None, "in_place": True, "n": n, "shift": None}  # signature: the next call's


def rotated_keys(
    key: torch.Tensor,
    needed: int,
    first_new: int,
    cache: RotatedKeyCache | None,
    layer_idx,
    settings: tuple,
    rotated: Callable[[int, int], torch.Tensor],
) -> torch.Tensor:
    """Keys [0, needed) of ``key`` [B, Hkv, K, D] at the method's positions: [B, Hkv, needed, D].

    ``rotated(lo, hi)`` rotates keys [lo, hi). With a cache, keys rotated by an earlier call with the same
    ``settings`` are reused (only keys before ``first_new``, the first key this call appended, can be) and only
    the rest are rotated.
    """
    if needed <= 0:
        return key[:, :, :0]
    if cache is None:
        return rotated(0, needed)
    B, Hkv, _, D = key.shape
    signature = (*settings, B, Hkv, D, key.dtype, key.device)
    entry = cache.layers.get(layer_idx)
    if entry is not None and entry.get("in_place") and entry["n"]:
        # This layer's KV cache re-rotated some keys in its own buffer, and a copy of it came instead: rotating
        # those keys again would silently give wrong scores.
        raise LongLMError("re-rotated keys of the KV cache reached the attention as a copy; start a new session")
    if entry is None or entry.get("in_place") or entry["signature"] != signature:
        entry = cache.layers[layer_idx] = {"signature": signature, "buffer": key.new_empty(B, Hkv, 0, D), "n": 0}
    n = min(entry["n"], first_new)
    if n < needed:
        buffer = entry["buffer"]
        if buffer.shape[2] < needed:  # grow geometrically so decoding appends in amortised O(1)
            room = cache.reserve if needed <= cache.reserve else max(needed, 2 * buffer.shape[2])
            grown = key.new_empty(B, Hkv, room, D)
            grown[:, :, :n] = buffer[:, :, :n]
            buffer = entry["buffer"] = grown
        buffer[:, :, n:needed] = rotated(n, needed)
        n = needed
    entry["n"] = n
    return entry["buffer"][:, :, :needed]


def _holds(cache: RotatedKeyCache | None, layer_idx, key: torch.Tensor) -> TypeGuard[RotatedKeyCache]:
    """Whether ``key`` [B, Hkv, K, D] is the key buffer of its layer in ``cache.kv`` (not a copy, nor another
    cache's), so re-rotating it in place changes what that KV cache holds."""
    # Any: the KV cache's layer list, or None; ``known`` below says which.
    layers: Any = getattr(cache.kv, "layers", None) if cache is not None and cache.in_place else None
    known = layers is not None and isinstance(layer_idx, int) and layer_idx < len(layers)
    own = getattr(layers[layer_idx], "keys", None) if known else None
    return own is not None and (own.data_ptr(), own.shape, own.stride()) == (key.data_ptr(), key.shape, key.stride())


def _in_place(key, first_new: int, true_from: int, entries: dict, layer_idx, signature: tuple, shift):
    """``upto(hi)`` re-rotating ``key``, its KV cache's own buffer, in place (see keys_at_method_positions). At
    once, keys from ``true_from`` on (the oldest this call reads at true positions) that an earlier call
    re-rotated are turned back: the cache was cropped, or the settings changed (then all are). Turned back, a
    key is its true key to float32 rounding; in a 16-bit dtype it is rounded once more."""
    entry: Any = entries.get(layer_idx)  # Any: when n is not 0 below, entry is a dict
    n = min(entry["n"], first_new) if entry is not None and entry.get("in_place") else 0  # keys from first_new: new
    if n and entry["signature"] is None:  # adopted: re-rotated with the settings this call runs
        entry["signature"], entry["shift"] = signature, shift
    if n and entry["signature"] != signature:
        key[:, :, :n] = entry["shift"](key, 0, n, -1)
        n = 0
    elif n > true_from:  # cropped: keys read at their true positions again
        key[:, :, true_from:n] = entry["shift"](key, true_from, n, -1)
        n = true_from
    entry = entries[layer_idx] = {"signature": signature, "in_place": True, "n": n, "shift": shift}

    def upto(hi: int) -> torch.Tensor:
        if entry["n"] < hi:
            key[:, :, entry["n"] : hi] = shift(key, entry["n"], hi, 1)
            entry["n"] = hi
        return key[:, :, : max(0, hi)]

    return upto


def keys_at_method_positions(
    key: torch.Tensor,
    needed: int,
    first_new: int,
    true_from: int,
    cache: RotatedKeyCache | None,
    layer_idx,
    settings: tuple,
    shift: Callable[[torch.Tensor, int, int, int], torch.Tensor],
    *,
    in_place: bool,
) -> Callable[[int], torch.Tensor]:
    """``upto(hi)``: keys [0, hi) (hi <= ``needed``) of ``key`` [B, Hkv, K, D] at the method's positions, to call
    once this call no longer reads them at their true positions.

    ``shift(x, lo, hi, sign)`` rotates keys [lo, hi) of ``x`` to the method's positions (sign 1) or back to their
    true positions (-1). Where ``in_place`` allows it and ``key`` is its KV cache's own buffer, the keys are
    re-rotated there (keys from ``true_from`` on, the oldest this call reads at true positions, are first turned
    back if an earlier call re-rotated them); else they are kept apart (``rotated_keys``, all ``needed`` at the
    first call)."""
    if in_place and _holds(cache, layer_idx, key):
        B, Hkv, _, D = key.shape
        signature = (*settings, B, Hkv, D, key.dtype, key.device)
        return _in_place(key, first_new, true_from, cache.layers, layer_idx, signature, shift)
    apart: list[torch.Tensor] = []

    def kept(hi: int) -> torch.Tensor:
        if not apart:
            rotate = lambda lo, hi: shift(key, lo, hi, 1)  # noqa: E731
            apart.append(rotated_keys(key, needed, first_new, cache, layer_idx, settings, rotate))
        return apart[0][:, :, : max(0, hi)]

    return kept


def held_in_place(key: torch.Tensor, cache: RotatedKeyCache | None, layer_idx, settings: tuple):
    """(n, old): the KV cache behind ``key`` holds its first n keys re-rotated in place, as a call finds it before
    its own re-rotation; ``old`` is the shift that rotated them when that was with other settings than
    ``settings`` (else None)."""
    if cache is None or not cache.in_place or not _holds(cache, layer_idx, key):
        return 0, None
    entry = cache.layers.get(layer_idx)
    if entry is None or not entry.get("in_place"):
        return 0, None
    B, Hkv, _, D = key.shape
    signature = (*settings, B, Hkv, D, key.dtype, key.device)
    other = entry["signature"] is not None and entry["signature"] != signature
    return entry["n"], entry["shift"] if other else None


def keys_for_scores(key: torch.Tensor, cache: RotatedKeyCache | None, layer_idx, settings: tuple, shift):
    """(true, method): float32 copies of ``key`` [B, Hkv, K, D] at the keys' true positions and at the method's,
    whatever the KV cache holds in place, for explicit scores (engine/evidence.py) read before the call's own
    attention. Keys held at the method's positions are taken as they are, so the scores are the ones the
    attention computes from them."""
    n, old = held_in_place(key, cache, layer_idx, settings)
    k = key.float()
    true = k.clone() if n else k
    if n:
        true[:, :, :n] = (old or shift)(k, 0, n, -1)
    K = k.shape[2]
    method = torch.empty_like(k)
    kept = 0 if old is not None else n
    method[:, :, :kept] = k[:, :, :kept]
    if kept < K:
        method[:, :, kept:] = shift(true, kept, K, 1)
    return true, method
