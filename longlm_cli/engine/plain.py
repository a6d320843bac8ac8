"""The plain model's attention on the CPU (no extension method): transformers' own SDPA, except for a decoding
step (one query token, no mask), which runs on the engine's block kernel with each key head's query heads folded
into the rows of one query (blocks.attend).

Why: transformers hands torch's CPU flash kernel one query row per head when decoding, and in bfloat16 that
kernel is several times slower for a one-row query than for two rows (the decode of a bf16 model inside its
window ran at a third of SelfExtend's speed beyond it: benchmarks/engine.py --only plain-decode). Folded, each
key head gets its group's rows, a lone row padded to two (blocks.py); the result is the same softmax attention.
A float32 model whose KV cache is kept in bfloat16 (runtime/kvcache.py) runs here too: decoding reads the
16-bit keys as they are (blocks.attend); a prefill chunk computes on float32 copies of them.

A prefill chunk after cached keys (2 <= Q < K, no padding, full causal attention) gets no mask either: SDPA would
take a [Q, K] boolean mask and turn it into a float one of 4 bytes a cell (a 2,048-token chunk over 8k keys: 64
MiB; over 128k keys: 1 GiB), the largest allocation of an 8k prefill of the embedded model. Here the chunk's rows
attend to the cached keys without a mask and to their own keys under a causal mask, two blocks merged exactly
(blocks.merge). plain_cpu_mask returns None for such a chunk, and a None mask with fewer queries than keys means
exactly that here (transformers' own None for a static cache, top-left aligned, is never returned).
Registered in transformers' AttentionInterface, with plain_cpu_mask as its mask function, under PLAIN_CPU_ATTENTION;
runtime.loader selects it for a bfloat16 model loaded on the CPU with SDPA. No forward method is touched.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, causal_mask_function, sdpa_mask

from . import blocks

PLAIN_CPU_ATTENTION = "longlm_plain_cpu"


def plain_cpu_attention(
    module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
):
    """query [B, H, Q, D]; key, value [B, Hkv, K, D]; returns (output [B, Q, H, D], None) as SDPA's does."""
    Q, K = query.shape[2], key.shape[2]
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    if attention_mask is None and 1 < Q < K:  # a causal chunk after cached keys (plain_cpu_mask)
        return _chunk_after_keys(query, key, value, scale, kwargs.get("softcap")), None
    decoding = Q == 1 and attention_mask is None and not dropout and query.device.type == "cpu"
    if not decoding or kwargs.get("softcap") is not None or kwargs.get("output_attentions"):
        if key.dtype != query.dtype:  # a 16-bit KV cache under float32 queries: SDPA takes one type
            key, value = key.to(query.dtype), value.to(query.dtype)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    out, _ = blocks.attend(query, key, value, scale=scale, causal=False, softcap=None)  # [B, H, 1, D]
    return out.transpose(1, 2).to(query.dtype), None  # bfloat16 out of a 16-bit KV cache: back to the model's


def _chunk_after_keys(query, key, value, scale: float, softcap: float | None) -> torch.Tensor:
    """query [B, H, Q, D], the last Q of key and value [B, Hkv, K, D]: the cached keys without a mask, the chunk's
    own under a causal one, merged. Returns [B, Q, H, D] in the query's dtype."""
    if key.dtype != query.dtype:  # a 16-bit KV cache under float32 queries: computed in float32, as SDPA was
        key, value = key.to(query.dtype), value.to(query.dtype)
    cached = key.shape[2] - query.shape[2]
    past, past_lse = blocks.attend(
        query, key[:, :, :cached], value[:, :, :cached], scale=scale, causal=False, softcap=softcap
    )
    own, own_lse = blocks.attend(
        query, key[:, :, cached:], value[:, :, cached:], scale=scale, causal=True, softcap=softcap
    )
    out, _ = blocks.merge(past, past_lse, own, own_lse)  # [B, H, Q, D] float32
    return out.transpose(1, 2).to(query.dtype)


def plain_cpu_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset=0,
    kv_offset: int = 0,
    mask_function=causal_mask_function,
    attention_mask: torch.Tensor | None = None,
    local_size: int | None = None,
    allow_is_causal_skip: bool = True,
    **kwargs,
):
    """SDPA's mask (transformers' sdpa_mask), except None for a causal chunk that ends the keys (see the module's
    docstring); never None for another chunk with fewer queries than keys."""
    arguments = dict(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset)
    arguments |= dict(kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask)
    arguments |= dict(local_size=local_size, **kwargs)
    if q_length == 1 or q_length == kv_length:
        return sdpa_mask(allow_is_causal_skip=allow_is_causal_skip, **arguments)
    ends_keys = isinstance(q_offset, int) and kv_offset == 0 and q_offset == kv_length - q_length
    unpadded = attention_mask is None or bool(attention_mask[:, :kv_length].all())
    if allow_is_causal_skip and ends_keys and mask_function is causal_mask_function and local_size is None and unpadded:
        return None
    return sdpa_mask(allow_is_causal_skip=False, **arguments)


def use_plain_cpu_attention(model: PreTrainedModel, kv_dtype: torch.dtype | None = None) -> PreTrainedModel:
    """Select PLAIN_CPU_ATTENTION for a model on the CPU that runs SDPA, in bfloat16 or with a KV cache kept in
    ``kv_dtype`` narrower than the model's type (SDPA takes one type); any other model is left as it is. A
    float32 model with a float32 cache keeps transformers' SDPA, the reference the engine is tested against: the
    gain there measured 1.13x, against 3.4x in bfloat16 (benchmarks/engine.py --only plain-decode)."""
    narrow = kv_dtype is not None and kv_dtype != model.dtype
    if model.device.type == "cpu" and (model.dtype == torch.bfloat16 or narrow):
        if model.config._attn_implementation == "sdpa":
            model.set_attn_implementation(PLAIN_CPU_ATTENTION)
    return model


AttentionInterface.register(PLAIN_CPU_ATTENTION, plain_cpu_attention)
AttentionMaskInterface.register(PLAIN_CPU_ATTENTION, plain_cpu_mask)
