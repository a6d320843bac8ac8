"""Dual Chunk Attention (An et al., "Training-Free Long-Context Scaling of Large Language Models", ICML 2024,
arXiv 2402.17463) for Hugging Face causal LMs, as a second extension method beside SelfExtend.

Positions follow the official code (HKUNLP/ChunkLlama, ``chunkllama_attn_replace.py``): with ``chunk_size`` S
and ``local_window`` w, the sequence is cut into chunks of c = S - w tokens (chunk n holds positions
[n*c, (n+1)*c)). A key at position j is rotated at ``j % c`` whatever the query, so rotated keys can be cached.
For a query at position i and a key j <= i:
  * same chunk (intra-chunk): q at ``i % c``, so the distance is the true i - j;
  * previous chunk (successive-chunk): q at ``min(i % c + c, S)``: the true distance while i % c <= w, capped;
  * older chunks (inter-chunk): q at the fixed ``min(2c - 1, S)``, S for any w <= (S - 1) / 2.
All three kinds of score go into one softmax per row. (The paper writes the cap as c - 1 with its c the
pretraining length; the code caps at its ``chunk_size``, which is what this module does.) The official
defaults are S = 3L/4 and w = L/8 for a pretraining window L (``DcaConfig.for_window``).

Like selfextend.py, it plugs into transformers through ``AttentionInterface`` / ``AttentionMaskInterface`` and
``model.set_attn_implementation``. Queries and keys arrive rotated at their true positions and are re-rotated
by the position difference (rope.py); the scores are exact blocks merged by log-sum-exp (blocks.py). Same-chunk
scores depend only on i - j, so they use the true rotations unchanged. Sliding-window layers stay plain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface

from ..catalogue import COMPOSABLE_ROPE_TYPES, SUPPORTED_MODEL_TYPES
from ..defaults import DEFAULT_QUERY_CHUNK
from ..errors import LongLMError, UnsupportedModelError
from .blocks import Accumulator, _attend, neighbour_blocks
from .rope import LayerRope, rotate
from .selfextend import _LAYER_ATTR as _SELFEXTEND_LAYER_ATTR
from .selfextend import (
    _ORIGINAL_ATTR,
    _architecture,
    _attention_modules,
    _layer_rope,
    _rope_type,
    _rotary_modules,
    _text_config,
)

ATTN_NAME = "longlm_dca"
_LAYER_ATTR = "_longlm_dca"


@dataclass(frozen=True)
class DcaConfig:
    """Dual Chunk Attention settings, named as in the official code.

    ``chunk_size`` S is the largest position a query is given; chunks hold ``chunk_len`` = S - w tokens.
    ``local_window`` w is how far into a chunk queries keep their true distance to the previous chunk.
    """

    chunk_size: int
    local_window: int
    query_chunk: int = DEFAULT_QUERY_CHUNK

    def __post_init__(self):
        for name in ("chunk_size", "local_window", "query_chunk"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise LongLMError(f"{name} must be an integer, got {value!r}")
        if self.local_window < 0:
            raise LongLMError(f"local window must be >= 0, got {self.local_window}")
        if self.chunk_size <= self.local_window:
            raise LongLMError(
                f"chunk size ({self.chunk_size}) must be larger than the local window ({self.local_window}): "
                "chunks hold chunk_size - local_window tokens"
            )
        if self.query_chunk < 1:
            raise LongLMError(f"query_chunk must be >= 1, got {self.query_chunk}")

    @property
    def chunk_len(self) -> int:
        return self.chunk_size - self.local_window

    @classmethod
    def for_window(cls, pretraining_window: int, *, query_chunk: int = DEFAULT_QUERY_CHUNK) -> DcaConfig:
        """The official defaults for a pretraining window L: S = 3L // 4, w = L // 8 (chunks of 5L/8)."""
        return cls(
            chunk_size=pretraining_window * 3 // 4, local_window=pretraining_window // 8, query_chunk=query_chunk
        )


@dataclass(frozen=True)
class _LayerSpec:
    config: DcaConfig
    rope: LayerRope | None  # None: a sliding-window layer, left as in the plain model


@dataclass
class ChunkKeyCache:
    """Keys rotated at their in-chunk positions ``j % c``, kept across forward calls that share one KV cache.

    Pass the same instance as ``longlm_dca_keys=`` to every forward call that uses the same
    ``past_key_values``; decoding then rotates only the new keys instead of the whole cache. Without it the
    result is identical, only slower. Memory: one extra copy of the keys of each extended layer.
    """

    layers: dict = field(default_factory=dict)

    def clear(self) -> None:
        self.layers.clear()


# ---------------------------------------------------------------------------------------------------------
# Positions: shifts from a true position to the DCA one (rotations compose, rope.py)


def chunk_key_delta(pos: torch.Tensor, config: DcaConfig) -> torch.Tensor:
    """Shift taking a key from its true position j to ``j % c``."""
    return pos % config.chunk_len - pos


def successive_query_delta(pos: torch.Tensor, config: DcaConfig) -> torch.Tensor:
    """Shift taking a query from i to ``min(i % c + c, S)``, its position against the previous chunk's keys."""
    c = config.chunk_len
    return (pos % c + c).clamp(max=config.chunk_size) - pos


def inter_query_delta(pos: torch.Tensor, config: DcaConfig) -> torch.Tensor:
    """Shift taking a query from i to ``min(2c - 1, S)``, its fixed position against older chunks' keys."""
    return min(2 * config.chunk_len - 1, config.chunk_size) - pos


def _chunk_keys(key, needed: int, first_new: int, spec: _LayerSpec, offset: int, layer_idx, cache):
    """Keys [0, needed) rotated at ``j % c``: [B, Hkv, needed, D].

    With a ChunkKeyCache, keys rotated by an earlier call are reused (only keys before ``first_new``, the
    first key this call appended, can be reused) and only the rest are rotated.
    """

    def rotated(lo: int, hi: int) -> torch.Tensor:
        pos = torch.arange(lo, hi, device=key.device) + offset
        return rotate(key[:, :, lo:hi], chunk_key_delta(pos, spec.config), spec.rope)

    if needed <= 0:
        return key[:, :, :0]
    if cache is None:
        return rotated(0, needed)
    B, Hkv, _, D = key.shape
    signature = (spec.config.chunk_len, offset, B, Hkv, D, key.dtype, key.device)
    entry = cache.layers.get(layer_idx)
    if entry is None or entry["signature"] != signature:
        entry = cache.layers[layer_idx] = {"signature": signature, "buffer": key.new_empty(B, Hkv, 0, D), "n": 0}
    n = min(entry["n"], first_new)
    if n < needed:
        buffer = entry["buffer"]
        if buffer.shape[2] < needed:  # grow geometrically so decoding appends in amortised O(1)
            grown = key.new_empty(B, Hkv, max(needed, 2 * buffer.shape[2]), D)
            grown[:, :, :n] = buffer[:, :, :n]
            buffer = entry["buffer"] = grown
        buffer[:, :, n:needed] = rotated(n, needed)
        n = needed
    entry["n"] = n
    return entry["buffer"][:, :, :needed]


# ---------------------------------------------------------------------------------------------------------
# Blocks


def _intra_blocks(acc, rows: slice, q, key, value, start: int, a: int, b: int, *, scale, softcap):
    """Queries [a, b) against their own chunk's keys [start, b) at true positions. Sets ``rows`` of acc."""
    if b - a == 1:  # decoding: one block, no mask
        out, lse = _attend(q, key[:, :, start:b], value[:, :, start:b], scale=scale, causal=False, softcap=softcap)
        acc.set(rows, out, lse)
        return
    # Keys [a, b): top-left causal; keys [start, a): seen by every row.
    out, lse = _attend(q, key[:, :, a:b], value[:, :, a:b], scale=scale, causal=True, softcap=softcap)
    acc.set(rows, out, lse)
    if start < a:
        out, lse = _attend(q, key[:, :, start:a], value[:, :, start:a], scale=scale, causal=False, softcap=softcap)
        acc.add(rows, out, lse)


def _blocked_dca(query, key, value, kc, first: int, offset: int, spec: _LayerSpec, *, scale, softcap):
    """Queries in blocks that never straddle a chunk, each with its three kinds of keys. Returns [B, H, Q, D] f32.

    query: [B, H, Q, D], the last Q of the K keys; key, value: [B, Hkv, K, D]; kc: keys rotated at ``j % c``,
    at least up to the start of the last query's chunk. Key index t has true position t + offset.
    """
    B, H, Q, D = query.shape
    K = key.shape[2]
    c = spec.config.chunk_len
    acc = Accumulator(B, H, Q, D, query.device)
    a = first
    while a < K:
        n = (a + offset) // c  # the chunk of query a
        start = max(0, n * c - offset)  # its first key
        prev = max(0, start - c)  # the previous chunk's first key
        b = min(K, a + spec.config.query_chunk, (n + 1) * c - offset)
        rows = slice(a - first, b - first)
        q = query[:, :, rows]
        _intra_blocks(acc, rows, q.contiguous(), key, value, start, a, b, scale=scale, softcap=softcap)
        pos = torch.arange(a, b, device=query.device) + offset
        if prev < start:  # successive chunk
            qs = rotate(q, successive_query_delta(pos, spec.config), spec.rope).contiguous()
            out, lse = _attend(
                qs, kc[:, :, prev:start], value[:, :, prev:start], scale=scale, causal=False, softcap=softcap
            )
            acc.add(rows, out, lse)
        if prev > 0:  # older chunks
            qi = rotate(q, inter_query_delta(pos, spec.config), spec.rope).contiguous()
            out, lse = _attend(qi, kc[:, :, :prev], value[:, :, :prev], scale=scale, causal=False, softcap=softcap)
            acc.add(rows, out, lse)
        a = b
    return acc.out


def _blocked_band(query, key, value, first: int, band: int, query_chunk: int, *, scale, softcap):
    """A sliding-window layer as in the plain model: keys with 0 <= i - j < band. Returns [B, H, Q, D] f32."""
    B, H, Q, D = query.shape
    K = key.shape[2]
    acc = Accumulator(B, H, Q, D, query.device)
    chunk = max(1, min(query_chunk, band - 1))  # small enough for neighbour_blocks' triangles
    for a in range(first, K, chunk):
        rows = slice(a - first, min(K, a + chunk) - first)
        neighbour_blocks(acc, rows, query[:, :, rows].contiguous(), key, value, a, band, scale=scale, softcap=softcap)
    return acc.out


# ---------------------------------------------------------------------------------------------------------
# The registered attention and mask functions


def dca_attention(
    module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    sliding_window: int | None = None,
    position_ids: torch.Tensor | None = None,
    longlm_dca_keys: ChunkKeyCache | None = None,
    **kwargs,
):
    """Dual Chunk Attention, registered as ``longlm_dca`` in transformers' AttentionInterface.

    query: [B, H, Q, D]; key, value: [B, Hkv, K, D], the Q queries being the last Q positions of the K keys
    (full prefill, chunked prefill, cache append and decode are all this one case).
    Returns (output [B, Q, H, D], None).
    """
    spec = _layer_spec(module, attention_mask, dropout)
    K, Q, D = key.shape[2], query.shape[2], query.shape[3]
    first = K - Q  # index of the first query among the keys
    offset = 0 if position_ids is None else int(position_ids[0, 0]) - first  # true position of key 0
    scale = D**-0.5 if scaling is None else scaling
    # The CPU kernel is about twice as fast on contiguous [B, H, S, D] blocks as on the transposed views.
    key, value = key.contiguous(), value.contiguous()
    if sliding_window or spec.rope is None:  # sliding-window layer: the plain model's band, positions untouched
        out = _blocked_band(
            query, key, value, first, sliding_window, spec.config.query_chunk, scale=scale, softcap=softcap
        )
    else:
        c = spec.config.chunk_len
        needed = max(0, (K - 1 + offset) // c * c - offset)  # keys before the last query's chunk
        layer_idx = getattr(module, "layer_idx", id(module))
        kc = _chunk_keys(key, needed, first, spec, offset, layer_idx, longlm_dca_keys)
        out = _blocked_dca(query, key, value, kc, first, offset, spec, scale=scale, softcap=softcap)
    return out.transpose(1, 2).to(query.dtype), None  # [B, Q, H, D]


def _layer_spec(module, attention_mask, dropout) -> _LayerSpec:
    """The layer's DCA settings; refuses what the engine does not do (training, explicit masks)."""
    spec: _LayerSpec | None = getattr(module, _LAYER_ATTR, None)
    if spec is None:
        raise LongLMError("the model uses longlm_dca attention but apply_dca() did not set it up")
    if dropout:
        raise LongLMError("Dual Chunk Attention is for inference; call model.eval() first")
    if isinstance(attention_mask, torch.Tensor):
        raise LongLMError("Dual Chunk Attention does not take an explicit attention mask (padded batches)")
    return spec


def dca_mask(*args, attention_mask=None, **kwargs):
    """Mask function registered for ``longlm_dca``: causality is handled inside the attention.

    Returns None (no L x L mask is ever built). A 2D padding mask with padded positions is refused.
    """
    if attention_mask is not None and attention_mask.ndim == 2 and not bool(attention_mask.all()):
        raise LongLMError("Dual Chunk Attention does not support padded batches; run one sequence at a time")
    return None


AttentionInterface.register(ATTN_NAME, dca_attention)
AttentionMaskInterface.register(ATTN_NAME, dca_mask)


# ---------------------------------------------------------------------------------------------------------
# The public switch


def _check_supported(model: PreTrainedModel) -> None:
    config = _text_config(model)
    rotaries = _rotary_modules(model)
    if not rotaries:
        raise UnsupportedModelError(
            f"{_architecture(model)} has no rotary position embedding (RoPE); Dual Chunk Attention only applies "
            "to RoPE models"
        )
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"{_architecture(model)} is not supported; supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    for layer_type in set(getattr(config, "layer_types", None) or ["full_attention"]):
        rope_type = _rope_type(rotaries[0], layer_type)
        if rope_type not in COMPOSABLE_ROPE_TYPES:
            raise UnsupportedModelError(
                f"{_architecture(model)} uses rope type {rope_type!r}, whose rotation depends on the sequence "
                f"length and does not compose; supported rope types: {', '.join(COMPOSABLE_ROPE_TYPES)}"
            )


def apply_dca(
    model: PreTrainedModel, *, chunk_size: int, local_window: int, query_chunk: int = DEFAULT_QUERY_CHUNK
) -> PreTrainedModel:
    """Switch a loaded transformers causal LM to Dual Chunk Attention (calling it again reconfigures it).

    ``chunk_size`` S and ``local_window`` w as in the official code: chunks of S - w tokens, queries placed at
    most at position S (``DcaConfig.for_window(L)`` gives the official S = 3L // 4, w = L // 8). Layers with a
    sliding window keep the plain model's attention. A model switched to SelfExtend is switched over; the
    attention it had before either method is what ``remove_dca`` restores. Returns the model, modified in place.
    """
    settings = DcaConfig(chunk_size=chunk_size, local_window=local_window, query_chunk=query_chunk)
    _check_supported(model)
    layer_types = getattr(_text_config(model), "layer_types", None)
    rotary = _rotary_modules(model)[0]
    for module in _attention_modules(model):
        layer_type = layer_types[module.layer_idx] if layer_types else None
        sliding = layer_type is not None and layer_type != "full_attention"
        rope = None if sliding else _layer_rope(rotary, layer_type)
        setattr(module, _LAYER_ATTR, _LayerSpec(config=settings, rope=rope))
    _drop_layer_attr(model, _SELFEXTEND_LAYER_ATTR)  # so selfextend_settings() no longer reports SelfExtend
    if getattr(model, _ORIGINAL_ATTR, None) is None:
        setattr(model, _ORIGINAL_ATTR, model.config._attn_implementation)
    model.set_attn_implementation(ATTN_NAME)
    return model


def _drop_layer_attr(model: PreTrainedModel, name: str) -> None:
    for module in model.modules():
        if hasattr(module, name):
            delattr(module, name)


def remove_dca(model: PreTrainedModel) -> PreTrainedModel:
    """Restore the attention implementation the model had before ``apply_dca``."""
    original = getattr(model, _ORIGINAL_ATTR, None)
    if original is None:
        return model
    _drop_layer_attr(model, _LAYER_ATTR)
    model.set_attn_implementation(original)
    delattr(model, _ORIGINAL_ATTR)
    return model


def dca_settings(model: PreTrainedModel) -> DcaConfig | None:
    """The DCA settings a model currently runs with, or None."""
    if model.config._attn_implementation != ATTN_NAME:
        return None
    for module in model.modules():
        spec = getattr(module, _LAYER_ATTR, None)
        if spec is not None:
            return spec.config
    return None
