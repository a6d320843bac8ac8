"""The prefill progress bar on stderr (tqdm), drawn only when stderr is a terminal.

Its ETA follows the cost of a prefill chunk, which grows with its position: every token of a chunk attends to
all keys before it, so a chunk of n tokens around position p takes about n * (a + b * p). The two constants are
fit by least squares over the chunks timed so far, and the remaining positions are costed with them; before two
chunks there is nothing to fit, and the bar says so rather than guessing. A prefix loaded from the document
cache is shown as such and never counted as prefill speed.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ..runtime.cost import fit_cost, remaining_seconds


class Progress:
    """Callable as the library's ProgressFn (tokens done, tokens total); a context manager that always clears
    the bar, so that an error or `Interrupted.` starts on a clean line."""

    def __init__(self, enabled: bool, *, file=None) -> None:
        self.enabled = enabled
        self.file = file if file is not None else sys.stderr
        self.bar: Any = None  # a tqdm bar once drawn; _open sets it before __call__ uses it
        self.chunks: list[tuple[int, int, float]] = []
        self.last: tuple[int, float] | None = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.bar is None:
            self._open(done, total)
        elif self.last is not None and done > self.last[0]:
            self.chunks.append((self.last[0], done, now - self.last[1]))
            self.bar.update(done - self.bar.n)
        self.last = (done, now)
        self.bar.set_postfix_str(self.status(done, total))
        if done >= total:
            self.close()

    def _open(self, done: int, total: int) -> None:
        from tqdm import tqdm

        cached = f" ({done:,} tokens from the document cache)" if done else ""
        self.bar = tqdm(
            total=total,
            initial=done,
            desc=f"Reading{cached}",
            file=self.file,
            leave=False,
            dynamic_ncols=True,
            bar_format="{desc} {percentage:3.0f}%|{bar}| {n:,}/{total:,} tokens{postfix}",
        )

    def status(self, done: int, total: int) -> str:
        """The text after the bar: prefill speed and a position-aware ETA, once two chunks are timed."""
        cost = fit_cost(self.chunks)
        if cost is None:
            return "(timing the first chunks)"
        prefilled = sum(end - first for first, end, _ in self.chunks)
        rate = prefilled / sum(seconds for _, _, seconds in self.chunks)
        return f"{rate:,.0f} tok/s, ETA {remaining_seconds(cost, done, total):,.0f}s"
