"""The fact task: a sentence about a pie's secret ingredient hidden in real prose, scored by exact match."""

from __future__ import annotations

import random
import re
from pathlib import Path

from ..errors import InputError
from .prompts import CountFn, EvalPrompt, check_room, closest

SAMPLE_NAME = "pride-and-prejudice.txt"


def sample_haystack() -> Path:
    """The shipped novel: installed as package data (longlm_cli.samples), or samples/ in a source checkout."""
    checkout = Path(__file__).resolve().parents[2] / "samples" / SAMPLE_NAME
    if checkout.is_file():
        return checkout
    from importlib import resources

    try:
        return Path(str(resources.files("longlm_cli.samples").joinpath(SAMPLE_NAME)))
    except ModuleNotFoundError:
        return checkout


SAMPLE_HAYSTACK = sample_haystack()

FACT_INTRO = "There is an important fact hidden inside a long text. Find it and memorize it. I will ask you about it."
FACT_LINE = "The secret ingredient of the baker's famous pie is {answer}."
FACT_QUESTION = (
    "Question: What is the secret ingredient of the baker's famous pie?\n"
    "Answer: The secret ingredient of the baker's famous pie is"
)
FACT_ANSWERS = (
    "cardamom",
    "saffron",
    "nutmeg",
    "tarragon",
    "lavender",
    "rosemary",
    "fenugreek",
    "allspice",
    "marjoram",
    "turmeric",
    "aniseed",
    "caraway",
)


def fact_answer(rng: random.Random) -> str:
    return rng.choice(FACT_ANSWERS)


_SENTENCE_END = re.compile(r"[.!?][\"')\]_]*\s+|\n\s*\n")


def fact_prompt(count: CountFn, length: int, *, depth: float, answer: str, haystack: str) -> EvalPrompt:
    """A fact sentence placed at ``depth`` inside the start of ``haystack`` (real prose), then the question.

    The haystack is cut at a word boundary to fit ``length`` tokens; the fact goes in at the sentence boundary
    nearest to ``depth`` of the text used.
    """
    fact = FACT_LINE.format(answer=answer)
    words = [m.start() for m in re.finditer(r"\s+", haystack)] + [len(haystack)]  # possible cut points

    def assemble(n: int):
        body = haystack[: words[n - 1]].rstrip() if n else ""
        target = depth * len(body)
        bounds = [0, len(body), *(m.end() for m in _SENTENCE_END.finditer(body))]
        at = min(bounds, key=lambda b: (abs(b - target), b))
        pieces = [body[:at].rstrip(), fact, body[at:].lstrip()]
        middle = " ".join(p for p in pieces if p)
        return f"{FACT_INTRO}\n\n{middle}\n\n{FACT_QUESTION}", (at / len(body) if body else depth)

    fixed = count(assemble(0)[0])
    check_room(fixed, length)
    sample = haystack[: words[min(len(words), 2000) - 1]]
    per_word = max(0.1, count(sample) / max(1, min(len(words), 2000)))
    limit = len(words)
    n = closest(assemble, count, length, round((length - fixed) / per_word), per_word, limit=limit)
    text, position = assemble(n)
    if count(text) < length - 8:  # only when the whole haystack is used: an empty or too short text
        raise InputError(
            f"the haystack text is too short for a {length:,}-token prompt; give a longer one with --haystack"
        )
    return EvalPrompt(text=text, expected=answer, depth=depth, position=position)


# ---------------------------------------------------------------------------------------------------------
# Scoring


def _normal_words(text: str) -> list[str]:
    words = re.sub(r"[^a-z0-9']+", " ", text.lower().replace("\u2019", "'")).split()
    while words and words[0] in ("a", "an", "the"):
        words = words[1:]
    return words


def fact_match(answer: str, expected: str) -> bool:
    """Exact match: the answer, normalized, starts with the expected words, normalized.

    Normalizing lowercases, turns everything but letters, digits and apostrophes into spaces, splits into
    words and drops leading articles (a, an, the). "Cardamom." and "cardamom, of course" match "cardamom";
    "I think cardamom" and "cardamoms" do not.
    """
    want = _normal_words(expected)
    return bool(want) and _normal_words(answer)[: len(want)] == want
