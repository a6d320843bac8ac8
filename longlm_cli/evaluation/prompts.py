"""What every evaluation prompt shares: its dataclass, and fitting a prompt to a token length by search."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import LongLMError

CountFn = Callable[[str], int]


@dataclass(frozen=True)
class EvalPrompt:
    text: str
    expected: str
    depth: float  # requested depth
    position: float  # actual fraction of the filler or haystack text that comes before the key or fact


def closest(assemble, count: CountFn, length: int, start: int, per_unit: float, limit: int):
    """The unit count n in [0, limit] whose assembled prompt is closest to ``length`` tokens."""
    seen: dict[int, int] = {}

    def tokens(n: int) -> int:
        if n not in seen:
            seen[n] = count(assemble(n)[0])
        return seen[n]

    n = min(limit, max(0, start))
    for _ in range(6):  # Newton-like steps on an almost linear function
        step = round((length - tokens(n)) / per_unit)
        if step == 0:
            break
        n = min(limit, max(0, n + step))
    for _ in range(limit + 1):  # then walk to the best neighbour
        best = min((m for m in (n - 1, n, n + 1) if 0 <= m <= limit), key=lambda m: (abs(tokens(m) - length), m))
        if best == n:
            break
        n = best
    return n


def check_room(fixed: int, length: int) -> None:
    if fixed > length + 4:
        raise LongLMError(
            f"a {length:,}-token prompt is too short: the task, key and question alone take "
            f"{fixed:,} tokens with this tokenizer"
        )
