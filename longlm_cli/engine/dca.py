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

from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel

from ..defaults import DEFAULT_QUERY_CHUNK
from ..errors import LongLMError
from ..models.architecture import dual_chunk_settings, text_config
from . import switch
from .blocks import Accumulator, attend, neighbour_blocks
from .evidence import capped, causal_fill, expand_heads, plain_scores
from .keycache import RotatedKeyCache, keys_at_method_positions, keys_for_scores
from .rope import rotate
from .switch import Call, LayerSpec

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

    @classmethod
    def for_model(cls, config, pretraining_window: int, *, query_chunk: int = DEFAULT_QUERY_CHUNK) -> DcaConfig:
        """The settings a model's config carries (``dual_chunk_attention_config``: chunk_size, local_size), else
        the official defaults for its window L."""
        found = dual_chunk_settings(text_config(config).to_dict())
        if found is None:
            return cls.for_window(pretraining_window, query_chunk=query_chunk)
        return cls(chunk_size=found[0], local_window=found[1], query_chunk=query_chunk)


class ChunkKeyCache(RotatedKeyCache):
    """Pass one as ``longlm_dca_keys=`` to the forward calls that share one KV cache (see RotatedKeyCache).
    In place: a key before the query's chunk is only ever read at its chunk position again."""

    in_place_capable = True


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


def _key_shift(spec: LayerSpec, offset: int):
    """``shift(x, lo, hi, sign)``: keys [lo, hi) of x (true position of key 0: ``offset``) rotated to ``j % c``
    (sign 1) or back (-1)."""
    rope = spec.rope
    assert rope is not None  # only a layer with positions to extend chunks its keys (sliding ones have no rope)

    def shift(x: torch.Tensor, lo: int, hi: int, sign: int) -> torch.Tensor:
        pos = torch.arange(lo, hi, device=x.device) + offset
        return rotate(x[:, :, lo:hi], sign * chunk_key_delta(pos, spec.config), rope)

    return shift


def _chunk_keys(key, needed: int, first_new: int, spec: LayerSpec, offset: int, layer_idx, cache, *, in_place: bool):
    """``upto(hi)``: keys [0, hi) rotated at ``j % c`` ([B, Hkv, hi, D]), to call once this call no longer reads
    keys before ``hi`` at their true positions (see keycache.keys_at_method_positions)."""
    c = spec.config.chunk_len
    shift = _key_shift(spec, offset)
    true_from = max(0, (first_new + offset) // c * c - offset)  # the first query's chunk: read at true positions
    return keys_at_method_positions(
        key, needed, first_new, true_from, cache, layer_idx, (c, offset), shift, in_place=in_place
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Blocks


def _intra_blocks(acc, rows: slice, q, key, value, start: int, a: int, b: int, *, scale, softcap):
    """Queries [a, b) against their own chunk's keys [start, b) at true positions. Sets ``rows`` of acc."""
    if b - a == 1:  # decoding: one block, no mask
        out, lse = attend(q, key[:, :, start:b], value[:, :, start:b], scale=scale, causal=False, softcap=softcap)
        acc.set(rows, out, lse)
        return
    # Keys [a, b): top-left causal; keys [start, a): seen by every row.
    out, lse = attend(q, key[:, :, a:b], value[:, :, a:b], scale=scale, causal=True, softcap=softcap)
    acc.set(rows, out, lse)
    if start < a:
        out, lse = attend(q, key[:, :, start:a], value[:, :, start:a], scale=scale, causal=False, softcap=softcap)
        acc.add(rows, out, lse)


def _blocked_dca(query, key, value, chunk_keys, first: int, offset: int, spec: LayerSpec, *, scale, softcap):
    """Queries in blocks that never straddle a chunk, each with its three kinds of keys. Returns [B, H, Q, D] f32.

    query: [B, H, Q, D], the last Q of the K keys; key, value: [B, Hkv, K, D]; ``chunk_keys(hi)``: keys [0, hi)
    rotated at ``j % c``, asked for each block once its own chunk's keys are the only ones it reads at true
    positions (in place, older true keys are re-rotated then). Key index t has true position t + offset.
    """
    B, H, Q, D = query.shape
    K = key.shape[2]
    c, rope = spec.config.chunk_len, spec.rope
    assert rope is not None  # _layer_output sends a sliding-window layer (no rope) to _blocked_band instead
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
        kc: Any = chunk_keys(start) if start > 0 else None  # None only at start 0, where no older chunk is read
        pos = torch.arange(a, b, device=query.device) + offset
        if prev < start:  # successive chunk
            qs = rotate(q, successive_query_delta(pos, spec.config), rope).contiguous()
            out, lse = attend(
                qs, kc[:, :, prev:start], value[:, :, prev:start], scale=scale, causal=False, softcap=softcap
            )
            acc.add(rows, out, lse)
        if prev > 0:  # older chunks
            qi = rotate(q, inter_query_delta(pos, spec.config), rope).contiguous()
            out, lse = attend(qi, kc[:, :, :prev], value[:, :, :prev], scale=scale, causal=False, softcap=softcap)
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


def _layer_output(module, spec: LayerSpec, query, key, value, call: Call, *, softcap, sliding_window, cache):
    """Dual Chunk Attention's output [B, H, Q, D] for one layer call (see ``switch.register``)."""
    first, offset, K = call.first, call.offset, key.shape[2]
    if sliding_window or spec.rope is None:  # sliding-window layer: the plain model's band, positions untouched
        return _blocked_band(
            query, key, value, first, sliding_window, spec.config.query_chunk, scale=call.scale, softcap=softcap
        )
    c = spec.config.chunk_len
    needed = max(0, (K - 1 + offset) // c * c - offset)  # keys before the last query's chunk
    layer_idx = getattr(module, "layer_idx", id(module))
    chunk_keys = _chunk_keys(key, needed, first, spec, offset, layer_idx, cache, in_place=True)
    return _blocked_dca(query, key, value, chunk_keys, first, offset, spec, scale=call.scale, softcap=softcap)


def _row_scores(module, spec: LayerSpec, rows, first_row: int, key, call: Call, *, softcap, sliding_window, cache):
    """Dual Chunk Attention's logits [B, H, R, K] for query ``rows`` [B, H, R, D] at key indices from
    ``first_row``: same-chunk keys at true distances, the previous chunk's and older ones against the query at
    its successive and inter-chunk positions (see switch.register)."""
    if sliding_window or spec.rope is None:
        return plain_scores(
            module, rows, first_row, key, call, softcap=softcap, sliding_window=sliding_window, cache_arguments={}
        )
    c, H, R, K = spec.config.chunk_len, rows.shape[1], rows.shape[2], key.shape[2]
    pos = torch.arange(first_row, first_row + R, device=rows.device) + call.offset  # [R] true positions
    layer_idx = getattr(module, "layer_idx", id(module))
    true, chunked = keys_for_scores(key, cache, layer_idx, (c, call.offset), _key_shift(spec, call.offset))
    true, chunked = expand_heads(true, H).transpose(-1, -2), expand_heads(chunked, H).transpose(-1, -2)
    q = rows.float()
    intra = capped(q @ true * call.scale, softcap)
    succ = capped(rotate(q, successive_query_delta(pos, spec.config), spec.rope) @ chunked * call.scale, softcap)
    inter = capped(rotate(q, inter_query_delta(pos, spec.config), spec.rope) @ chunked * call.scale, softcap)
    n_q = (pos // c)[:, None]
    n_k = ((torch.arange(K, device=rows.device) + call.offset) // c)[None, :]
    logits = torch.where(n_q == n_k, intra, torch.where(n_q == n_k + 1, succ, inter))
    return causal_fill(logits, first_row)


# Registered as ``longlm_dca``; a forward call's ``longlm_dca_keys=`` (a ChunkKeyCache) reaches it.
dca_attention = switch.register(
    ATTN_NAME, "Dual Chunk", _LAYER_ATTR, "longlm_dca_keys", ChunkKeyCache, _layer_output, _row_scores
)


# ---------------------------------------------------------------------------------------------------------
# The public switch


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
    switch.check_supported(model, "Dual Chunk Attention")
    return switch.attach(model, ATTN_NAME, _LAYER_ATTR, settings)


def remove_dca(model: PreTrainedModel) -> PreTrainedModel:
    """Restore the attention implementation the model had before ``apply_dca``."""
    return switch.detach(model)


def dca_settings(model: PreTrainedModel) -> DcaConfig | None:
    """The DCA settings a model currently runs with, or None."""
    return switch.attached_settings(model, ATTN_NAME, _LAYER_ATTR)
