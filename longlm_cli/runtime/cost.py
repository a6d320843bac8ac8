"""The cost of a prefill: a chunk of n tokens around position p takes about n * (a + b * p) seconds, since every
token attends to all keys before it. Fit on timed chunks, it gives the progress bar's ETA and `longlm tune`'s
estimate. Pure Python.
"""

from __future__ import annotations


def fit_cost(chunks: list[tuple[int, int, float]]) -> tuple[float, float] | None:
    """(a, b) with seconds = n * (a + b * midpoint) over ``chunks`` of (first, end, seconds); None until two chunks.

    Falls back to b = 0 (a flat rate) when the fit is degenerate or says later tokens are cheaper.
    """
    if len(chunks) < 2:
        return None
    rows = [(end - first, (end - first) * (first + end) / 2, seconds) for first, end, seconds in chunks]
    s11 = sum(x * x for x, _, _ in rows)
    s12 = sum(x * y for x, y, _ in rows)
    s22 = sum(y * y for _, y, _ in rows)
    t1 = sum(x * t for x, _, t in rows)
    t2 = sum(y * t for _, y, t in rows)
    det = s11 * s22 - s12 * s12
    if det > 1e-12 * s11 * s22:
        a, b = (t1 * s22 - t2 * s12) / det, (s11 * t2 - s12 * t1) / det
        if a >= 0 and b >= 0:
            return a, b
    return t1 / s11, 0.0


def remaining_seconds(cost: tuple[float, float], done: int, total: int) -> float:
    """Seconds for positions [done, total) at n * (a + b * midpoint)."""
    a, b = cost
    n = total - done
    return n * (a + b * (done + total) / 2)
