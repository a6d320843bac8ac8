"""The prefill progress bar: a position-aware ETA fit on timed chunks, a cache hit shown as such, a clean line."""

import io
import re

import pytest

from longlm_cli.cli import progress as progress_module
from longlm_cli.cli.progress import Progress
from longlm_cli.runtime.cost import fit_cost, remaining_seconds

A, B = 2e-3, 1e-6  # seconds per token, plus per token and position: attention over the keys before it


def _chunk_seconds(first, end):
    return (end - first) * (A + B * (first + end) / 2)


def test_fit_recovers_a_cost_that_grows_with_position():
    chunks = [(lo, lo + 2048, _chunk_seconds(lo, lo + 2048)) for lo in range(0, 8192, 2048)]
    a, b = fit_cost(chunks)
    assert a == pytest.approx(A) and b == pytest.approx(B)
    exact = sum(_chunk_seconds(lo, lo + 2048) for lo in range(8192, 16384, 2048))
    assert remaining_seconds((a, b), 8192, 16384) == pytest.approx(exact)
    flat = 8192 * sum(t for *_, t in chunks) / 8192  # what a linear ETA would say: half the real time or less
    assert flat < 0.75 * exact


def test_no_fit_before_two_chunks_and_a_flat_rate_when_degenerate():
    assert fit_cost([]) is None and fit_cost([(0, 100, 1.0)]) is None
    assert fit_cost([(0, 100, 1.0), (0, 100, 1.0)]) == (pytest.approx(0.01), 0.0)  # same midpoint twice
    assert fit_cost([(0, 100, 2.0), (100, 200, 1.0)])[1] == 0.0  # later cheaper: no negative slope


def _run_bar(monkeypatch, calls):
    clock = iter(t for t in range(len(calls)))
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: float(next(clock)))
    out = io.StringIO()
    bar = Progress(enabled=True, file=out)
    statuses = []
    with bar:
        for done, total in calls:
            bar(done, total)
            statuses.append(bar.status(done, total))
    return out.getvalue(), statuses, bar


def test_first_frames_make_no_claim_and_later_ones_give_rate_and_eta(monkeypatch):
    text, statuses, bar = _run_bar(monkeypatch, [(0, 400), (100, 400), (200, 400), (300, 400)])
    assert statuses[:2] == ["(timing the first chunks)"] * 2
    assert statuses[2] == "100 tok/s, ETA 2s" and not re.search(r"\b0 tok/s|ETA 0s", text)
    assert "300/400 tokens, 100 tok/s, ETA 1s" in text
    assert bar.bar is None  # closed on leaving the context: nothing stays on the line


def test_a_cache_hit_is_named_and_not_counted_as_speed(monkeypatch):
    text, statuses, _ = _run_bar(monkeypatch, [(15000, 16000), (16000, 16000)])
    assert "Reading (15,000 tokens from the document cache)" in text
    assert statuses == ["(timing the first chunks)"] * 2


def test_disabled_bar_writes_nothing():
    out = io.StringIO()
    with Progress(enabled=False, file=out) as bar:
        bar(0, 10)
        bar(10, 10)
    assert out.getvalue() == ""
