"""Haystacks and needle placement shared by the RULER tasks.

Owns: RULER's repeated noise, a sentence splitter for the essay haystack, and putting needles into a list of
haystack units at given depths.

Deviation from RULER: RULER splits the essay text into sentences with nltk's punkt model, which no package
ships (nltk downloads it at run time). ``split_sentences`` is a small regular expression instead: a sentence
ends at ``.``, ``!`` or ``?`` (closing quotes and brackets included) followed by whitespace and a capital
letter, a digit or an opening quote, except after a short list of abbreviations and single-letter initials.
It finds nearly the same boundaries as punkt on this prose; needles go between sentences either way.

Depth here is a fraction of the haystack text (characters, so roughly tokens): a needle goes to the unit
boundary nearest to ``depth`` of the text, as the passkey and fact prompts of this package do. RULER instead
counts sentences (essay) or units (noise lines), which drifts from the text fraction when sentences differ
in length.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NOISE_SENTENCES = tuple(s if s.endswith(".") else s + "." for s in NOISE.split(". "))

# Endings that do not close a sentence: titles, Latin abbreviations, common short forms.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc e.g i.e cf al inc ltd co corp no vol fig approx dept est gen "
    "col lt sgt capt mt ft u.s u.k a.m p.m".split()
)
_BOUNDARY = re.compile(r"""[.!?]["')\]]*(?=\s+["'(\[]?[A-Z0-9])""")


def noise_lines(sentences: int) -> list[str]:
    """RULER's noise line repeated, measured in sentences: whole lines, then the first few sentences of one.

    RULER repeats whole lines (five sentences); counting sentences lets the length be fitted to a few tokens.
    """
    whole, rest = divmod(sentences, len(NOISE_SENTENCES))
    lines = [NOISE] * whole
    if rest:
        lines.append(" ".join(NOISE_SENTENCES[:rest]))
    return lines


def noise_text(sentences: int) -> str:
    """``sentences`` noise sentences on one line, cycling through the five."""
    return " ".join(NOISE_SENTENCES[i % len(NOISE_SENTENCES)] for i in range(sentences))


def _is_abbreviation(text: str, start: int, end: int) -> bool:
    """Whether the word ending at ``end`` (just before the full stop) is an abbreviation or an initial."""
    word = text[max(start, text.rfind(" ", start, end) + 1) : end].lstrip("\"'([").lower()
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (stand-in for nltk's sent_tokenize); single-spaced text comes back joined by " "."""
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(text):
        if text[match.start()] == "." and _is_abbreviation(text, start, match.start()):
            continue
        sentence = text[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    if text[start:].strip():
        sentences.append(text[start:].strip())
    return sentences


@dataclass(frozen=True)
class Placed:
    text: str
    needles: tuple[str, ...]  # in document order
    positions: tuple[float, ...]  # fraction of the haystack text before each needle


def place(units: Sequence[str], sep: str, needles: Sequence[tuple[str, float]]) -> Placed:
    """Join ``units`` with ``sep``, each needle at the unit boundary nearest its depth (fraction of the text).

    Needles at the same boundary keep their given order. Each needle appears once, as its own unit.
    """
    starts = [0]  # character offset of each unit boundary in the haystack without needles
    for unit in units:
        starts.append(starts[-1] + len(unit) + len(sep))
    total = max(0, starts[-1] - len(sep))
    starts[-1] = total
    at = [_nearest(starts, depth * total) for _, depth in needles]
    order = sorted(range(len(needles)), key=lambda i: at[i])  # stable: ties keep the given order
    pieces: list[str] = []
    next_needle = 0
    for k in range(len(units) + 1):
        while next_needle < len(order) and at[order[next_needle]] == k:
            pieces.append(needles[order[next_needle]][0])
            next_needle += 1
        if k < len(units) and units[k]:
            pieces.append(units[k])  # empty chunks are skipped, so no doubled separators (RULER has them)
    return Placed(
        sep.join(pieces),
        tuple(needles[i][0] for i in order),
        tuple(starts[at[i]] / total if total else 0.0 for i in order),
    )


def _nearest(starts: list[int], target: float) -> int:
    """Index of the boundary offset nearest ``target``; the earlier one on a tie."""
    k = bisect.bisect_left(starts, target)
    if k == 0:
        return 0
    if k == len(starts) or target - starts[k - 1] <= starts[k] - target:
        return k - 1
    return k
