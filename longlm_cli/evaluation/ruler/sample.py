"""The value a RULER generator returns, and the draft a task renders while its length is being fitted.

Owns: ``Sample`` (one prompt, its expected answers and how to score them), ``Scoring`` and ``Draft``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Count = Callable[[str], int]  # token count of a text with the model's own tokenizer

ALL = "all"  # RULER's string_match_all: the fraction of the answers found
PART = "part"  # RULER's string_match_part: 1 when any answer is found


@dataclass(frozen=True)
class Sample:
    """One RULER prompt.

    The prompt is ``context + question``, in that order: ``context`` is everything before the document's end
    (RULER's opening instruction, any worked example, then the haystack), so a caller can cache it as a
    document prefix; ``question`` is what follows the document. ``answer_prefix`` is RULER's start of the
    answer, which RULER puts after the model's turn marker (prefill it, or leave it out); it is not part of
    ``tokens``. ``length`` is the token count asked for, ``tokens`` the count of ``context + question``.
    """

    task: str
    context: str
    question: str
    answers: tuple[str, ...]
    metric: str  # ALL or PART
    length: int
    tokens: int
    seed: int
    depth: float | None = None  # needle tasks: the depth asked for, or the one drawn for the first answer
    needles: tuple[str, ...] = ()  # the inserted needle (or chain) sentences, in document order
    positions: tuple[float, ...] = ()  # fraction of the haystack text before each of ``needles``
    answer_prefix: str = ""
    max_new_tokens: int = 0  # RULER's tokens_to_generate for the task
    query: str = ""  # qa tasks: the bare question (`longlm ask`'s prompt styles use it)
    documents: str = ""  # qa tasks: the numbered documents alone, without RULER's instruction

    @property
    def prompt(self) -> str:
        return self.context + self.question


@dataclass(frozen=True)
class Scoring:
    """How a task's answer is asked for and scored: RULER's answer prefix, its tokens_to_generate, its metric."""

    answer_prefix: str
    max_new_tokens: int
    metric: str = ALL


@dataclass(frozen=True)
class Draft:
    """A task rendered at one haystack size: what the fitting search measures and the sample is made from."""

    context: str
    question: str
    needles: tuple[str, ...] = ()
    positions: tuple[float, ...] = ()
