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
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface

from ..catalogue import COMPOSABLE_ROPE_TYPES, SUPPORTED_MODEL_TYPES
from ..defaults import DEFAULT_QUERY_CHUNK
from ..errors import LongLMError, UnsupportedModelError
from .blocks import Accumulator, group_blocks, neighbour_blocks
from .flex import flex_selfextend
from .rope import LayerRope, grouped_key_delta, grouped_query_delta, rotate

ATTN_NAME = "longlm_selfextend"
_LAYER_ATTR = "_longlm_selfextend"
_ORIGINAL_ATTR = "_longlm_original_attn_implementation"


@dataclass(frozen=True)
class SelfExtendConfig:
    """SelfExtend settings: neighbour window W, group size G and the query log-scaling base (None: off)."""

    group_size: int
    window: int
    query_chunk: int = DEFAULT_QUERY_CHUNK
    scale_base: float | None = None


@dataclass(frozen=True)
class _LayerSpec:
    config: SelfExtendConfig
    rope: LayerRope | None  # None: a sliding-window layer, left as in the plain model


@dataclass
class GroupedKeyCache:
    """Keys rotated at grouped positions, kept across forward calls that share one KV cache.

    Pass the same instance as ``longlm_grouped_keys=`` to every forward call that uses the same
    ``past_key_values``; decoding then rotates only the new keys instead of the whole cache. Without it the
    result is identical, only slower. Memory: one extra copy of the keys of each extended layer.
    """

    layers: dict = field(default_factory=dict)

    def clear(self) -> None:
        self.layers.clear()


# ---------------------------------------------------------------------------------------------------------
# Grouped keys


def _grouped_keys(key, needed: int, first_new: int, spec: _LayerSpec, offset: int, layer_idx, cache):
    """Keys [0, needed) rotated at grouped positions: [B, Hkv, needed, D].

    With a GroupedKeyCache, keys rotated by an earlier call are reused (only keys before ``first_new``, the
    first key this call appended, can be reused) and only the rest are rotated.
    """
    group = spec.config.group_size
    if needed <= 0:
        return key[:, :, :0]
    if cache is None:
        pos = torch.arange(needed, device=key.device) + offset
        return rotate(key[:, :, :needed], grouped_key_delta(pos, group), spec.rope)
    entry = cache.layers.get(layer_idx)
    signature = (group, offset, key.shape[0], key.shape[1], key.shape[3], key.dtype, key.device)
    if entry is None or entry["signature"] != signature:
        entry = {"signature": signature, "buffer": key.new_empty(key.shape[0], key.shape[1], 0, key.shape[3]), "n": 0}
        cache.layers[layer_idx] = entry
    n = min(entry["n"], first_new)
    if n < needed:
        buffer = entry["buffer"]
        if buffer.shape[2] < needed:  # grow geometrically so decoding appends in amortised O(1)
            grown = key.new_empty(key.shape[0], key.shape[1], max(needed, 2 * buffer.shape[2]), key.shape[3])
            grown[:, :, :n] = buffer[:, :, :n]
            buffer = entry["buffer"] = grown
        pos = torch.arange(n, needed, device=key.device) + offset
        buffer[:, :, n:needed] = rotate(key[:, :, n:needed], grouped_key_delta(pos, group), spec.rope)
        n = needed
    entry["n"] = n
    return entry["buffer"][:, :, :needed]


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


def selfextend_attention(
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
    longlm_grouped_keys: GroupedKeyCache | None = None,
    **kwargs,
):
    """SelfExtend attention, registered as ``longlm_selfextend`` in transformers' AttentionInterface.

    query: [B, H, Q, D]; key, value: [B, Hkv, K, D], the Q queries being the last Q positions of the K keys
    (full prefill, chunked prefill, cache append and decode are all this one case).
    Returns (output [B, Q, H, D], None).
    """
    spec = _layer_spec(module, attention_mask, dropout)
    K, Q, D = key.shape[2], query.shape[2], query.shape[3]
    first = K - Q  # index of the first query among the keys
    offset = 0 if position_ids is None else int(position_ids[0, 0]) - first  # true position of key 0
    scale = D**-0.5 if scaling is None else scaling
    if sliding_window or spec.rope is None:  # sliding-window layer: the plain model's band, positions untouched
        band, group = sliding_window, None
    else:
        band, group = spec.config.window, spec.config.group_size
        query = _log_scaled(query, first + offset, spec.config.scale_base)
    # The CPU kernel is about twice as fast on contiguous [B, H, S, D] blocks as on the transposed views
    # the attention modules hand over; one copy per layer call pays for itself.
    key, value = key.contiguous(), value.contiguous()

    kg = None
    if group is not None and K - band > 0:
        kg = _grouped_keys(
            key, K - band, first, spec, offset, getattr(module, "layer_idx", id(module)), longlm_grouped_keys
        )
    if _use_flex(query):
        out, _ = flex_selfextend(
            query, key, value, kg, first, band, group, spec.rope, offset, scale=scale, softcap=softcap
        )
    else:
        out = _blocked_selfextend(query, key, value, kg, first, band, group, spec, offset, scale=scale, softcap=softcap)
    return out.transpose(1, 2).to(query.dtype), None  # [B, Q, H, D]


def _layer_spec(module, attention_mask, dropout) -> _LayerSpec:
    """The layer's SelfExtend settings; refuses what the engine does not do (training, explicit masks)."""
    spec: _LayerSpec | None = getattr(module, _LAYER_ATTR, None)
    if spec is None:
        raise LongLMError("the model uses longlm_selfextend attention but apply_selfextend() did not set it up")
    if dropout:
        raise LongLMError("SelfExtend attention is for inference; call model.eval() first")
    if isinstance(attention_mask, torch.Tensor):
        raise LongLMError("SelfExtend attention does not take an explicit attention mask (padded batches)")
    return spec


def _use_flex(query: torch.Tensor) -> bool:
    """FlexAttention on CUDA; the CPU keeps the fused kernel blocks (flex on CPU is only for tests)."""
    return query.device.type == "cuda"


def _blocked_selfextend(
    query, key, value, kg, first: int, band: int, group, spec: _LayerSpec, offset: int, *, scale, softcap
) -> torch.Tensor:
    """The CPU path: the band and the grouped part in query chunks of exact blocks. Returns [B, H, Q, D] float32."""
    B, H, Q, D = query.shape
    K = key.shape[2]
    acc = Accumulator(B, H, Q, D, query.device)
    # Neighbour band, in chunks small enough that each chunk's band splits into two triangles and a block.
    chunk = max(1, min(spec.config.query_chunk, band - 1))
    for a in range(first, K, chunk):
        rows = slice(a - first, min(K, a + chunk) - first)
        neighbour_blocks(acc, rows, query[:, :, rows].contiguous(), key, value, a, band, scale=scale, softcap=softcap)
    # Grouped part: a causal shape shifted by W, so chunks can be large.
    if kg is not None:
        chunk = spec.config.query_chunk
        for a in range(max(first, band), K, chunk):
            rows = slice(a - first, min(K, a + chunk) - first)
            pos = torch.arange(rows.start, rows.stop, device=query.device) + first + offset
            qg = rotate(query[:, :, rows], grouped_query_delta(pos, group, band), spec.rope).contiguous()
            group_blocks(acc, rows, qg, kg, value, a, band, scale=scale, softcap=softcap)
    return acc.out


def selfextend_mask(*args, attention_mask=None, **kwargs):
    """Mask function registered for ``longlm_selfextend``: causality is handled inside the attention.

    Returns None (no L x L mask is ever built). A 2D padding mask with padded positions is refused.
    """
    if attention_mask is not None and attention_mask.ndim == 2 and not bool(attention_mask.all()):
        raise LongLMError("SelfExtend attention does not support padded batches; run one sequence at a time")
    return None


AttentionInterface.register(ATTN_NAME, selfextend_attention)
AttentionMaskInterface.register(ATTN_NAME, selfextend_mask)


# ---------------------------------------------------------------------------------------------------------
# Model introspection and the public switch


def _text_config(model: PreTrainedModel):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _architecture(model: PreTrainedModel) -> str:
    config = _text_config(model)
    archs = getattr(model.config, "architectures", None) or [type(model).__name__]
    return f"{archs[0]} (model_type {config.model_type!r})"


def _rotary_modules(model: PreTrainedModel) -> list:
    return [
        m
        for m in model.modules()
        if hasattr(m, "inv_freq")
        or any(
            name.endswith("_inv_freq") and not name.endswith("original_inv_freq")
            for name, _ in m.named_buffers(recurse=False)
        )
    ]


def _rope_type(rotary, layer_type: str | None) -> str:
    rope_type = getattr(rotary, "rope_type", "default")
    if isinstance(rope_type, dict):
        rope_type = rope_type.get(layer_type, "default")
    return rope_type


def _layer_rope(rotary, layer_type: str | None) -> LayerRope:
    inv_freq = getattr(rotary, f"{layer_type}_inv_freq", None) if layer_type else None
    if inv_freq is None:
        inv_freq = rotary.inv_freq
    return LayerRope(inv_freq=inv_freq.detach().to(torch.float32).clone())


def _attention_modules(model: PreTrainedModel) -> list:
    return [m for m in model.modules() if hasattr(m, "layer_idx") and (hasattr(m, "q_proj") or hasattr(m, "qkv_proj"))]


def _check_supported(model: PreTrainedModel) -> None:
    config = _text_config(model)
    rotaries = _rotary_modules(model)
    if not rotaries:
        raise UnsupportedModelError(
            f"{_architecture(model)} has no rotary position embedding (RoPE); SelfExtend only applies to RoPE models"
        )
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"{_architecture(model)} is not supported; supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    for layer_type in layer_types:
        rope_type = _rope_type(rotaries[0], layer_type)
        if rope_type not in COMPOSABLE_ROPE_TYPES:
            raise UnsupportedModelError(
                f"{_architecture(model)} uses rope type {rope_type!r}, whose rotation depends on the sequence "
                f"length and does not compose; supported rope types: {', '.join(COMPOSABLE_ROPE_TYPES)}"
            )


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
    _check_supported(model)
    config = _text_config(model)
    scale_base = None if scale_base is None else float(scale_base)
    settings = SelfExtendConfig(group_size=group_size, window=window, query_chunk=query_chunk, scale_base=scale_base)
    rotary = _rotary_modules(model)[0]
    layer_types = getattr(config, "layer_types", None)
    for module in _attention_modules(model):
        layer_type = layer_types[module.layer_idx] if layer_types else None
        sliding = layer_type is not None and layer_type != "full_attention"
        rope = None if sliding else _layer_rope(rotary, layer_type)
        setattr(module, _LAYER_ATTR, _LayerSpec(config=settings, rope=rope))
    if getattr(model, _ORIGINAL_ATTR, None) is None:
        setattr(model, _ORIGINAL_ATTR, model.config._attn_implementation)
    model.set_attn_implementation(ATTN_NAME)
    return model


def remove_selfextend(model: PreTrainedModel) -> PreTrainedModel:
    """Restore the attention implementation the model had before ``apply_selfextend``."""
    original = getattr(model, _ORIGINAL_ATTR, None)
    if original is None:
        return model
    for module in model.modules():
        if hasattr(module, _LAYER_ATTR):
            delattr(module, _LAYER_ATTR)
    model.set_attn_implementation(original)
    delattr(model, _ORIGINAL_ATTR)
    return model


def selfextend_settings(model: PreTrainedModel) -> SelfExtendConfig | None:
    """The SelfExtend settings a model currently runs with, or None."""
    if getattr(model, _ORIGINAL_ATTR, None) is None:
        return None
    for module in model.modules():
        spec = getattr(module, _LAYER_ATTR, None)
        if spec is not None:
            return spec.config
    return None
