"""Fitting a RULER prompt to a token budget with the caller's own tokenizer.

Owns: the search over the number of haystack units (essay words, noise sentences, distractor needles, list
words, documents) and the tolerance a fitted prompt must meet.

RULER grows the haystack by a fixed increment (500 essay words, 25 noise lines, 10 documents) until the prompt
outgrows the budget, so its prompts fall short by up to one increment. Here the unit count is found by a
bracketed secant search, which takes a handful of token counts because the count grows almost linearly with
the units; then an optional finer "top-up" (noise sentences after distractor needles, a cut distractor
document after whole ones) closes the gap that coarse units leave, and the nearest candidate is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ...errors import InputError
from .sample import Count, Draft, Sample, Scoring

Render = Callable[[int, int], Draft]  # (units, top-up) -> draft


@dataclass(frozen=True)
class Fitted:
    """The draft a fit chose for ``task`` at ``length``, and its token count."""

    draft: Draft
    tokens: int
    task: str
    length: int

    def sample(self, scoring: Scoring, *, answers, seed: int, **extra) -> Sample:
        """The Sample the draft makes: its text and needles, with the task's answers and scoring."""
        return Sample(
            task=self.task,
            context=self.draft.context,
            question=self.draft.question,
            answers=tuple(answers),
            metric=scoring.metric,
            length=self.length,
            tokens=self.tokens,
            seed=seed,
            needles=self.draft.needles,
            positions=self.draft.positions,
            answer_prefix=scoring.answer_prefix,
            max_new_tokens=scoring.max_new_tokens,
            **extra,
        )


def tolerance(length: int) -> int:
    """How far count(context + question) may land from the length asked: 1 %, at least 8 tokens."""
    return max(8, length // 100)


def _grow(tokens: Callable[[int], int], length: int, lo: int, hi: int) -> tuple[int, int | None]:
    """(a, b): tokens(a) <= length < tokens(b), b None when even hi fits; secant guesses overshoot a little."""
    a, t_lo = lo, tokens(lo)
    guess, rounds = min(hi, lo + 16), 0
    while guess > a:  # every step moves at least 2 units up, so this ends at hi at the latest
        if tokens(guess) > length:
            return a, guess
        a, rounds = guess, rounds + 1
        slope = max(1e-9, (tokens(a) - t_lo) / (a - lo))
        ahead = int((length - tokens(a)) / slope * 1.05) + 2
        if rounds > 8:  # a counter far from linear: double the distance instead, so few rounds remain
            ahead = max(ahead, a - lo)
        guess = min(hi, a + ahead)
    return a, None


def largest_fitting(tokens: Callable[[int], int], length: int, lo: int, hi: int) -> int:
    """The largest n in [lo, hi] with tokens(n) <= length (lo when none), for tokens growing with n."""
    if tokens(lo) > length:
        return lo
    a, b = _grow(tokens, length, lo, hi)
    if b is None:
        return hi
    while b - a > 1:
        width = b - a
        guess = a + (length - tokens(a)) * (b - a) // max(1, tokens(b) - tokens(a))
        # The secant guess and the unit after it: on a near-linear count they bracket the answer.
        for probe in (guess, guess + 1, (a + b) // 2):
            if a < probe < b:
                if tokens(probe) <= length:
                    a = probe
                else:
                    b = probe
            if probe == guess + 1 and b - a <= width // 2:
                break  # the secant step halved the bracket at least: no bisection needed
    return a


def fit(render: Render, count: Count, length: int, *, task: str, lo: int, hi: int, top_up: int = 0) -> Fitted:
    """The draft whose count(context + question) is nearest ``length``, with that count.

    ``render(n, m)`` builds the task with n haystack units in [lo, hi] and m top-up units in [0, top_up].
    Raises InputError when the fixed text alone is too long, or the data cannot fill ``length``.
    """
    seen: dict[tuple[int, int], int] = {}

    def tokens(n: int, m: int = 0) -> int:
        if (n, m) not in seen:
            draft = render(n, m)
            seen[n, m] = count(draft.context + draft.question)
        return seen[n, m]

    tol = tolerance(length)
    if tokens(lo) > length + tol:
        raise InputError(
            f"{task}: a {length:,}-token prompt is too short; the task's fixed text alone takes {tokens(lo):,} tokens"
        )
    n = largest_fitting(tokens, length, lo, hi)
    candidates = [(n, 0)] + ([(n + 1, 0)] if n < hi else [])
    if top_up and tokens(n) < length:
        m = largest_fitting(lambda k: tokens(n, k), length, 0, top_up)
        candidates += [(n, m)] + ([(n, m + 1)] if m < top_up else [])
    best = min(candidates, key=lambda c: (abs(tokens(*c) - length), tokens(*c)))
    if abs(tokens(*best) - length) > tol:
        if best[0] == hi:
            raise InputError(
                f"{task}: its data fills at most about {tokens(*best):,} tokens, fewer than the {length:,} asked"
            )
        raise InputError(
            f"{task}: no haystack size lands within {tol} tokens of {length:,} (nearest: {tokens(*best):,})"
        )
    return Fitted(render(*best), tokens(*best), task, length)
