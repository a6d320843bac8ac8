"""SelfExtend attention (Jin et al., "LLM Maybe LongLM", arXiv 2401.01325) for Hugging Face causal LMs.

For a query at position i and a key at position j <= i:
  * i - j <  W: the score uses q and k rotated at their true positions (the neighbour band);
  * i - j >= W: q is rotated at ``i // G + W - W // G`` and k at ``j // G`` (the grouped part).
Both kinds of score go into one softmax per row.

The engine plugs into transformers through its own registries: an attention function registered in
``AttentionInterface`` and a mask function in ``AttentionMaskInterface``, selected per model with
``model.set_attn_implementation``. No forward method of any model class is touched.

Attention functions receive q and k already rotated at their true positions. RoPE rotations compose
(R(a) R(b) = R(a + b)), so the grouped versions are obtained by rotating again by the position difference,
in float32 with the angles computed in float64.

The work is split into blocks that each need no mask, or only a causal (triangular) mask. Each block returns
its output and log-sum-exp, and blocks are merged exactly, so the result is one softmax over the union of
keys. No tensor ever has both a query axis and a key axis longer than one query chunk times the keys that
chunk can see.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface

from .defaults import DEFAULT_QUERY_CHUNK
from .errors import LongLMError, UnsupportedModelError

ATTN_NAME = "longlm_selfextend"
_LAYER_ATTR = "_longlm_selfextend"
_ORIGINAL_ATTR = "_longlm_original_attn_implementation"
KEY_BLOCK = 4096  # keys per block on the plain-torch path (bounds the score tensor)

# Architectures whose attention applies rotate-half RoPE to q and k before the attention function,
# each covered by a test on a tiny random model.
SUPPORTED_MODEL_TYPES = (
    "llama", "mistral", "mixtral", "qwen2", "qwen3", "phi", "phi3", "gemma", "gemma2", "gemma3_text",
)
# Rope types whose angle is a fixed frequency times the position, so rotations compose. "dynamic" and
# "longrope" change their frequencies with the sequence length (cached keys would have been rotated with
# other frequencies), and multimodal rope types use several position axes: those are refused.
COMPOSABLE_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


@dataclass(frozen=True)
class SelfExtendConfig:
    """SelfExtend settings: neighbour window W and group size G."""

    group_size: int
    window: int
    query_chunk: int = DEFAULT_QUERY_CHUNK


@dataclass(frozen=True)
class LayerRope:
    """What a layer needs to re-rotate: the RoPE inverse frequencies (rotate-half over the first 2*F dims)."""

    inv_freq: torch.Tensor  # [F] float32

    @property
    def rotary_dim(self) -> int:
        return 2 * self.inv_freq.numel()


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
# Rotation


def rotate(x: torch.Tensor, delta: torch.Tensor, rope: LayerRope) -> torch.Tensor:
    """Rotate ``x`` (already rotated at some positions) by ``delta`` more positions, per row.

    x: [B, H, S, D]; delta: [S] integer. Angles are computed in float64, the rotation in float32.
    """
    half = rope.inv_freq.numel()
    angles = delta.to(torch.float64)[:, None] * rope.inv_freq.to(x.device, torch.float64)[None, :]  # [S, F]
    cos = angles.cos().to(torch.float32)
    sin = angles.sin().to(torch.float32)
    xr = x[..., : 2 * half].float()
    x1, x2 = xr[..., :half], xr[..., half:]
    rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)
    if 2 * half == x.shape[-1]:
        return rotated
    return torch.cat((rotated, x[..., 2 * half :]), dim=-1)


def grouped_query_delta(pos: torch.Tensor, group: int, window: int) -> torch.Tensor:
    """Shift taking a query from its true position i to ``i // G + W - W // G``."""
    return pos // group + window - window // group - pos


def grouped_key_delta(pos: torch.Tensor, group: int) -> torch.Tensor:
    """Shift taking a key from its true position j to ``j // G``."""
    return pos // group - pos


# ---------------------------------------------------------------------------------------------------------
# Block attention with log-sum-exp


def _attend(q, k, v, *, scale: float, causal: bool, softcap: float | None):
    """Softmax attention of one block, with its log-sum-exp for exact merging.

    q: [B, H, Q, D]; k, v: [B, Hkv, K, D] (H a multiple of Hkv). ``causal``: query t sees keys s <= t
    (top-left aligned). Returns out [B, H, Q, D] in q's dtype and lse [B, H, Q] float32.
    """
    if q.device.type == "cpu" and softcap is None and q.dtype in (torch.float32, torch.bfloat16):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, causal, scale=scale
        )
        return out, lse
    return _attend_torch(q, k, v, scale=scale, causal=causal, softcap=softcap)


def _attend_torch(q, k, v, *, scale: float, causal: bool, softcap: float | None):
    """Plain-torch version of ``_attend`` (softcapping, other devices); keys in blocks of KEY_BLOCK."""
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
            out, lse = _merge(out, lse, block_out, block_lse)
    return out.to(q.dtype), lse


def _merge(out_a, lse_a, out_b, lse_b):
    """Combine two softmax-attention results over disjoint key sets into the result over their union."""
    lse = torch.logaddexp(lse_a, lse_b)
    wa = torch.exp(lse_a - lse)[..., None]
    wb = torch.exp(lse_b - lse)[..., None]
    return out_a.float() * wa + out_b.float() * wb, lse


class _Accumulator:
    """Running (output, log-sum-exp) for every query row of one attention call."""

    def __init__(self, B: int, H: int, Q: int, D: int, device):
        self.out = torch.zeros(B, H, Q, D, dtype=torch.float32, device=device)
        self.lse = torch.full((B, H, Q), float("-inf"), dtype=torch.float32, device=device)

    def set(self, rows: slice, out: torch.Tensor, lse: torch.Tensor) -> None:
        """The first block of these rows: no merge needed."""
        self.out[:, :, rows] = out
        self.lse[:, :, rows] = lse

    def add(self, rows: slice, out: torch.Tensor, lse: torch.Tensor) -> None:
        merged_out, merged_lse = _merge(self.out[:, :, rows], self.lse[:, :, rows], out, lse)
        self.out[:, :, rows] = merged_out
        self.lse[:, :, rows] = merged_lse


# ---------------------------------------------------------------------------------------------------------
# The two score sets


def _neighbour_blocks(acc, rows: slice, q, k, v, a: int, window: int, *, scale, softcap):
    """Keys with 0 <= i - j < window for the C queries i in [a, a + C); needs C <= max(1, window - 1).

    q: [B, H, C, D] (these rows); k, v: all keys [B, Hkv, K, D] indexed by position. Sets ``rows`` of acc.
    """
    C = q.shape[2]
    lo = a - window + 1  # oldest key the first query of the chunk can see
    if C == 1:  # decoding: one block, no mask
        out, lse = _attend(q, k[:, :, max(0, lo) : a + 1], v[:, :, max(0, lo) : a + 1], scale=scale,
                           causal=False, softcap=softcap)
        acc.set(rows, out, lse)
        return
    # Keys [a, a + C): top-left causal.
    out, lse = _attend(q, k[:, :, a : a + C], v[:, :, a : a + C], scale=scale, causal=True, softcap=softcap)
    acc.set(rows, out, lse)
    if window < 2:
        return
    # Keys [lo + C, a): seen by every row.
    full_lo = max(0, lo + C)
    if full_lo < a:
        out, lse = _attend(q, k[:, :, full_lo:a], v[:, :, full_lo:a], scale=scale, causal=False, softcap=softcap)
        acc.add(rows, out, lse)
    # Keys [lo, lo + C): row t sees key s iff s >= t. Reversing both axes turns this into top-left causal.
    tri_lo, tri_hi = max(0, lo), max(0, min(lo + C, a))
    if tri_lo < tri_hi:
        kf = k[:, :, tri_lo:tri_hi].flip(2)
        vf = v[:, :, tri_lo:tri_hi].flip(2)
        out, lse = _attend(q.flip(2), kf, vf, scale=scale, causal=True, softcap=softcap)
        acc.add(rows, out.flip(2), lse.flip(-1))


def _group_blocks(acc, rows: slice, qg, kg, v, a: int, window: int, *, scale, softcap):
    """Keys with i - j >= window, scored with grouped q and k, for queries [a, a + C) with a >= window.

    qg: [B, H, C, D] grouped queries; kg: grouped keys by position. Merges into ``rows`` of acc.
    """
    C = qg.shape[2]
    if C == 1:  # decoding: one block, no mask
        hi = a - window + 1
        out, lse = _attend(qg, kg[:, :, :hi], v[:, :, :hi], scale=scale, causal=False, softcap=softcap)
        acc.add(rows, out, lse)
        return
    # Keys [0, a - W): seen by every row.
    if a - window > 0:
        hi = a - window
        out, lse = _attend(qg, kg[:, :, :hi], v[:, :, :hi], scale=scale, causal=False, softcap=softcap)
        acc.add(rows, out, lse)
    # Keys [a - W, a + C - W): top-left causal against queries [a, a + C).
    lo, hi = a - window, a + C - window
    out, lse = _attend(qg, kg[:, :, lo:hi], v[:, :, lo:hi], scale=scale, causal=True, softcap=softcap)
    acc.add(rows, out, lse)


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
# CUDA: FlexAttention with block masks


def _use_flex(query: torch.Tensor) -> bool:
    """FlexAttention on CUDA; the CPU keeps the fused kernel blocks above (flex on CPU is only for tests)."""
    return query.device.type == "cuda"


_FLEX_COMPILED = {}


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
    out, aux = _flex_fn(q.device.type)(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale,
                                       enable_gqa=q.shape[1] != k.shape[1], return_aux=AuxRequest(lse=True))
    return out, aux.lse


def _flex_selfextend(query, key, value, kg, first: int, band: int, group, rope, offset: int, *, scale, softcap):
    """The whole call in two FlexAttention calls: the band and the grouped part, merged by log-sum-exp.

    query: [B, H, Q, D]; key, value, kg: as in selfextend_attention. Returns (out [B, H, Q, D], lse [B, H, Q]).
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

    g_out, g_lse = _flex_block(qg, kg, value[:, :, : kg.shape[2]], scale=scale, softcap=softcap,
                               mask_mod=group_mask)
    merged_out, merged_lse = _merge(out[:, :, rows], lse[:, :, rows], g_out, g_lse)
    out = out.float()
    out[:, :, rows] = merged_out
    lse = lse.clone()
    lse[:, :, rows] = merged_lse
    return out, lse


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
    spec: _LayerSpec | None = getattr(module, _LAYER_ATTR, None)
    if spec is None:
        raise LongLMError("the model uses longlm_selfextend attention but apply_selfextend() did not set it up")
    if dropout:
        raise LongLMError("SelfExtend attention is for inference; call model.eval() first")
    if isinstance(attention_mask, torch.Tensor):
        raise LongLMError("SelfExtend attention does not take an explicit attention mask (padded batches)")
    B, H, Q, D = query.shape
    K = key.shape[2]
    first = K - Q  # index of the first query among the keys
    offset = 0 if position_ids is None else int(position_ids[0, 0]) - first  # true position of key 0
    scale = D**-0.5 if scaling is None else scaling
    layer_window = sliding_window if (sliding_window or spec.rope is None) else None
    if layer_window:  # sliding-window layer: the plain model's band, positions untouched
        band, group = layer_window, None
    else:
        band, group = spec.config.window, spec.config.group_size
    # The CPU kernel is about twice as fast on contiguous [B, H, S, D] blocks as on the transposed views
    # the attention modules hand over; one copy per layer call pays for itself.
    key, value = key.contiguous(), value.contiguous()

    kg = None
    if group is not None and K - band > 0:
        kg = _grouped_keys(key, K - band, first, spec, offset, getattr(module, "layer_idx", id(module)),
                           longlm_grouped_keys)

    if _use_flex(query):
        out, _ = _flex_selfextend(query, key, value, kg, first, band, group, spec.rope, offset, scale=scale,
                                  softcap=softcap)
        return out.transpose(1, 2).to(query.dtype), None

    acc = _Accumulator(B, H, Q, D, query.device)
    # Neighbour band, in chunks small enough that each chunk's band splits into two triangles and a block.
    chunk = max(1, min(spec.config.query_chunk, band - 1))
    for a in range(first, K, chunk):
        rows = slice(a - first, min(K, a + chunk) - first)
        _neighbour_blocks(acc, rows, query[:, :, rows].contiguous(), key, value, a, band,
                          scale=scale, softcap=softcap)
    # Grouped part: a causal shape shifted by W, so chunks can be large.
    if kg is not None:
        chunk = spec.config.query_chunk
        for a in range(max(first, band), K, chunk):
            rows = slice(a - first, min(K, a + chunk) - first)
            pos = torch.arange(rows.start, rows.stop, device=query.device) + first + offset
            qg = rotate(query[:, :, rows], grouped_query_delta(pos, group, band), spec.rope).contiguous()
            _group_blocks(acc, rows, qg, kg, value, a, band, scale=scale, softcap=softcap)
    output = acc.out.transpose(1, 2).to(query.dtype)  # [B, Q, H, D]
    return output, None


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
    return [m for m in model.modules() if hasattr(m, "inv_freq") or any(
        name.endswith("_inv_freq") and not name.endswith("original_inv_freq") for name, _ in m.named_buffers(recurse=False)
    )]


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
    return [m for m in model.modules()
            if hasattr(m, "layer_idx") and (hasattr(m, "q_proj") or hasattr(m, "qkv_proj"))]


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


def apply_selfextend(model: PreTrainedModel, *, group_size: int, window: int,
                     query_chunk: int = DEFAULT_QUERY_CHUNK) -> PreTrainedModel:
    """Switch a loaded transformers causal LM to SelfExtend attention (calling it again reconfigures it).

    ``window`` is the neighbour window W and ``group_size`` the group size G. Layers with a sliding window
    (Gemma2/Gemma3 local layers, Mistral with ``sliding_window``) keep the plain model's attention: their
    relative distances never exceed the sliding window, so they have nothing to extend.
    Returns the model, modified in place.
    """
    if not isinstance(group_size, int) or group_size < 1:
        raise LongLMError(f"group size must be an integer >= 1, got {group_size!r}")
    if not isinstance(window, int) or window < 1:
        raise LongLMError(f"window must be an integer >= 1, got {window!r}")
    if query_chunk < 1:
        raise LongLMError(f"query_chunk must be >= 1, got {query_chunk!r}")
    _check_supported(model)
    config = _text_config(model)
    settings = SelfExtendConfig(group_size=group_size, window=window, query_chunk=query_chunk)
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
