"""The CUDA path of SelfExtend: FlexAttention with block masks, the band and the grouped part merged by
log-sum-exp. On the CPU it runs only eagerly, in tests."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .blocks import merge
from .rope import grouped_query_delta, rotate

_FLEX_COMPILED: dict[str, Callable] = {}  # device type: the compiled flex_attention


def _flex_fn(device_type: str):
    from torch.nn.attention.flex_attention import flex_attention

    if device_type != "cuda":
        return flex_attention  # eager: materialises scores, fine for the small inputs of tests
    if "cuda" not in _FLEX_COMPILED:
        _FLEX_COMPILED["cuda"] = torch.compile(flex_attention, dynamic=False)
    return _FLEX_COMPILED["cuda"]


def _flex_block(q, k, v, *, scale, softcap, mask_mod):
    """One FlexAttention call with its log-sum-exp. q: [B, H, Q, D]; k, v: [B, Hkv, K, D]."""
    from torch.nn.attention.flex_attention import AuxRequest, create_block_mask

    Q, K = q.shape[2], k.shape[2]
    block_mask = None if mask_mod is None else create_block_mask(mask_mod, None, None, Q, K, device=q.device)
    score_mod = None
    if softcap is not None:

        def score_mod(score, b, h, q_idx, kv_idx):
            return softcap * torch.tanh(score / softcap)

    out, aux = _flex_fn(q.device.type)(
        q,
        k,
        v,
        score_mod=score_mod,
        block_mask=block_mask,
        scale=scale,
        enable_gqa=q.shape[1] != k.shape[1],
        return_aux=AuxRequest(lse=True),
    )
    return out, aux.lse


def flex_selfextend(query, key, value, kg, first: int, band: int, group, rope, offset: int, *, scale, softcap):
    """The whole call in two FlexAttention calls: the band and the grouped part, merged by log-sum-exp.

    query: [B, H, Q, D], already log-scaled when ``scale_base`` is set (selfextend_attention scales it once for
    both paths, so the band and the grouped part see the same scaled rows); key, value, kg: as in
    selfextend_attention. Returns (out [B, H, Q, D], lse [B, H, Q]).
    """
    K = key.shape[2]

    def band_mask(b, h, q_idx, kv_idx):
        i = q_idx + first
        return (kv_idx <= i) & (i - kv_idx < band)

    out, lse = _flex_block(query, key, value, scale=scale, softcap=softcap, mask_mod=band_mask)
    if kg is None or K <= band:
        return out, lse
    start = max(first, band)  # first query with grouped keys
    rows = slice(start - first, K - first)
    pos = torch.arange(start, K, device=query.device) + offset
    qg = rotate(query[:, :, rows], grouped_query_delta(pos, group, band), rope)

    def group_mask(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx + start - band

    g_out, g_lse = _flex_block(qg, kg, value[:, :, : kg.shape[2]], scale=scale, softcap=softcap, mask_mod=group_mask)
    merged_out, merged_lse = merge(out[:, :, rows], lse[:, :, rows], g_out, g_lse)
    out = out.float()
    out[:, :, rows] = merged_out
    lse = lse.clone()
    lse[:, :, rows] = merged_lse
    return out, lse
