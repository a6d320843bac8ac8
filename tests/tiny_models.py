"""Tiny random models for tests, built from configs (no download), and a straightforward SelfExtend reference."""

from __future__ import annotations

import inspect

import torch
import transformers
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

VOCAB = 128
BASE = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
)


def _layers(kinds):
    return dict(num_hidden_layers=len(kinds), layer_types=list(kinds))


ARCHS = {
    "llama": ("llama", {}),
    "llama3-rope": ("llama", dict(rope_parameters=dict(
        rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=32))),
    "mistral": ("mistral", dict(sliding_window=None)),
    "mistral-sliding": ("mistral", dict(sliding_window=40)),
    "mixtral": ("mixtral", dict(sliding_window=None, num_local_experts=2, num_experts_per_tok=1)),
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {}),
    "phi": ("phi", dict(rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.5))),
    "phi3": ("phi3", dict(pad_token_id=0)),
    "gemma": ("gemma", {}),
    "gemma2": ("gemma2", dict(sliding_window=40, attn_logit_softcapping=5.0, final_logit_softcapping=30.0,
                              **_layers(["sliding_attention", "full_attention", "sliding_attention"]))),
    "gemma3": ("gemma3_text", dict(sliding_window=40, **_layers(["sliding_attention", "full_attention"]))),
}


def tiny_model(arch: str, *, seed: int = 0):
    model_type, extra = ARCHS[arch]
    kwargs = {**BASE, **extra}
    if model_type == "phi":
        kwargs.pop("head_dim")
        kwargs["num_key_value_heads"] = kwargs["num_attention_heads"]
    config = transformers.CONFIG_MAPPING[model_type](**kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    # Random init is tiny; widen the weights so attention is peaked and errors would show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "proj" in name and p.ndim == 2:
                p.mul_(3.0)
    return model


# ---------------------------------------------------------------------------------------------------------
# Reference: full score matrices, grouped positions rotated with the model's own RoPE code.

REFERENCE = {}


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _cos_sin(model, module, positions, x):
    rotary = model.model.rotary_emb
    layer_types = getattr(model.config, "layer_types", None)
    args = [x, positions[None]]
    if "layer_type" in inspect.signature(rotary.forward).parameters:
        args.append(layer_types[module.layer_idx])
    cos, sin = rotary(*args)
    return cos[0].float(), sin[0].float()  # [S, R]


def _rerotate(model, module, x, true_pos, new_pos):
    """Undo the rotation at true_pos and rotate at new_pos, with the model's own cos/sin. x: [B, H, S, D]."""
    cos, sin = _cos_sin(model, module, true_pos, x)
    cos2, sin2 = _cos_sin(model, module, new_pos, x)
    R = cos.shape[-1]
    scale2 = (cos[:1] ** 2 + sin[:1] ** 2).mean()  # attention scaling squared (1 for most rope types)
    xr = x[..., :R].float()
    raw = (xr * cos - _rotate_half(xr) * sin) / scale2
    return torch.cat((raw * cos2 + _rotate_half(raw) * sin2, x[..., R:].float()), dim=-1)


def reference_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None,
                        sliding_window=None, position_ids=None, **kwargs):
    model, W, G = REFERENCE["model"], REFERENCE["window"], REFERENCE["group"]
    B, H, Q, D = query.shape
    K = key.shape[2]
    rep = H // key.shape[1]
    k = key.repeat_interleave(rep, 1).float()
    v = value.repeat_interleave(rep, 1).float()
    q = query.float()
    kpos = torch.arange(K)
    qpos = kpos[K - Q:]
    i, j = qpos[:, None], kpos[None, :]
    scores = q @ k.transpose(-1, -2) * scaling
    if softcap:
        scores = softcap * torch.tanh(scores / softcap)
    if sliding_window:
        keep = (j <= i) & (i - j < sliding_window)
    else:
        qg = _rerotate(model, module, query, qpos, qpos // G + W - W // G)
        kg = _rerotate(model, module, key.repeat_interleave(rep, 1), kpos, kpos // G)
        grouped = qg @ kg.transpose(-1, -2) * scaling
        if softcap:
            grouped = softcap * torch.tanh(grouped / softcap)
        scores = torch.where(i - j < W, scores, grouped)
        keep = j <= i
    scores = scores.masked_fill(~keep, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    return out.transpose(1, 2).to(query.dtype), None


AttentionInterface.register("longlm_reference", reference_attention)
AttentionMaskInterface.register("longlm_reference", lambda *a, **k: None)


def reference_logits(model, input_ids, *, window: int, group_size: int):
    """Logits of the reference SelfExtend, restoring the model's attention afterwards."""
    original = model.config._attn_implementation
    REFERENCE.update(model=model, window=window, group=group_size)
    model.set_attn_implementation("longlm_reference")
    try:
        with torch.no_grad():
            return model(input_ids).logits
    finally:
        model.set_attn_implementation(original)


def save_tiny_llama(path, tokenizer, *, window: int = 64, seed: int = 0):
    """Save a tiny random Llama (pretraining window ``window``) with ``tokenizer`` to ``path``, as a model dir."""
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=window, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "proj" in name:
                p.mul_(3.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
