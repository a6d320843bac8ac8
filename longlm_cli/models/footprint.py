"""What a model takes in memory before it is loaded: its weights in each form (float, int8, int4) and its KV cache
for a number of tokens, read from its files (a GGUF tensor table, safetensors headers, config.json). Torch-free.

Used to admit a run before loading (runtime.loader) and to choose ``--quantize auto`` for a checkpoint. The
figures are estimates within a few percent: the quantized forms count their scales (int4: a bfloat16 scale and
zero per 32 weights; int8: one bfloat16 scale per row), norms and biases count in the float dtype.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..paths import human_size
from .catalogue import gguf_metadata
from .gguf import tensor_names

FORM_BYTES = {"int4": 0.5 + 4 / 32, "int8": 1.0}  # bytes per linear-layer weight, scales included
MARGIN_BYTES = 256 * 1024**2  # the least room kept free for a prefill chunk's activations and the tokenizer
MARGIN_SHARE = 0.1  # and this share of the weights and KV cache (a larger model's chunk and unpacked layer)
_MAX_HEADER = 64 * 1024**2


@dataclass(frozen=True)
class Footprint:
    """Element counts of a model's weights by role, and the shape of its KV cache per token."""

    linear: int  # the 2-D weights of the layers (what --quantize shrinks)
    table: int  # the input embedding and an untied output head (int8 when quantized)
    other: int  # norms, biases and the like (always float)
    kv_per_token: int | None  # cached values per token over all layers (keys and values); None: unknown

    def weights_bytes(self, form: str, float_bytes: int) -> int:
        if form == "none":
            return (self.linear + self.table + self.other) * float_bytes
        return int(self.linear * FORM_BYTES[form] + self.table * 1.0 + self.other * float_bytes)

    def kv_bytes(self, tokens: int, kv_bytes: int) -> int:
        """The KV cache of ``tokens`` kept in ``kv_bytes``-byte values."""
        # on the CPU the extension's re-rotated keys take the place of the true ones (engine/keycache.py)
        return 0 if self.kv_per_token is None else self.kv_per_token * tokens * kv_bytes

    def needed_bytes(self, form: str, float_bytes: int, tokens: int, kv_bytes: int | None = None) -> int:
        """Weights and KV cache (kept in ``kv_bytes``-byte values; None: ``float_bytes``), and room to run them
        (MARGIN_BYTES, MARGIN_SHARE)."""
        held = self.weights_bytes(form, float_bytes) + self.kv_bytes(tokens, kv_bytes or float_bytes)
        return int(held * (1 + MARGIN_SHARE)) + MARGIN_BYTES

    def describe(self, form: str, float_bytes: int, tokens: int, kv_bytes: int | None = None) -> str:
        kv_bytes = kv_bytes or float_bytes
        weights, kv = self.weights_bytes(form, float_bytes), self.kv_bytes(tokens, kv_bytes)
        kind = {"none": f"{8 * float_bytes}-bit floats"}.get(form, form)
        return (
            f"weights {human_size(weights)} ({kind}) + KV cache {human_size(kv)} ({8 * kv_bytes}-bit) "
            f"for {tokens:,} tokens"
        )


def _role(name: str, dims: int) -> str:
    if dims < 2 or "norm" in name or name.endswith("bias"):
        return "other"
    if name in ("token_embd.weight", "output.weight") or any(p in name for p in ("embed_tokens", "wte", "lm_head")):
        return "table"  # GGUF's names of the embedding and the head, then transformers'

    return "linear"


def _footprint(tensors: list[tuple[str, int, int]], kv_per_token: int | None) -> Footprint:
    counts = {"linear": 0, "table": 0, "other": 0}
    for name, elements, dims in tensors:
        counts[_role(name, dims)] += elements
    return Footprint(kv_per_token=kv_per_token, **counts)


def gguf_footprint(path: Path) -> Footprint:
    """From a GGUF file's tensor table and its metadata (layers, key heads, head size)."""
    metadata = gguf_metadata(path)
    with path.open("rb") as stream:
        tensors = tensor_names(stream)
    arch = metadata.get("general.architecture")
    # Any: the values are checked (``known``) before they are multiplied.
    get: Callable[[str], Any] = lambda key: metadata.get(f"{arch}.{key}")  # noqa: E731
    layers, heads = get("block_count"), get("attention.head_count")
    kv_heads = get("attention.head_count_kv") or heads
    key: Any = get("attention.key_length") or (
        get("embedding_length") // heads if heads and get("embedding_length") else None
    )
    value = get("attention.value_length") or key
    known = all(isinstance(v, int) and v > 0 for v in (layers, kv_heads, key, value))
    return _footprint(tensors, layers * kv_heads * (key + value) if known else None)


def checkpoint_footprint(directory: Path) -> Footprint | None:
    """From a model directory's safetensors headers and config.json; None when it has no safetensors."""
    tensors = []
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    for file in files:
        tensors += _safetensors_tensors(file)
    return _footprint(tensors, _kv_per_token(directory / "config.json"))


def _safetensors_tensors(path: Path) -> list[tuple[str, int, int]]:
    with path.open("rb") as stream:
        raw = stream.read(8)
        size = struct.unpack("<Q", raw)[0] if len(raw) == 8 else 0
        if not 0 < size <= _MAX_HEADER:
            raise ValueError(f"{path.name} is not a safetensors file")
        header = json.loads(stream.read(size))
    found = []
    for name, info in header.items():
        if name != "__metadata__":
            elements = 1
            for dim in info["shape"]:
                elements *= dim
            found.append((name, elements, len(info["shape"])))
    return found


def _kv_per_token(config_file: Path) -> int | None:
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config = config.get("text_config", config)
        heads = config["num_attention_heads"]
        kv_heads = config.get("num_key_value_heads") or heads
        head = config.get("head_dim") or config["hidden_size"] // heads
        return config["num_hidden_layers"] * kv_heads * 2 * head
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None


def smallest_fitting(
    footprint: Footprint, float_bytes: int, tokens: int, available: int, kv_bytes: int | None = None
) -> str | None:
    """The least-quantized form (none, int8, int4) whose weights and KV cache fit in ``available`` bytes with
    MARGIN_BYTES to spare; None when none fits."""
    for form in ("none", "int8", "int4"):
        if footprint.needed_bytes(form, float_bytes, tokens, kv_bytes) <= available:
            return form
    return None
