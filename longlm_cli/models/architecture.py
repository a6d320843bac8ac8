"""What the engine can serve, from a model's config: the architectures and RoPE types SelfExtend and Dual
Chunk Attention support (engine/switch.py enforces them, `longlm models` lists them), the layers they refuse,
a model's own Dual Chunk Attention settings, and the shape of its cached keys and values. Torch-free.
"""

from __future__ import annotations

from typing import TypeGuard

ROPE_KEYS = ("rope_scaling", "rope_parameters")
DUAL_CHUNK_KEY = "dual_chunk_attention_config"

# Architectures whose attention applies rotate-half RoPE to q and k before the attention function,
# each covered by a test on a tiny random model (engine/switch.py refuses the others).
SUPPORTED_MODEL_TYPES = (
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen3",
    "phi",
    "phi3",
    "gemma",
    "gemma2",
    "gemma3_text",
)
# Rope types whose angle is a fixed frequency times the position, so rotations compose. "dynamic" and
# "longrope" change their frequencies with the sequence length (cached keys would have been rotated with
# other frequencies), and multimodal rope types use several position axes: those are refused.
COMPOSABLE_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


def text_config(config):
    """The language model's part of a loaded transformers config (a multimodal config nests it)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def cached_head_shape(config) -> tuple[int, int, int]:
    """(key heads, key size, value size) of one layer's cached keys and values, from a loaded config: keys and
    values differ in size under multi-head latent attention (DeepSeek, MiniCPM3)."""
    config = text_config(config)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return kv_heads, getattr(config, "qk_head_dim", None) or head_dim, getattr(config, "v_head_dim", None) or head_dim


_RECURRENT_LAYERS = ("linear_attention", "mamba", "mamba2", "recurrent", "conv", "ssm")
_HYBRID_TYPES = ("jamba", "zamba", "zamba2", "falcon_h1", "bamba", "nemotron_h", "granitemoehybrid", "recurrent_gemma")


def extension_refusal(config: dict) -> str | None:
    """Why SelfExtend and Dual Chunk Attention cannot serve a model exactly, from its config (a dict), or None:
    layers with a recurrent state (linear attention, state-space, convolution), or rotary positions with several
    axes (M-RoPE)."""
    for section in (config.get("text_config"), config):
        if not isinstance(section, dict):
            continue
        kinds = [k for key in ("layer_types", "layers_block_type", "block_types") for k in section.get(key) or ()]
        if section.get("model_type") in _HYBRID_TYPES or any(str(k) in _RECURRENT_LAYERS for k in kinds):
            return (
                "has recurrent layers (linear attention, state-space or convolution) whose memory of the text is not "
                "made of positions: SelfExtend and Dual Chunk Attention regroup positions and cannot extend them"
            )
        rope = [r for key in ROPE_KEYS if isinstance(r := section.get(key), dict)]
        if any("mrope_section" in r or r.get("type") == "mrope" or r.get("rope_type") == "mrope" for r in rope):
            return (
                "uses multimodal rotary positions (M-RoPE: several position axes per token): SelfExtend and Dual "
                "Chunk Attention regroup a single axis"
            )
    return None


def dual_chunk_settings(config: dict) -> tuple[int, int] | None:
    """(chunk_size, local_size) of a config's ``dual_chunk_attention_config`` (Qwen2.5-7B/14B-Instruct-1M: the
    Dual Chunk Attention the model was released to run with beyond its window), looking in text_config too;
    None when it has none, or one with values that cannot be chunk settings."""
    for section in (config, config.get("text_config")):
        dca = section.get(DUAL_CHUNK_KEY) if isinstance(section, dict) else None
        if isinstance(dca, dict):
            chunk, local = dca.get("chunk_size"), dca.get("local_size")
            if is_positive_int(chunk) and isinstance(local, int) and not isinstance(local, bool) and 0 <= local < chunk:
                return chunk, local
    return None


def is_positive_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
