"""Attention evidence: how much attention each key (a document's token) receives from a span of query rows (a
question that follows the document), as the running method computes it, in the layers asked for.

A tap is switched on around the forward calls that prefill the query rows (``tapping``). The model's attention
implementation is wrapped, through transformers' AttentionInterface and AttentionMaskInterface, by one that
first computes the rows' softmax probabilities explicitly (a few dozen rows against all keys: cheap next to the
prefill), then calls the wrapped attention unchanged. Each method says how a row scores a key
(``switch.register``'s ``scores``): SelfExtend's neighbour band and grouped part, Dual Chunk Attention's three
kinds of chunk, or the plain model's causal scores. The probabilities are summed over the rows, per layer and
head, so chunked prefills, a cached document and decoding-sized calls all add up to the same thing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface

from ..errors import LongLMError
from . import switch

TAP_PREFIX = "longlm_tap:"  # + the wrapped attention's name
_TAP_ATTR = "_longlm_tap"  # the tap an attention module reports to while tapping


@dataclass
class AttentionTap:
    """Collects, for query rows at true positions [start, stop), the attention each key receives, summed over
    those rows: ``received[layer]`` is [H, K] float32, indexed by the keys' true positions (K: the keys the last
    of them saw). ``layers``: the layers to read (None: all)."""

    start: int
    stop: int
    layers: frozenset[int] | None = None
    received: dict[int, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0  # spent computing the rows' probabilities: what the tap adds to the prefill

    def rows(self, first_position: int, count: int) -> range:
        """The rows of a call whose ``count`` queries start at true position ``first_position`` to read."""
        lo = max(self.start, first_position) - first_position
        hi = min(self.stop, first_position + count) - first_position
        return range(lo, max(lo, hi))

    def wants(self, layer_idx: int) -> bool:
        return self.layers is None or layer_idx in self.layers

    def add(self, layer_idx: int, probs: torch.Tensor, offset: int = 0) -> None:
        """probs: [H, R, K], R rows of one call against its K keys, key 0 at true position ``offset`` (a
        sliding-window layer's cache holds only its latest keys)."""
        mass = probs.sum(dim=1)  # [H, K]
        held = self.received.get(layer_idx)
        width = offset + mass.shape[1] if held is None else max(held.shape[1], offset + mass.shape[1])
        total = mass.new_zeros(mass.shape[0], width)
        if held is not None:
            total[:, : held.shape[1]] += held
        total[:, offset : offset + mass.shape[1]] += mass
        self.received[layer_idx] = total


@contextmanager
def tapping(model: PreTrainedModel, tap: AttentionTap) -> Iterator[AttentionTap]:
    """Within the block, the model's forward calls report to ``tap``; the attention itself is unchanged. A block
    that switches the model's attention (to another method) ends the tap there."""
    inner = model.config._attn_implementation
    if inner.startswith(TAP_PREFIX):
        raise LongLMError("an attention tap is already on for this model")
    name = _registered(inner)
    modules = switch.attention_modules(model)
    for module in modules:
        setattr(module, _TAP_ATTR, tap)
    model.set_attn_implementation(name)
    try:
        yield tap
    finally:
        if model.config._attn_implementation == name:  # else the block switched the method itself: keep that
            model.set_attn_implementation(inner)
        for module in modules:
            if hasattr(module, _TAP_ATTR):
                delattr(module, _TAP_ATTR)


def _registered(inner: str) -> str:
    """The tap's name over attention ``inner``, registered (with ``inner``'s mask function) on first use."""
    name = TAP_PREFIX + inner
    if name not in AttentionInterface._global_mapping:
        if inner not in AttentionMaskInterface._global_mapping:
            raise LongLMError(f"attention evidence cannot read the {inner!r} attention")
        AttentionInterface.register(name, _wrapper(inner))
        # cast: mypy joins the mapping's differently typed mask functions into the bare "function" type.
        mask = cast(Callable[..., Any], AttentionMaskInterface._global_mapping[inner])
        AttentionMaskInterface.register(name, mask)
    return name


def _wrapper(inner: str) -> Callable[..., Any]:
    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        tap = getattr(module, _TAP_ATTR, None)
        if tap is not None and tap.wants(module.layer_idx):
            start = time.perf_counter()
            _report(tap, module, inner, query, key, kwargs)
            tap.seconds += time.perf_counter() - start
        return _inner_function(module, inner)(module, query, key, value, attention_mask, *args, **kwargs)

    attention.__name__ = attention.__qualname__ = f"tapped_{inner}_attention"
    return attention


def _inner_function(module, inner: str):
    if inner == "eager":  # not in AttentionInterface: each model's modeling module has its own
        return sys.modules[type(module).__module__].eager_attention_forward
    return AttentionInterface._global_mapping[inner]


def _report(tap: AttentionTap, module, inner: str, query, key, kwargs) -> None:
    """query: [B, H, Q, D], the last Q of key [B, Hkv, K, D]."""
    call = switch.call_geometry(query, key, kwargs.get("scaling"), kwargs.get("position_ids"))
    rows = tap.rows(call.first + call.offset, query.shape[2])
    if not rows:
        return
    if query.shape[0] != 1:
        raise LongLMError("attention evidence reads one sequence at a time")
    scores = switch.scorer(inner) or plain_scores
    with torch.no_grad():
        logits = scores(
            module,
            query[:, :, rows.start : rows.stop],
            call.first + rows.start,
            key,
            call,
            softcap=kwargs.get("softcap"),
            sliding_window=kwargs.get("sliding_window"),
            cache_arguments=kwargs,
        )  # [1, H, R, K]
        tap.add(module.layer_idx, torch.softmax(logits, dim=-1)[0], call.offset)


def expand_heads(key: torch.Tensor, heads: int) -> torch.Tensor:
    """key [B, Hkv, K, D] -> [B, heads, K, D] float32, each key head repeated for its query heads."""
    return key.float().repeat_interleave(heads // key.shape[1], dim=1)


def capped(scores: torch.Tensor, softcap: float | None) -> torch.Tensor:
    return softcap * torch.tanh(scores / softcap) if softcap else scores


def causal_fill(logits: torch.Tensor, first_row: int, *, sliding_window: int | None = None) -> torch.Tensor:
    """logits [B, H, R, K] of rows at key indices first_row, first_row + 1, ...: -inf where a row may not look
    (a later key, or one beyond the sliding window)."""
    R, K = logits.shape[2], logits.shape[3]
    i = torch.arange(first_row, first_row + R, device=logits.device)[:, None]
    j = torch.arange(K, device=logits.device)[None, :]
    hidden = j > i
    if sliding_window:
        hidden |= i - j >= sliding_window
    return logits.masked_fill(hidden, float("-inf"))


def plain_scores(module, rows, first_row: int, key, call, *, softcap, sliding_window, cache_arguments):
    """The plain model's logits [B, H, R, K] for query ``rows`` [B, H, R, D] at key indices from ``first_row``."""
    k = expand_heads(key, rows.shape[1])
    logits = capped(rows.float() @ k.transpose(-1, -2) * call.scale, softcap)
    return causal_fill(logits, first_row, sliding_window=sliding_window)
