"""Exact block attention: softmax blocks that need no mask or only a causal one, merged by log-sum-exp.

Each block returns its output and log-sum-exp, and blocks are merged exactly, so the result is one softmax over
the union of keys. The neighbour band (true positions) and the grouped part (grouped positions) of SelfExtend
are both expressed as such blocks here; no tensor has both a query axis and a key axis longer than one query
chunk times the keys that chunk can see.
"""

from __future__ import annotations

import math

import torch

KEY_BLOCK = 4096  # keys per block on the plain-torch path (bounds the score tensor)
# A block without a causal mask goes to the CPU flash kernel with the query heads that share a key head folded
# into that head's query axis, so each key and value is read once per key head instead of once per query head
# (the same rows against the same keys: exact). Faster at every layout and length measured, one decoding row
# and prefill chunks alike (benchmarks/engine.py --only gqa); a causal block cannot fold, its mask follows the
# row. benchmarks/engine.py switches it off to time the unfolded kernel side by side.
FOLD_QUERY_HEADS = True
# In bfloat16 that kernel runs a one-row query several times slower than a two-row one (a fallback for a lone
# row, seen on an AVX-512 bf16 EPYC; on a whole model: benchmarks/engine.py --only plain-decode --dtype
# bfloat16), so a lone row (a decoding step of a model whose query heads each have their own key head) is sent
# twice and one copy kept: rows are independent in the kernel.
# The kernel shares its work among threads by (batch, key head): 3 key heads on 2 threads leave one idle a third
# of the time. For a decoding step, the keys are then cut into parts that go to the kernel as a batch (views, no
# copy), enough for every thread to get an equal share, and the parts merged by log-sum-exp (exact): 1.4x faster
# per layer for the embedded model's 3 key heads on 2 threads (benchmarks/kvstore.py); 8 key heads are not split.
SPLIT_MIN_KEYS = 1024  # a part at least this long (the kernel's own key blocks are 512)
SPLIT_MAX_ROWS = 16  # decoding rows: a prefill chunk has enough work in its query blocks


def attend(q, k, v, *, scale: float, causal: bool, softcap: float | None):
    """Softmax attention of one block, with its log-sum-exp for exact merging.

    q: [B, H, Q, D]; k, v: [B, Hkv, K, D] (H a multiple of Hkv). ``causal``: query t sees keys s <= t
    (top-left aligned). Returns out [B, H, Q, D] and lse [B, H, Q] float32.

    Keys and values kept in bfloat16 for float32 queries (a 16-bit KV cache, runtime/kvcache.py) go to the CPU
    kernel as they are, with the queries rounded to bfloat16: the kernel accumulates in float32, and converting
    the keys instead would write and read them again at twice the size (measured 1.4x to 7x slower for one
    decoding row, and no faster for a prefill chunk even where bf16 arithmetic is emulated: benchmarks/kvstore.py).
    """
    if q.device.type == "cpu" and softcap is None:
        q = q.to(k.dtype)  # the same tensor when the types agree
        if q.dtype in (torch.float32, torch.bfloat16):
            if not causal and FOLD_QUERY_HEADS:
                return _attend_folded(q, k, v, scale=scale)
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)
    return attend_torch(q, k, v, scale=scale, causal=causal, softcap=softcap)


def _attend_folded(q, k, v, *, scale: float):
    """``attend`` of a block without a mask on the CPU flash kernel, the query heads of each key head as the
    rows of one query axis (heads are grouped key-head-major, as transformers' repeat_kv expands them)."""
    B, H, Q, D = q.shape
    hkv = k.shape[1]
    rows = q.reshape(B, hkv, H // hkv * Q, D)
    lone = rows.shape[2] == 1 and q.dtype == torch.bfloat16
    if lone:  # sent twice, one copy kept (see FOLD_QUERY_HEADS)
        rows = rows.repeat(1, 1, 2, 1)  # a contiguous copy: an expanded (stride 0) view is slower
    parts = key_parts(B * hkv, k.shape[2], rows.shape[2])
    if parts > 1:
        out, lse = _attend_split(rows, k, v, parts, scale=scale)
    else:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(rows, k, v, 0.0, False, scale=scale)
    if lone:
        out, lse = out[:, :, :1], lse[:, :, :1]
    return out.reshape(B, H, Q, D), lse.reshape(B, H, Q)  # out [B, Hkv, rep*Q, D], lse [B, Hkv, rep*Q]


def key_parts(tasks: int, keys: int, rows: int) -> int:
    """Into how many parts to cut ``keys`` so that ``tasks`` (batch x key heads) times the parts share evenly
    among torch's threads; 1 for a prefill chunk, for keys too few, and when the tasks already share evenly."""
    threads = torch.get_num_threads()
    parts = threads // math.gcd(tasks, threads)
    if parts < 2 or rows > SPLIT_MAX_ROWS or keys < parts * SPLIT_MIN_KEYS:
        return 1
    return parts


def _attend_split(rows, k, v, parts: int, *, scale: float):
    """The flash kernel over ``parts`` equal parts of the keys at once (a batch of views), merged exactly; the
    last keys that do not fill a part are one more block. rows: [B, Hkv, R, D]; k, v: [B, Hkv, K, D]."""
    B = rows.shape[0]
    size = k.shape[2] // parts
    even = parts * size

    def batched(x: torch.Tensor) -> torch.Tensor:  # [B, Hkv, even, D] -> [parts * B, Hkv, size, D]
        return x[:, :, :even].unflatten(2, (parts, size)).permute(2, 0, 1, 3, 4).flatten(0, 1)

    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    out, lse = flash(rows.repeat(parts, 1, 1, 1), batched(k), batched(v), 0.0, False, scale=scale)
    out, lse = out.unflatten(0, (parts, B)), lse.unflatten(0, (parts, B))  # [parts, B, Hkv, R, D], [parts, B, Hkv, R]
    merged, total = out[0].float(), lse[0]
    for part in range(1, parts):
        merged, total = merge(merged, total, out[part], lse[part])
    if even < k.shape[2]:
        rest, rest_lse = flash(rows, k[:, :, even:], v[:, :, even:], 0.0, False, scale=scale)
        merged, total = merge(merged, total, rest, rest_lse)
    return merged.to(rows.dtype), total


def attend_torch(q, k, v, *, scale: float, causal: bool, softcap: float | None):
    """Plain-torch version of ``attend`` (softcapping, other devices); keys in blocks of KEY_BLOCK."""
    B, H, Q, D = q.shape
    hkv, K = k.shape[1], k.shape[2]
    rep = H // hkv
    qg = q.float().reshape(B, hkv, rep * Q, D)
    out = lse = None
    for start in range(0, K, KEY_BLOCK):
        stop = min(K, start + KEY_BLOCK)
        scores = (qg @ k[:, :, start:stop].float().transpose(-1, -2)) * scale  # [B, Hkv, rep*Q, k]
        if softcap is not None:
            scores = softcap * torch.tanh(scores / softcap)
        scores = scores.view(B, hkv, rep, Q, stop - start)
        if causal:
            t = torch.arange(Q, device=q.device)[:, None]
            s = torch.arange(start, stop, device=q.device)[None, :]
            scores = scores.masked_fill(s > t, float("-inf"))
        block_lse = torch.logsumexp(scores, dim=-1)  # [B, Hkv, rep, Q]
        probs = torch.exp(scores - block_lse[..., None]).nan_to_num_(0.0)
        block_out = probs.view(B, hkv, rep * Q, stop - start) @ v[:, :, start:stop].float()
        block_out = block_out.view(B, H, Q, D)
        block_lse = block_lse.view(B, H, Q)
        if out is None:
            out, lse = block_out, block_lse
        else:
            out, lse = merge(out, lse, block_out, block_lse)
    assert out is not None  # attention is over at least one key (K > 0), so the loop ran
    return out.to(q.dtype), lse


def merge(out_a, lse_a, out_b, lse_b):
    """Combine two softmax-attention results over disjoint key sets into the result over their union."""
    lse = torch.logaddexp(lse_a, lse_b)
    wa = torch.exp(lse_a - lse)[..., None]
    wb = torch.exp(lse_b - lse)[..., None]
    return out_a.float() * wa + out_b.float() * wb, lse


class Accumulator:
    """Running (output, log-sum-exp) for every query row of one attention call."""

    def __init__(self, B: int, H: int, Q: int, D: int, device):
        self.out = torch.zeros(B, H, Q, D, dtype=torch.float32, device=device)
        self.lse = torch.full((B, H, Q), float("-inf"), dtype=torch.float32, device=device)

    def set(self, rows: slice, out: torch.Tensor, lse: torch.Tensor) -> None:
        """The first block of these rows: no merge needed."""
        self.out[:, :, rows] = out
        self.lse[:, :, rows] = lse

    def add(self, rows: slice, out: torch.Tensor, lse: torch.Tensor) -> None:
        merged_out, merged_lse = merge(self.out[:, :, rows], self.lse[:, :, rows], out, lse)
        self.out[:, :, rows] = merged_out
        self.lse[:, :, rows] = merged_lse


def neighbour_blocks(acc, rows: slice, q, k, v, a: int, window: int, *, scale, softcap):
    """Keys with 0 <= i - j < window for the C queries i in [a, a + C); needs C <= max(1, window - 1).

    q: [B, H, C, D] (these rows); k, v: all keys [B, Hkv, K, D] indexed by position. Sets ``rows`` of acc.
    """
    C = q.shape[2]
    lo = a - window + 1  # oldest key the first query of the chunk can see
    if C == 1:  # decoding: one block, no mask
        out, lse = attend(
            q, k[:, :, max(0, lo) : a + 1], v[:, :, max(0, lo) : a + 1], scale=scale, causal=False, softcap=softcap
        )
        acc.set(rows, out, lse)
        return
    # Keys [a, a + C): top-left causal.
    out, lse = attend(q, k[:, :, a : a + C], v[:, :, a : a + C], scale=scale, causal=True, softcap=softcap)
    acc.set(rows, out, lse)
    if window < 2:
        return
    # Keys [lo + C, a): seen by every row.
    full_lo = max(0, lo + C)
    if full_lo < a:
        out, lse = attend(q, k[:, :, full_lo:a], v[:, :, full_lo:a], scale=scale, causal=False, softcap=softcap)
        acc.add(rows, out, lse)
    # Keys [lo, lo + C): row t sees key s iff s >= t. Reversing both axes turns this into top-left causal.
    tri_lo, tri_hi = max(0, lo), max(0, min(lo + C, a))
    if tri_lo < tri_hi:
        kf = k[:, :, tri_lo:tri_hi].flip(2)
        vf = v[:, :, tri_lo:tri_hi].flip(2)
        out, lse = attend(q.flip(2), kf, vf, scale=scale, causal=True, softcap=softcap)
        acc.add(rows, out.flip(2), lse.flip(-1))


def group_blocks(acc, rows: slice, qg, kg, v, a: int, window: int, *, scale, softcap):
    """Keys with i - j >= window, scored with grouped q and k, for queries [a, a + C) with a >= window.

    qg: [B, H, C, D] grouped queries; kg: grouped keys by position. Merges into ``rows`` of acc.
    """
    C = qg.shape[2]
    if C == 1:  # decoding: one block, no mask
        hi = a - window + 1
        out, lse = attend(qg, kg[:, :, :hi], v[:, :, :hi], scale=scale, causal=False, softcap=softcap)
        acc.add(rows, out, lse)
        return
    # Keys [0, a - W): seen by every row.
    if a - window > 0:
        hi = a - window
        out, lse = attend(qg, kg[:, :, :hi], v[:, :, :hi], scale=scale, causal=False, softcap=softcap)
        acc.add(rows, out, lse)
    # Keys [a - W, a + C - W): top-left causal against queries [a, a + C).
    lo, hi = a - window, a + C - window
    out, lse = attend(qg, kg[:, :, lo:hi], v[:, :, lo:hi], scale=scale, causal=True, softcap=softcap)
    acc.add(rows, out, lse)
