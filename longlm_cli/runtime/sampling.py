"""Choosing each next token, and turning tokens into streamed text.

Sampling settings, the transformers logits processors that carry them out (repetition penalty, no-repeat
n-grams, temperature, top-k, top-p), and ``TextStream``: incremental detokenization that decodes only a few
tokens per step (not the whole answer again) and cuts the answer at the first stop string, holding back text
that may be the start of one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..defaults import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_NO_REPEAT_NGRAM,
    DEFAULT_REPETITION_PENALTY,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    TASK_SAMPLING_DEFAULTS,
)
from ..errors import InputError


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = DEFAULT_TEMPERATURE  # 0: greedy
    seed: int | None = None
    top_k: int = DEFAULT_TOP_K  # 0: off; with temperature > 0, sample among the k most likely tokens
    top_p: float = DEFAULT_TOP_P  # 1: off; with temperature > 0, sample from the smallest set holding this probability
    # None in these two: the task's default (for_task). 1: off; > 1 divides the scores of tokens the answer holds
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None  # 0: off; n > 0 forbids repeating any n-gram of the answer
    stop: tuple[str, ...] = ()  # the answer ends before the first of these strings

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SamplingSettings:
        """From the parsed sampling options (--max-new-tokens, --temperature, --seed, --top-k, --top-p,
        --repetition-penalty, --no-repeat-ngram, --stop)."""
        return cls(
            max_new_tokens=options["max_new_tokens"],
            temperature=options["temperature"],
            seed=options["seed"],
            top_k=options["top_k"],
            top_p=options["top_p"],
            repetition_penalty=options["repetition_penalty"],
            no_repeat_ngram_size=options["no_repeat_ngram"],
            stop=tuple(options["stop"]),
        )

    def __post_init__(self):
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise InputError(f"top-p must be in (0, 1], got {self.top_p!r}")
        penalty = self.repetition_penalty
        if penalty is not None and not (math.isfinite(penalty) and penalty > 0):
            raise InputError(f"repetition penalty must be a finite number > 0, got {penalty!r}")
        if self.top_k < 0 or (self.no_repeat_ngram_size or 0) < 0:
            raise InputError("top-k and the no-repeat n-gram size must be >= 0")
        if any(not s for s in self.stop):
            raise InputError("a stop string must not be empty")

    def for_task(self, task: str) -> SamplingSettings:
        """These settings with ``task``'s defaults for the repetition settings not given (summaries have one)."""
        given: dict[str, Any] = {
            "repetition_penalty": DEFAULT_REPETITION_PENALTY,
            "no_repeat_ngram_size": DEFAULT_NO_REPEAT_NGRAM,
        }
        given |= TASK_SAMPLING_DEFAULTS.get(task, {})
        return replace(self, **{k: v for k, v in given.items() if getattr(self, k) is None})


@dataclass(frozen=True)
class Processors:
    penalties: list  # applied before greedy choice and sampling alike
    warpers: list  # temperature, top-k, top-p: sampling only


def logits_processors(settings: SamplingSettings) -> Processors:
    """transformers' processors for ``settings``, in the order its generate() applies them."""
    from transformers import (
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    penalties: list = []
    warpers: list = []
    if settings.repetition_penalty not in (None, DEFAULT_REPETITION_PENALTY):
        penalties.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if settings.no_repeat_ngram_size:  # None (no task default applied) or 0: off
        penalties.append(NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size))
    if settings.temperature > 0:
        warpers.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k > 0:
            warpers.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            warpers.append(TopPLogitsWarper(settings.top_p))
    return Processors(penalties=penalties, warpers=warpers)


def next_token(
    logits: torch.Tensor, answer: list[int], settings: SamplingSettings, processors: Processors, generator
) -> int:
    """The next token after ``logits`` [1, V]. Penalties look at the answer's own tokens only: the document is
    in the prompt, and an answer must be free to quote it."""
    history = torch.tensor([answer], dtype=torch.long, device=logits.device)
    scores = logits.float()
    for processor in processors.penalties:
        scores = processor(history, scores)
    if settings.temperature <= 0:
        return int(scores.argmax(dim=-1))
    warped = scores
    for processor in processors.warpers:
        warped = processor(history, warped)
    probs = torch.softmax(warped, dim=-1)
    if not torch.isfinite(probs).all():  # a temperature so small that the scaled logits overflow: its limit, greedy
        return int(scores.argmax(dim=-1))
    return int(torch.multinomial(probs, 1, generator=generator))


class TextStream:
    """Incremental detokenization with stop strings.

    Each step decodes only the tokens since the last emitted piece plus a few before them (so a tokenizer that
    drops a leading space, or a character split across tokens, is handled like a full decode). ``push`` returns
    the text that is safe to show; ``stopped`` turns True once a stop string appeared (the answer ends before
    it); ``finish`` returns what is left.
    """

    def __init__(self, tokenizer, stop: tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.stop = stop
        self.ids: list[int] = []
        self.prefix_offset = 0  # tokens before read_offset decoded again for context
        self.read_offset = 0  # tokens already turned into text
        self.text = ""  # all text decoded so far (up to read_offset)
        self.shown = 0  # characters of self.text already returned
        self.stopped = False

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token: int) -> str:
        if self.stopped:  # the answer has ended
            return ""
        self.ids.append(token)
        before = self._decode(self.ids[self.prefix_offset : self.read_offset])
        after = self._decode(self.ids[self.prefix_offset :])
        if len(after) > len(before) and not after.endswith("\ufffd"):  # a whole character more
            self.text += after[len(before) :]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return self._release()

    def _release(self, final: bool = False) -> str:
        start = max(0, self.shown - max((len(x) for x in self.stop), default=0))  # a stop string may straddle
        cut = min((i for x in self.stop if (i := self.text.find(x, start)) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self.text = self.text[:cut]
            end = cut
        else:
            end = len(self.text) - (0 if final else self._held_back())
        piece = self.text[self.shown : max(self.shown, end)]
        self.shown = max(self.shown, end)
        return piece

    def _held_back(self) -> int:
        """Characters at the end that could start a stop string (not shown until the next tokens decide)."""
        return max((k for x in self.stop for k in range(1, len(x)) if self.text.endswith(x[:k])), default=0)

    def finish(self) -> str:
        """The rest of the answer once decoding ends: a last partial character, held-back text that turned out
        not to start a stop string."""
        if not self.stopped:
            head = self._decode(self.ids[self.prefix_offset : self.read_offset])
            self.text += self._decode(self.ids[self.prefix_offset :])[len(head) :]
            self.prefix_offset = self.read_offset = len(self.ids)
        return self._release(final=True)
