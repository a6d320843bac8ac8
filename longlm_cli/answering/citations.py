"""Checked citations (`--cite`): the instruction that asks the model to quote its sources, and the check of
every quote in its answer against the document.

A quote is text in double quotes (straight or curly) of at least MIN_QUOTE_WORDS words. It is verified when it
occurs in the document exactly, or once both are compared with whitespace collapsed, case folded and curly
quotes and dashes made plain. A verified quote gets the page of the last `[page N]` marker before it (PDF
input), or None. Pure Python: no torch.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

MIN_QUOTE_WORDS = 3
CITE_INSTRUCTION = (
    "After your answer, quote the passages of the document you used, each on its own line as "
    '"exact words from the document" followed by its [page N] marker when the document has page markers.'
)
_QUOTE = re.compile(r"\"([^\"\n]+)\"|\u201c([^\u201d\n]+)\u201d")
_PAGE = re.compile(r"\[page ([^\]\n]+)\]")
_PLAIN = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})


@dataclass(frozen=True)
class Citation:
    quote: str
    found: bool
    page: str | None  # the page label of a found quote in a paged document

    def to_dict(self) -> dict:
        return asdict(self)


def _normalised(text: str) -> tuple[str, list[int]]:
    """``text`` with whitespace runs as one space, case folded and quotes/dashes plain, and for each character
    of the result the index it came from in ``text``."""
    out: list[str] = []
    origin: list[int] = []
    space = False
    for i, ch in enumerate(text.translate(_PLAIN)):
        if ch.isspace():
            if not space and out:
                out.append(" ")
                origin.append(i)
            space = True
            continue
        space = False
        for folded in ch.casefold():
            out.append(folded)
            origin.append(i)
    return "".join(out).rstrip(), origin


def quotes(answer: str) -> list[str]:
    """The quotes of ``answer`` worth checking, in order, without repeats."""
    found = []
    for match in _QUOTE.finditer(answer):
        text = " ".join((match.group(1) or match.group(2)).split())
        if len(text.split()) >= MIN_QUOTE_WORDS and text not in found:
            found.append(text)
    return found


def check_citations(answer: str, document: str) -> list[Citation]:
    """Each quote of ``answer`` checked against ``document``."""
    haystack, origin = _normalised(document)
    pages = [(m.start(), m.group(1)) for m in _PAGE.finditer(document)]
    checked = []
    for quote in quotes(answer):
        at = document.find(quote)
        if at < 0:
            needle = _normalised(quote)[0]
            hit = haystack.find(needle) if needle else -1
            at = origin[hit] if hit >= 0 else -1
        page = next((label for start, label in reversed(pages) if start <= at), None) if at >= 0 else None
        checked.append(Citation(quote=quote, found=at >= 0, page=page))
    return checked


def format_citations(citations: list[Citation]) -> str:
    """The lines printed after a text answer ('' when the answer quoted nothing)."""
    if not citations:
        return "Quotes checked against the document: none found in the answer."
    lines = ["Quotes checked against the document:"]
    for c in citations:
        where = f"page {c.page}" if c.page else "found"
        lines.append(f'  {where if c.found else "NOT IN THE DOCUMENT"}: "{c.quote}"')
    return "\n".join(lines)


def citations_for(cite: bool, answer: str, source: str) -> tuple[Citation, ...] | None:
    """With --cite (``cite``), every quote of ``answer`` checked against ``source`` (the document, or the passages
    the answer was written from); None without."""
    return tuple(check_citations(answer, source)) if cite else None
