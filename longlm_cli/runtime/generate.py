"""Chunked prefill and token-by-token decoding over one KV cache, with progress and streaming."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from transformers import DynamicCache

from ..defaults import DEFAULT_PREFILL_CHUNK
from ..engine.switch import key_cache_arguments
from ..errors import ModelError, PlanError
from ..paths import human_size
from . import loader
from .kvcache import growing_cache, kv_dtype_of, reserved_bytes
from .kvcache import room as buffer_room
from .precision import decode_kernels
from .sampling import SamplingSettings, TextStream, logits_processors, next_token

__all__ = ["SamplingSettings", "Session", "decode", "prefill"]  # SamplingSettings: re-exported for callers

ProgressFn = Callable[[int, int], None]  # (tokens done, tokens total)


@dataclass
class Session:
    """A KV cache and the side state the extension method keeps with it (its re-rotated keys): one
    conversation with one model."""

    model: Any
    cache: DynamicCache
    extra: dict  # forward keyword arguments: the extension method's key cache, or nothing
    embedding_rows: int = 0  # the model's input embeddings (read once, on the first forward)

    @classmethod
    def start(cls, model, reserve: int = 0) -> Session:
        """A new session; ``reserve``: the tokens it is planned to hold (prompt plus answer), allocated at once,
        in the storage type set for the model (runtime/kvcache.py: kv_dtype_of). Refused, before anything is
        allocated, when the machine's memory cannot hold them."""
        cache = growing_cache(model.config, reserve, kv_dtype_of(model))
        extra = key_cache_arguments(model, reserve, kv=cache)
        check_memory(model, cache, extra, reserve)
        return cls(model=model, cache=cache, extra=extra)

    @property
    def kv_dtype(self) -> torch.dtype:
        """What the KV cache keeps keys and values in."""
        return kv_dtype_of(self.model)

    @property
    def length(self) -> int:
        return self.cache.get_seq_length()

    @property
    def room(self) -> int:
        """The tokens its KV cache's buffers have room for now (at least ``length``)."""
        return buffer_room(self.cache)

    @property
    def rotates_in_place(self) -> bool:
        """Whether the extension method keeps its re-rotated keys in the KV cache's own buffer."""
        return any(key_cache.in_place for key_cache in self.extra.values())

    def rotated_in_place(self) -> dict[int, int]:
        """Per layer, how many of the KV cache's first keys are re-rotated in place (what an entry of this cache
        must record, see RotatedKeyCache)."""
        counts: dict[int, int] = {}
        for key_cache in self.extra.values():
            counts |= key_cache.in_place_counts()
        return counts

    def adopt_rotated(self, counts: dict[int, int]) -> None:
        """The KV cache was filled with keys re-rotated in place as ``counts`` says (a document-cache entry)."""
        for key_cache in self.extra.values():
            if key_cache.in_place:
                key_cache.adopt(counts)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Run ``input_ids`` [1, n] after what the cache holds; return the last position's logits [1, V]."""
        if not self.embedding_rows:
            self.embedding_rows = self.model.get_input_embeddings().num_embeddings
        rows = self.embedding_rows
        if input_ids.numel() and int(input_ids.max()) >= rows:  # an added token the model has no embedding for
            raise ModelError(
                f"the prompt holds token id {int(input_ids.max()):,}, but the model has only {rows:,} embeddings: "
                "its tokenizer adds tokens the model does not know"
            )
        with torch.inference_mode(), decode_kernels(self.model.dtype, self.model.device.type, input_ids.shape[1]):
            out = self.model(input_ids, past_key_values=self.cache, use_cache=True, logits_to_keep=1, **self.extra)
        return out.logits[:, -1].float()


def check_memory(model, cache: DynamicCache, extra: dict, reserve: int) -> None:
    """One clear error instead of the system killing the process minutes into a prefill: the reserved buffers
    must fit in the memory available now (the weights are already loaded). CPU only: a GPU's memory is its own."""
    if not reserve or model.device.type != "cpu":
        return
    rotated = any(not key_cache.in_place for key_cache in extra.values())  # a copy of the keys of their own
    needed = reserved_bytes(model.config, cache, reserve, kv_dtype_of(model), rotated_keys=rotated)
    free = loader.available_memory()
    if needed is not None and free is not None and needed > free:
        what = "its KV cache and re-rotated keys" if rotated else "its KV cache"
        raise PlanError(
            f"holding {reserve:,} tokens needs about {human_size(needed)} of memory for {what}; "
            f"{human_size(free)} is available: use a shorter input or a smaller model"
        )


def prefill(
    session: Session, input_ids: torch.Tensor, *, chunk: int = DEFAULT_PREFILL_CHUNK, progress: ProgressFn | None = None
) -> torch.Tensor:
    """Feed ``input_ids`` [1, n] in chunks of ``chunk`` tokens; return the last logits [1, V]."""
    total = input_ids.shape[1]
    logits = None
    if progress is not None:
        progress(0, total)
    for lo in range(0, total, chunk):
        logits = session.forward(input_ids[:, lo : lo + chunk])
        if progress is not None:
            progress(min(total, lo + chunk), total)
    return cast(torch.Tensor, logits)  # None only for an empty input, whose logits no caller reads


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if value is None:
            continue
        ids.update(value if isinstance(value, (list, tuple)) else [value])
    return ids


@dataclass(frozen=True)
class Decoded:
    text: str
    token_ids: tuple[int, ...]
    seconds: float
    finish_reason: str  # "eos" (the model ended), "stop" (a stop string), "length" (max_new_tokens reached)


def decode(
    session: Session,
    tokenizer,
    logits: torch.Tensor,
    *,
    settings: SamplingSettings,
    on_text: Callable[[str], None] | None = None,
) -> Decoded:
    """Generate up to ``settings.max_new_tokens`` after ``logits`` [1, V], streaming text pieces to ``on_text``."""
    generator = None
    if settings.temperature > 0:
        generator = torch.Generator(device=logits.device)
        generator.manual_seed(settings.seed if settings.seed is not None else torch.seed())
    processors = logits_processors(settings)
    eos = _eos_ids(session.model, tokenizer)
    device = next(session.model.parameters()).device
    stream = TextStream(tokenizer, settings.stop)
    show = on_text or (lambda piece: None)
    ids: list[int] = []
    reason = "length"
    start = time.perf_counter()
    for _ in range(settings.max_new_tokens):
        token = next_token(logits, ids, settings, processors, generator)
        if token in eos:
            reason = "eos"
            break
        ids.append(token)
        piece = stream.push(token)
        if piece:
            show(piece)
        if stream.stopped:
            reason = "stop"
            break
        logits = session.forward(torch.tensor([[token]], device=device))
    piece = stream.finish()
    if piece:
        show(piece)
    return Decoded(text=stream.text, token_ids=tuple(ids), seconds=time.perf_counter() - start, finish_reason=reason)
