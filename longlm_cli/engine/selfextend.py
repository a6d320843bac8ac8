"""SelfExtend attention (Jin et al., "LLM Maybe LongLM", arXiv 2401.01325) for Hugging Face causal LMs.

For a query at position i and a key at position j <= i:
  * i - j <  W: the score uses q and k rotated at their true positions (the neighbour band);
  * i - j >= W: q is rotated at ``i // G + W - W // G`` and k at ``j // G`` (the grouped part).
Both kinds of score go into one softmax per row.

Optional query log-scaling (``scale_base``, off by default), as in the reference code's ``scale_base``: the query
at true position i is multiplied by ``max(1, ln(i + 1) / ln(scale_base))`` before both of its scores, so softmax
stays about as sharp over a long input as over the pretraining window. Sliding-window layers are not scaled.

The engine plugs into transformers through its own registries: an attention function registered in
``AttentionInterface`` and a mask function in ``AttentionMaskInterface``, selected per model with
``model.set_attn_implementation``. No forward method of any model class is touched.

Attention functions receive q and k already rotated at their true positions; the grouped versions come from
rotating again by the position difference (rope.py). The scores are computed in exact blocks merged by
log-sum-exp (blocks.py on the CPU, flex.py on CUDA). This module owns the registered functions, the grouped-key
cache kept across forward calls, and the switch that turns a model's attention to SelfExtend and back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from ..defaults import DEFAULT_QUERY_CHUNK
from ..errors import LongLMError
from . import switch
from .blocks import Accumulator, group_blocks, neighbour_blocks
from .evidence import capped, causal_fill, expand_heads, plain_scores
from .flex import flex_selfextend
from .keycache import RotatedKeyCache, keys_at_method_positions, keys_for_scores
from .rope import grouped_key_delta, grouped_query_delta, rotate
from .switch import Call, LayerSpec

ATTN_NAME = "longlm_selfextend"
_LAYER_ATTR = "_longlm_selfextend"


@dataclass(frozen=True)
class SelfExtendConfig:
    """SelfExtend settings: neighbour window W, group size G and the query log-scaling base (None: off)."""

    group_size: int
    window: int
    query_chunk: int = DEFAULT_QUERY_CHUNK
    scale_base: float | None = None


class GroupedKeyCache(RotatedKeyCache):
    """Pass one as ``longlm_grouped_keys=`` to the forward calls that share one KV cache (see RotatedKeyCache).
    In place on the CPU: a key older than the window is only ever read at its grouped position again."""

    in_place_capable = True


# ---------------------------------------------------------------------------------------------------------
# Grouped keys


def _key_shift(spec: LayerSpec, offset: int):
    """``shift(x, lo, hi, sign)``: keys [lo, hi) of x (true position of key 0: ``offset``) rotated to ``j // G``
    (sign 1) or back (-1)."""
    group, rope = spec.config.group_size, spec.rope
    assert rope is not None  # only a layer with positions to extend groups its keys (sliding ones have no rope)

    def shift(x: torch.Tensor, lo: int, hi: int, sign: int) -> torch.Tensor:
        pos = torch.arange(lo, hi, device=x.device) + offset
        return rotate(x[:, :, lo:hi], sign * grouped_key_delta(pos, group), rope)

    return shift


def _grouped_keys(
    key, needed: int, first_new: int, band: int, spec: LayerSpec, offset: int, layer_idx, cache, *, in_place: bool
):
    """``upto(hi)``: keys [0, hi) rotated at grouped positions ``j // G`` ([B, Hkv, hi, D]), to call once this
    call has read the keys at their true positions (the neighbour band); see keycache.keys_at_method_positions."""
    group = spec.config.group_size
    shift = _key_shift(spec, offset)
    true_from = max(0, first_new - band + 1)  # the oldest key the first query reads at its true position
    return keys_at_method_positions(
        key, needed, first_new, true_from, cache, layer_idx, (group, offset), shift, in_place=in_place
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Query log-scaling


def log_scale_factors(pos: torch.Tensor, base: float) -> torch.Tensor:
    """``max(1, ln(pos + 1) / ln(base))`` per 0-based true position: [S] integer -> [S] float32."""
    return (torch.log1p(pos.to(torch.float64)) / math.log(base)).clamp_min(1.0).to(torch.float32)


def _log_scaled(query: torch.Tensor, first_pos: int, base: float | None) -> torch.Tensor:
    """``query`` [B, H, Q, D] (true positions first_pos, first_pos + 1, ...) times each row's log factor.

    Scaling q scales its neighbour and grouped scores alike (RoPE is linear) and comes before any softcap, as
    in the reference. Multiplied in float32, stored in the query's dtype for the kernels.
    """
    Q = query.shape[2]
    if base is None or first_pos + Q <= base:  # every factor is 1: keep the exact tensor, no copy
        return query
    factor = log_scale_factors(torch.arange(first_pos, first_pos + Q, device=query.device), base)  # [Q]
    return (query.float() * factor[:, None]).to(query.dtype)


# ---------------------------------------------------------------------------------------------------------
# The registered attention and mask functions


def _layer_output(module, spec: LayerSpec, query, key, value, call: Call, *, softcap, sliding_window, cache):
    """SelfExtend's output [B, H, Q, D] for one layer call (see ``switch.register``)."""
    first, offset, K = call.first, call.offset, key.shape[2]
    if sliding_window or spec.rope is None:  # sliding-window layer: the plain model's band, positions untouched
        band, group = sliding_window, None
    else:
        band, group = spec.config.window, spec.config.group_size
        query = _log_scaled(query, first + offset, spec.config.scale_base)
    flex = _use_flex(query)
    grouped = None  # the grouped keys, once the true ones have been read (in place on the CPU)
    if group is not None:
        layer_idx = getattr(module, "layer_idx", id(module))
        grouped = _grouped_keys(key, K - band, first, band, spec, offset, layer_idx, cache, in_place=not flex)
    if flex:
        kg = grouped(K - band) if grouped is not None and K - band > 0 else None
        out, _ = flex_selfextend(
            query, key, value, kg, first, band, group, spec.rope, offset, scale=call.scale, softcap=softcap
        )
        return out
    return _blocked_selfextend(
        query, key, value, grouped, first, band, group, spec, offset, scale=call.scale, softcap=softcap
    )


def _use_flex(query: torch.Tensor) -> bool:
    """FlexAttention on CUDA; the CPU keeps the fused kernel blocks (flex on CPU is only for tests)."""
    return query.device.type == "cuda"


def _blocked_selfextend(
    query, key, value, grouped, first: int, band: int, group, spec: LayerSpec, offset: int, *, scale, softcap
) -> torch.Tensor:
    """The CPU path: the band and the grouped part in query chunks of exact blocks. Returns [B, H, Q, D] float32.
    ``grouped(hi)``: the grouped keys, called after the band (it may re-rotate the true keys in place)."""
    B, H, Q, D = query.shape
    K = key.shape[2]
    acc = Accumulator(B, H, Q, D, query.device)
    # Neighbour band, in chunks small enough that each chunk's band splits into two triangles and a block.
    chunk = max(1, min(spec.config.query_chunk, band - 1))
    for a in range(first, K, chunk):
        rows = slice(a - first, min(K, a + chunk) - first)
        neighbour_blocks(acc, rows, query[:, :, rows].contiguous(), key, value, a, band, scale=scale, softcap=softcap)
    # Grouped part: a causal shape shifted by W, so chunks can be large.
    if grouped is not None and K - band > 0:
        assert spec.rope is not None  # grouped keys exist only for a layer with positions to extend
        kg = grouped(K - band)
        chunk = spec.config.query_chunk
        for a in range(max(first, band), K, chunk):
            rows = slice(a - first, min(K, a + chunk) - first)
            pos = torch.arange(rows.start, rows.stop, device=query.device) + first + offset
            qg = rotate(query[:, :, rows], grouped_query_delta(pos, group, band), spec.rope).contiguous()
            group_blocks(acc, rows, qg, kg, value, a, band, scale=scale, softcap=softcap)
    return acc.out


def _row_scores(module, spec: LayerSpec, rows, first_row: int, key, call: Call, *, softcap, sliding_window, cache):
    """SelfExtend's logits [B, H, R, K] for query ``rows`` [B, H, R, D] at key indices from ``first_row``: the
    true scores inside the window, the grouped ones beyond it (see switch.register)."""
    if sliding_window or spec.rope is None:
        band = sliding_window or None
        return plain_scores(
            module, rows, first_row, key, call, softcap=softcap, sliding_window=band, cache_arguments={}
        )
    W, G = spec.config.window, spec.config.group_size
    H, R = rows.shape[1], rows.shape[2]
    pos = torch.arange(first_row, first_row + R, device=rows.device) + call.offset
    q = _log_scaled(rows, first_row + call.offset, spec.config.scale_base).float()
    layer_idx = getattr(module, "layer_idx", id(module))
    true, grouped = keys_for_scores(key, cache, layer_idx, (G, call.offset), _key_shift(spec, call.offset))
    near = capped(q @ expand_heads(true, H).transpose(-1, -2) * call.scale, softcap)
    qg = rotate(q, grouped_query_delta(pos, G, W), spec.rope)
    far = capped(qg @ expand_heads(grouped, H).transpose(-1, -2) * call.scale, softcap)
    i = pos[:, None] - call.offset
    j = torch.arange(key.shape[2], device=rows.device)[None, :]
    return causal_fill(torch.where(i - j < W, near, far), first_row)


# Registered as ``longlm_selfextend``; a forward call's ``longlm_grouped_keys=`` (a GroupedKeyCache) reaches it.
selfextend_attention = switch.register(
    ATTN_NAME, "SelfExtend", _LAYER_ATTR, "longlm_grouped_keys", GroupedKeyCache, _layer_output, _row_scores
)


# ---------------------------------------------------------------------------------------------------------
# The public switch


def _check_settings(group_size, window, query_chunk, scale_base) -> None:
    if not isinstance(group_size, int) or group_size < 1:
        raise LongLMError(f"group size must be an integer >= 1, got {group_size!r}")
    if not isinstance(window, int) or window < 1:
        raise LongLMError(f"window must be an integer >= 1, got {window!r}")
    if query_chunk < 1:
        raise LongLMError(f"query_chunk must be >= 1, got {query_chunk!r}")
    if scale_base is not None and (
        isinstance(scale_base, bool)
        or not isinstance(scale_base, (int, float))
        or not math.isfinite(scale_base)
        or scale_base <= 1
    ):
        raise LongLMError(f"scale_base must be a finite number > 1 (or None: off), got {scale_base!r}")


def apply_selfextend(
    model: PreTrainedModel,
    *,
    group_size: int,
    window: int,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    scale_base: float | None = None,
) -> PreTrainedModel:
    """Switch a loaded transformers causal LM to SelfExtend attention (calling it again reconfigures it).

    ``window`` is the neighbour window W and ``group_size`` the group size G. Layers with a sliding window
    (Gemma2/Gemma3 local layers, Mistral with ``sliding_window``) keep the plain model's attention: their
    relative distances never exceed the sliding window, so they have nothing to extend (nor to log-scale: a
    row's softmax there never spans more keys than in pretraining). ``scale_base``: multiply the query at true
    position i by ``max(1, ln(i + 1) / ln(scale_base))``, as the reference code's ``scale_base`` (which it
    advises setting to the pretraining window L); None leaves queries untouched.
    Returns the model, modified in place.
    """
    _check_settings(group_size, window, query_chunk, scale_base)
    switch.check_supported(model, "SelfExtend")
    scale_base = None if scale_base is None else float(scale_base)
    settings = SelfExtendConfig(group_size=group_size, window=window, query_chunk=query_chunk, scale_base=scale_base)
    return switch.attach(model, ATTN_NAME, _LAYER_ATTR, settings)


def remove_selfextend(model: PreTrainedModel) -> PreTrainedModel:
    """Restore the attention implementation the model had before ``apply_selfextend``."""
    return switch.detach(model)


def selfextend_settings(model: PreTrainedModel) -> SelfExtendConfig | None:
    """The SelfExtend settings a model currently runs with, or None."""
    return switch.attached_settings(model, ATTN_NAME, _LAYER_ATTR)
