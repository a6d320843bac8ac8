"""A KV cache whose layers grow in place: appending a token writes into a buffer grown geometrically.

transformers' DynamicLayer concatenates the whole cache with every new token (``torch.cat`` per layer per step:
an O(L) copy, about 0.75 GB per token at 16k tokens on the embedded model in float32). ``GrowingLayer`` keeps
keys and values in a buffer with spare room, doubled when full, and hands out views of the filled part, so a
decoding step copies only its own token. Given the tokens a session will hold (``reserve``: the plan's prompt
plus answer), the first buffer has that room at once and is never regrown within it (no copies, no smaller
buffers allocated and freed on the way). Each head's rows stay contiguous in the view, which the attention
kernels read without a copy. Everything else (cropping, lengths, masks) behaves as DynamicLayer.

Storage type: the buffers may hold keys and values in a narrower type than the model computes in (bfloat16 for
a float32 model on the CPU: half the bytes a decoding step reads and half the memory; ``choose_kv_dtype``).
Appends round into it; the attention (engine/blocks.py, engine/plain.py) reads the narrower type as it is. Which
type a model's sessions use is kept beside the model (``set_kv_dtype``) by whoever loaded it.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ..models.architecture import cached_head_shape

MIN_CAPACITY = 256  # tokens: the first buffer's room, so short prompts do not regrow at once


class GrowingLayer(DynamicLayer):
    """A DynamicLayer with in-place appends (amortised O(1) per token); ``keys``/``values`` are views."""

    _k: Any  # [B, Hkv, room, D] buffers (None before the first token)
    _v: Any

    def __init__(self, reserve: int = 0, dtype: torch.dtype | None = None, **kwargs):
        super().__init__(**kwargs)
        self.reserve = reserve  # tokens the first buffer makes room for (0: grow from MIN_CAPACITY)
        self.storage = dtype  # what keys and values are kept in (None: the type they arrive in)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._k = self._v = None
        self._n = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, new = self._n, key_states.shape[-2]
        if self._k is None or self._k.shape[-2] < n + new:
            self._grow(key_states, value_states, n + new)
        self._k[..., n : n + new, :] = key_states
        self._v[..., n : n + new, :] = value_states
        self._set_length(n + new)
        return self.keys, self.values

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, needed: int) -> None:
        old = 0 if self._k is None else self._k.shape[-2]
        room = self.reserve if needed <= self.reserve else max(needed, 2 * old, MIN_CAPACITY)
        dtype = self.storage or key_states.dtype
        k = key_states.new_empty(*key_states.shape[:-2], room, key_states.shape[-1], dtype=dtype)
        v = value_states.new_empty(*value_states.shape[:-2], room, value_states.shape[-1], dtype=dtype)
        if self._n:
            k[..., : self._n, :] = self._k[..., : self._n, :]
            v[..., : self._n, :] = self._v[..., : self._n, :]
        self._k, self._v = k, v

    def _set_length(self, n: int) -> None:
        self._n = n
        self.keys = self._k[..., :n, :]
        self.values = self._v[..., :n, :]

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of tokens to remove, got {tokens_to_remove}")
        if tokens_to_remove == 0 or not self.is_initialized:
            return
        self._set_length(max(0, self._n - abs(tokens_to_remove)))

    def reset(self) -> None:
        super().reset()
        self._k = self._v = None
        self._n = 0


def growing_cache(config, reserve: int = 0, dtype: torch.dtype | None = None) -> DynamicCache:
    """A DynamicCache for a model with ``config`` whose full-attention layers are GrowingLayers with room for
    ``reserve`` tokens, keeping keys and values in ``dtype`` (None: as they come); sliding-window and other
    special layers stay as transformers builds them, in the model's type."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer(reserve, dtype) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def room(cache: DynamicCache) -> int:
    """The most tokens any layer's buffer of ``cache`` has room for now (0 before the first token)."""
    return max((k.shape[-2] for layer in cache.layers if (k := getattr(layer, "_k", None)) is not None), default=0)


# ---------------------------------------------------------------------------------------------------------
# Which type a model's KV cache is kept in

KV_NARROW = torch.bfloat16  # float16 measured 2-4x slower in torch's CPU attention kernel (benchmarks/kvstore.py)
KV_DTYPE_ATTR = "longlm_kv_dtype"  # set on a model whose sessions keep their cache in another type than its own


def choose_kv_dtype(requested: str, device: str, dtype: torch.dtype) -> torch.dtype:
    """The KV cache's storage type for ``--kv-dtype requested`` with a model computing in ``dtype`` on
    ``device``: auto is bfloat16 on the CPU (float32 computing reads a 16-bit cache: half the bytes), the
    model's type elsewhere. A type other than the model's is taken only for a float32 model on the CPU."""
    if requested == "auto":
        return KV_NARROW if device == "cpu" else dtype
    wanted = getattr(torch, requested)
    if wanted != dtype and not (device == "cpu" and dtype == torch.float32 and wanted == KV_NARROW):
        also = " (or a float32 one on the CPU)" if wanted == KV_NARROW else ""
        raise ValueError(
            f"--kv-dtype {requested} needs a {requested} model{also}; this one computes in "
            f"{str(dtype).removeprefix('torch.')} on {device}: use --kv-dtype auto"
        )
    return wanted


def reads_narrow_cache(model) -> bool:
    """Whether ``model``'s current attention reads keys and values narrower than its queries: the engine's
    (the extension methods and engine/plain.py's plain CPU attention) do; transformers' own do not."""
    return str(model.config._attn_implementation).startswith("longlm_")


def set_kv_dtype(model, dtype: torch.dtype) -> None:
    """Keep ``model``'s KV caches in ``dtype`` from now on (Session.start reads it; a document-cache key too)."""
    setattr(model, KV_DTYPE_ATTR, dtype)


def kv_dtype_of(model) -> torch.dtype:
    """The storage type ``model``'s KV caches use: as set by ``set_kv_dtype``, else the model's own."""
    return getattr(model, KV_DTYPE_ATTR, None) or model.dtype


def reserved_bytes(config, cache: DynamicCache, reserve: int, dtype: torch.dtype, rotated_keys: bool) -> int | None:
    """Bytes the buffers of ``cache``'s GrowingLayers take once they hold ``reserve`` tokens in ``dtype``: keys
    and values, and with ``rotated_keys`` one more copy of the keys (the extension method's re-rotated keys).
    None when the config does not say the head shapes."""
    try:
        kv_heads, key_dim, value_dim = cached_head_shape(config)
    except (AttributeError, TypeError):  # no head counts or sizes in the config
        return None
    per_token = kv_heads * (key_dim * (2 if rotated_keys else 1) + value_dim) * dtype.itemsize
    return sum(isinstance(layer, GrowingLayer) for layer in cache.layers) * per_token * reserve


def cache_unsupported_reason(cache) -> str | None:
    """Why a cache's keys and values cannot be saved and restored as they are (sliding-window or other special
    layers keep only part of the sequence), or None."""
    for layer in cache.layers:
        if type(layer) not in (DynamicLayer, GrowingLayer):
            return f"the model has {type(layer).__name__} cache layers (sliding-window attention); not cached"
    return None
