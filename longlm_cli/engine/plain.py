"""The plain model's attention on the CPU (no extension method): transformers' own SDPA, except for a decoding
step (one query token, no mask), which runs on the engine's block kernel with each key head's query heads folded
into the rows of one query (blocks.attend).

Why: transformers hands torch's CPU flash kernel one query row per head when decoding, and in bfloat16 that
kernel is several times slower for a one-row query than for two rows (the decode of a bf16 model inside its
window ran at a third of SelfExtend's speed beyond it: benchmarks/engine.py --only plain-decode). Folded, each
key head gets its group's rows, a lone row padded to two (blocks.py); the result is the same softmax attention.
A float32 model whose KV cache is kept in bfloat16 (runtime/kvcache.py) runs here too: decoding reads the
16-bit keys as they are (blocks.attend); a prefill chunk hands SDPA float32 copies of them.
Registered in transformers' AttentionInterface, with SDPA's mask function, under PLAIN_CPU_ATTENTION;
runtime.loader selects it for a bfloat16 model loaded on the CPU with SDPA. No forward method is touched.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

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
    decoding = query.shape[2] == 1 and attention_mask is None and not dropout and query.device.type == "cpu"
    if not decoding or kwargs.get("softcap") is not None or kwargs.get("output_attentions"):
        if key.dtype != query.dtype:  # a 16-bit KV cache under float32 queries: SDPA takes one type
            key, value = key.to(query.dtype), value.to(query.dtype)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    out, _ = blocks.attend(query, key, value, scale=scale, causal=False, softcap=None)  # [B, H, 1, D]
    return out.transpose(1, 2).to(query.dtype), None  # bfloat16 out of a 16-bit KV cache: back to the model's


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
AttentionMaskInterface.register(PLAIN_CPU_ATTENTION, sdpa_mask)
