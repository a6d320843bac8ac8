"""Passages of a document, for evidence: sentences or paragraphs with their character span and the page they
are on, the document's tokens placed in them, and each passage's share of a score given per token.

A passage ends at a blank line, a `[page N]` marker line (which also names the page of what follows), or, for
sentences, after ``.``, ``!`` or ``?`` (and any closing quotes or brackets) followed by white space and a
character that is not a lower-case letter (``"Salt!" he said`` stays one sentence). A passage
longer than MAX_CHARS[unit] is cut at the last white space before that length, so no single passage can fill a
model's window. Torch-free.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass

UNITS = ("sentence", "paragraph")
MAX_CHARS = {"sentence": 600, "paragraph": 2000}  # about 150 and 500 tokens of English prose
_PAGE_LINE = re.compile(r"^\[page ([^\]\n]+)\][ \t]*$", re.MULTILINE)
_BLANK = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*\s+(?=[^a-z\s])")  # not before a lower-case word
_ALIGN_RUN = 16  # prompt tokens that must match the document's own tokens in a row to place them


@dataclass(frozen=True)
class Passage:
    start: int  # characters of the document: [start, end)
    end: int
    text: str
    page: str | None  # the label of the last `[page N]` marker before it, None without markers


def split_passages(document: str, unit: str = "sentence") -> list[Passage]:
    """The document's passages in order; white space between them belongs to none."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    found: list[Passage] = []
    page = None
    cut = 0
    for marker in [*_PAGE_LINE.finditer(document), None]:
        end = len(document) if marker is None else marker.start()
        for start, stop in _blocks(document, cut, end):
            for lo, hi in _pieces(document, start, stop, unit):
                found.append(Passage(lo, hi, document[lo:hi], page))
        if marker is not None:
            page, cut = marker.group(1), marker.end()
    return found


def _blocks(document: str, lo: int, hi: int):
    """Spans of [lo, hi) between blank lines, stripped of white space."""
    start = lo
    for blank in [*_BLANK.finditer(document, lo, hi), None]:
        stop = hi if blank is None else blank.start()
        yield from _stripped(document, start, stop)
        if blank is not None:
            start = blank.end()


def _stripped(document: str, lo: int, hi: int):
    text = document[lo:hi]
    inner = text.strip()
    if inner:
        lo += len(text) - len(text.lstrip())
        yield lo, lo + len(inner)


def _pieces(document: str, lo: int, hi: int, unit: str):
    """A block cut into sentences (for that unit), then into pieces of at most MAX_CHARS[unit]."""
    spans = [(lo, hi)]
    if unit == "sentence":
        spans, start = [], lo
        for end in [*_SENTENCE_END.finditer(document, lo, hi), None]:
            stop = hi if end is None else end.end()
            spans += list(_stripped(document, start, stop))
            start = stop
    for start, stop in spans:
        yield from _capped(document, start, stop, MAX_CHARS[unit])


def _capped(document: str, lo: int, hi: int, limit: int):
    while hi - lo > limit:
        space = document.rfind(" ", lo + limit // 2, lo + limit)
        cut = space if space > lo else lo + limit
        yield from _stripped(document, lo, cut)
        lo = cut
    yield from _stripped(document, lo, hi)


def place_tokens(prompt_ids: Sequence[int], document_ids: Sequence[int], offsets: Sequence[tuple[int, int]]):
    """{prompt index: the document character where that token starts}, for the prompt tokens that are the
    document's own (``document_ids`` with their character ``offsets``, from tokenizing the document alone). The
    tokens where the document meets the template may merge differently: they are left out. Empty when the
    document's tokens are not found in the prompt."""
    for skip in range(min(4, len(document_ids))):
        run = list(document_ids[skip : skip + _ALIGN_RUN])
        at = _find(prompt_ids, run)
        if at is not None:
            placed = {}
            for i in range(skip, len(document_ids)):
                p = at + i - skip
                if p >= len(prompt_ids) or prompt_ids[p] != document_ids[i]:
                    break
                placed[p] = offsets[i][0]
            return placed
    return {}


def _find(ids: Sequence[int], run: list[int]) -> int | None:
    if not run:
        return None
    n = len(run)
    for at in range(len(ids) - n + 1):
        if ids[at] == run[0] and list(ids[at : at + n]) == run:
            return at
    return None


def passage_scores(passages: Sequence[Passage], placed: dict[int, int], score: Sequence[float]) -> list[float]:
    """Each passage's sum of ``score[p]`` over the prompt tokens ``p`` that start inside it (``placed``)."""
    starts = [p.start for p in passages]
    totals = [0.0] * len(passages)
    for index, char in placed.items():
        k = bisect.bisect_right(starts, char) - 1
        if k >= 0 and char < passages[k].end and index < len(score):
            totals[k] += float(score[index])
    return totals
