"""Chunked prefill and token-by-token decoding over one KV cache, with progress and streaming."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from ..defaults import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PREFILL_CHUNK, DEFAULT_TEMPERATURE
from ..engine.switch import key_cache_arguments

ProgressFn = Callable[[int, int], None]  # (tokens done, tokens total)


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = DEFAULT_TEMPERATURE  # 0: greedy
    seed: int | None = None


@dataclass
class Session:
    """A KV cache and the side state the extension method keeps with it (its re-rotated keys): one
    conversation with one model."""

    model: object
    cache: DynamicCache
    extra: dict  # forward keyword arguments: the extension method's key cache, or nothing

    @classmethod
    def start(cls, model) -> Session:
        return cls(model=model, cache=DynamicCache(config=model.config), extra=key_cache_arguments(model))

    @property
    def length(self) -> int:
        return self.cache.get_seq_length()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Run ``input_ids`` [1, n] after what the cache holds; return the last position's logits [1, V]."""
        with torch.inference_mode():
            out = self.model(input_ids, past_key_values=self.cache, use_cache=True, logits_to_keep=1, **self.extra)
        return out.logits[:, -1].float()


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
    return logits


def _eos_ids(model, tokenizer) -> set[int]:
    ids = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if value is None:
            continue
        ids.update(value if isinstance(value, (list, tuple)) else [value])
    return ids


def _next_token(logits: torch.Tensor, settings: SamplingSettings, generator) -> int:
    if settings.temperature <= 0:
        return int(logits.argmax(dim=-1))
    probs = torch.softmax(logits.float() / settings.temperature, dim=-1)
    if not torch.isfinite(probs).all():  # a temperature so small that the scaled logits overflow: its limit, greedy
        return int(logits.argmax(dim=-1))
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass(frozen=True)
class Decoded:
    text: str
    token_ids: tuple[int, ...]
    seconds: float


def decode(
    session: Session,
    tokenizer,
    logits: torch.Tensor,
    *,
    settings: SamplingSettings,
    on_text: Callable[[str], None] | None = None,
) -> Decoded:
    """Generate up to ``settings.max_new_tokens`` after ``logits``, streaming text pieces to ``on_text``."""
    generator = None
    if settings.temperature > 0:
        generator = torch.Generator(device=logits.device)
        generator.manual_seed(settings.seed if settings.seed is not None else torch.seed())
    eos = _eos_ids(session.model, tokenizer)
    device = next(session.model.parameters()).device
    ids: list[int] = []
    shown = ""
    start = time.perf_counter()
    for _ in range(settings.max_new_tokens):
        token = _next_token(logits, settings, generator)
        if token in eos:
            break
        ids.append(token)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        if on_text is not None and not text.endswith("\ufffd") and len(text) > len(shown):
            on_text(text[len(shown) :])
            shown = text
        logits = session.forward(torch.tensor([[token]], device=device))
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if on_text is not None and len(text) > len(shown):
        on_text(text[len(shown) :])
    return Decoded(text=text, token_ids=tuple(ids), seconds=time.perf_counter() - start)
