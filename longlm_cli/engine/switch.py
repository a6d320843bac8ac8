"""What every extension method shares with the model it attaches to: model introspection (text config, RoPE
modules, attention modules), the support check, per-layer settings set on the attention modules, the switch of
``model.set_attn_implementation`` to a registered method and back, and the preamble of one attention call.

selfextend.py and dca.py each register one attention function; both call into here so that switching a model
from one method to the other (or back to the plain model) always goes through the same steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface

from ..errors import LongLMError, UnsupportedModelError
from ..models.architecture import COMPOSABLE_ROPE_TYPES, SUPPORTED_MODEL_TYPES, extension_refusal, text_config
from .rope import LayerRope

ORIGINAL_ATTR = "_longlm_original_attn_implementation"  # the attention the model had before any method
_LAYER_ATTRS: set[str] = set()  # every method's per-layer attribute, so switching methods drops the others'
_KEY_CACHES: dict[str, tuple[str, type]] = {}  # attention name -> (forward keyword, RotatedKeyCache class)
_SCORERS: dict[str, Callable] = {}  # attention name -> its explicit scores for a few query rows (evidence.py)


@dataclass(frozen=True)
class LayerSpec:
    """One attention module's settings for the method it runs."""

    config: Any  # the method's frozen settings (SelfExtendConfig, DcaConfig)
    rope: LayerRope | None  # None: a sliding-window layer, left as in the plain model


@dataclass(frozen=True)
class Call:
    """The geometry of one attention call: Q queries, the last Q of K keys."""

    first: int  # index of the first query among the keys
    offset: int  # true position of key 0
    scale: float


def call_geometry(query: torch.Tensor, key: torch.Tensor, scaling: float | None, position_ids) -> Call:
    """query: [B, H, Q, D]; key: [B, Hkv, K, D]; ``position_ids`` [B, Q] or None (positions from 0)."""
    K, Q, D = key.shape[2], query.shape[2], query.shape[3]
    first = K - Q
    offset = 0 if position_ids is None else int(position_ids[0, 0]) - first
    return Call(first=first, offset=offset, scale=D**-0.5 if scaling is None else scaling)


def layer_spec(module, layer_attr: str, method: str, attention_mask, dropout):
    """The layer's settings for ``method``; refuses what the engine does not do (training, explicit masks)."""
    spec = getattr(module, layer_attr, None)
    if spec is None:
        raise LongLMError(f"the model uses {method} attention but it was not applied to this model")
    if dropout:
        raise LongLMError(f"{method} attention is for inference; call model.eval() first")
    if isinstance(attention_mask, torch.Tensor):
        raise LongLMError(f"{method} attention does not take an explicit attention mask (padded batches)")
    return spec


def register(attn_name: str, method: str, layer_attr: str, cache_kwarg: str, cache_class: type, attend, scores):
    """Register a method's attention function (returned) and mask function under ``attn_name`` in transformers'
    AttentionInterface and AttentionMaskInterface, and its key cache for ``key_cache_arguments``.

    transformers calls the attention with query [B, H, Q, D] and key, value [B, Hkv, K, D], the Q queries being
    the last Q positions of the K keys (full prefill, chunked prefill, cache append and decode are all this one
    case); it returns (output [B, Q, H, D], None). ``attend(module, spec, query, key, value, call, softcap=,
    sliding_window=, cache=)`` computes the method's [B, H, Q, D] output; ``cache`` is the forward call's
    ``cache_kwarg`` argument. ``scores``: the method's explicit scores for evidence (see ``_method_scores``).
    """

    def attention(
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
        **kwargs,
    ):
        spec = layer_spec(module, layer_attr, method, attention_mask, dropout)
        call = call_geometry(query, key, scaling, position_ids)
        # The CPU kernel is about twice as fast when each head's rows are contiguous as on the transposed views
        # the attention modules hand over; one copy per layer call pays for itself. A growing KV cache's view
        # (runtime/kvcache.py) already has contiguous rows: copying it would undo its in-place append.
        key, value = _dense_rows(key), _dense_rows(value)
        out = attend(
            module,
            spec,
            query,
            key,
            value,
            call,
            softcap=softcap,
            sliding_window=sliding_window,
            cache=kwargs.get(cache_kwarg),
        )
        return out.transpose(1, 2).to(query.dtype), None  # [B, Q, H, D]

    attention.__name__ = attention.__qualname__ = f"{attn_name}_attention"
    AttentionInterface.register(attn_name, attention)
    AttentionMaskInterface.register(attn_name, _causal_inside_mask(method))
    _KEY_CACHES[attn_name] = (cache_kwarg, cache_class)
    _SCORERS[attn_name] = _method_scores(method, layer_attr, cache_kwarg, scores)
    return attention


def _method_scores(method: str, layer_attr: str, cache_kwarg: str, scores):
    """``scores(module, spec, rows, first_row, key, call, softcap=, sliding_window=, cache=)`` gives the method's
    logits [B, H, R, K] (-inf where a row does not look) for query ``rows`` [B, H, R, D], the queries at key
    indices ``first_row``, ``first_row + 1``, ... of a call, before its attention runs (evidence.py). Returned:
    the same with the layer's settings and the forward call's key cache looked up."""

    def method_scores(module, rows, first_row: int, key, call: Call, *, softcap, sliding_window, cache_arguments):
        spec = layer_spec(module, layer_attr, method, None, 0.0)
        cache = cache_arguments.get(cache_kwarg)
        return scores(
            module, spec, rows, first_row, key, call, softcap=softcap, sliding_window=sliding_window, cache=cache
        )

    return method_scores


def scorer(attn_name: str) -> Callable | None:
    """The explicit scores of the method registered as ``attn_name`` (see ``register``), or None."""
    return _SCORERS.get(attn_name)


def key_cache_arguments(model: PreTrainedModel, reserve: int = 0, kv=None) -> dict:
    """The forward keyword arguments that give the method ``model`` runs a new key cache ({} for none), with
    room for ``reserve`` keys, going with the KV cache ``kv`` (in place where the method can): pass the same
    dict to every forward call over that KV cache."""
    found = _KEY_CACHES.get(model.config._attn_implementation)
    return {} if found is None else {found[0]: found[1](reserve=reserve, kv=kv)}


def _dense_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` [B, H, S, D] itself when each head's [S, D] block is row-major and dense, else a contiguous copy."""
    return x if x.stride(-1) == 1 and x.stride(-2) == x.shape[-1] else x.contiguous()


def _causal_inside_mask(method: str):
    """A mask function for a method whose attention handles causality itself: it returns None (no L x L mask
    is ever built) and refuses a 2D padding mask with padded positions."""

    def mask(*args, attention_mask=None, **kwargs):
        if attention_mask is not None and attention_mask.ndim == 2 and not bool(attention_mask.all()):
            raise LongLMError(f"{method} attention does not support padded batches; run one sequence at a time")
        return None

    return mask


def architecture(model: PreTrainedModel) -> str:
    config = text_config(model.config)
    archs = getattr(model.config, "architectures", None) or [type(model).__name__]
    return f"{archs[0]} (model_type {config.model_type!r})"


def rotary_modules(model: PreTrainedModel) -> list:
    return [
        m
        for m in model.modules()
        if hasattr(m, "inv_freq")
        or any(
            name.endswith("_inv_freq") and not name.endswith("original_inv_freq")
            for name, _ in m.named_buffers(recurse=False)
        )
    ]


def rope_type(rotary, layer_type: str | None) -> str:
    kind = getattr(rotary, "rope_type", "default")
    if isinstance(kind, dict):
        kind = kind.get(layer_type, "default")
    return kind


def _layer_rope(rotary, layer_type: str | None) -> LayerRope:
    inv_freq = getattr(rotary, f"{layer_type}_inv_freq", None) if layer_type else None
    if inv_freq is None:
        inv_freq = rotary.inv_freq
    return LayerRope(inv_freq=inv_freq.detach().to(torch.float32).clone())


def attention_modules(model: PreTrainedModel) -> list:
    return [m for m in model.modules() if hasattr(m, "layer_idx") and (hasattr(m, "q_proj") or hasattr(m, "qkv_proj"))]


def check_supported(model: PreTrainedModel, method: str) -> None:
    """Refuse a model without RoPE, with recurrent layers or M-RoPE, of an unsupported type, or with a rope type
    that does not compose."""
    config = text_config(model.config)
    refusal = extension_refusal(model.config.to_dict())
    if refusal is not None:
        raise UnsupportedModelError(f"{architecture(model)} {refusal}")
    rotaries = rotary_modules(model)
    if not rotaries:
        raise UnsupportedModelError(
            f"{architecture(model)} has no rotary position embedding (RoPE); {method} only applies to RoPE models"
        )
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"{architecture(model)} is not supported; supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    for layer_type in set(getattr(config, "layer_types", None) or ["full_attention"]):
        kind = rope_type(rotaries[0], layer_type)
        if kind not in COMPOSABLE_ROPE_TYPES:
            raise UnsupportedModelError(
                f"{architecture(model)} uses rope type {kind!r}, whose rotation depends on the sequence "
                f"length and does not compose; supported rope types: {', '.join(COMPOSABLE_ROPE_TYPES)}"
            )


def sliding_only(model: PreTrainedModel) -> int | None:
    """The sliding window every attention layer keeps to, when none attends to the whole text; else None."""
    config = text_config(model.config)
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if not window or (layer_types and "full_attention" in layer_types):
        return None
    if not layer_types and getattr(config, "use_sliding_window", True) is False:
        return None
    return int(window)


def attach(model: PreTrainedModel, attn_name: str, layer_attr: str, settings) -> PreTrainedModel:
    """Switch ``model`` to the registered attention ``attn_name``: each attention module gets a LayerSpec of
    ``settings`` under ``layer_attr`` (rope None for a sliding-window layer, left as in the plain model),
    any other method's settings are dropped, and the attention the model had first is kept for ``detach``."""
    _LAYER_ATTRS.add(layer_attr)
    layer_types = getattr(text_config(model.config), "layer_types", None)
    rotary = rotary_modules(model)[0]
    for other in _LAYER_ATTRS - {layer_attr}:
        _drop_layer_attr(model, other)
    for module in attention_modules(model):
        layer_type = layer_types[module.layer_idx] if layer_types else None
        sliding = layer_type is not None and layer_type != "full_attention"
        setattr(
            module, layer_attr, LayerSpec(config=settings, rope=None if sliding else _layer_rope(rotary, layer_type))
        )
    if getattr(model, ORIGINAL_ATTR, None) is None:
        setattr(model, ORIGINAL_ATTR, model.config._attn_implementation)
    model.set_attn_implementation(attn_name)
    return model


def _drop_layer_attr(model: PreTrainedModel, name: str) -> None:
    for module in model.modules():
        if hasattr(module, name):
            delattr(module, name)


def detach(model: PreTrainedModel) -> PreTrainedModel:
    """Restore the attention implementation the model had before any method was attached."""
    original = getattr(model, ORIGINAL_ATTR, None)
    if original is None:
        return model
    for name in _LAYER_ATTRS:
        _drop_layer_attr(model, name)
    model.set_attn_implementation(original)
    delattr(model, ORIGINAL_ATTR)
    return model


def attached_settings(model: PreTrainedModel, attn_name: str, layer_attr: str):
    """The settings object of method ``attn_name`` the model runs with, or None."""
    if model.config._attn_implementation != attn_name:
        return None
    for module in model.modules():
        spec = getattr(module, layer_attr, None)
        if spec is not None:
            return spec.config
    return None
