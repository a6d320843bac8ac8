"""longlm's summary task (not one of RULER's): does a summary of a long document keep facts from all of it?

Six invented facts ("The harbour master of Vellmoor is Orla Teskavin.") are placed evenly through RULER's essay
haystack (Paul Graham essays), from 5 % to 95 % of its depth. The model is asked for a summary that names the
people it mentions; the score is the fraction of the invented surnames the summary contains (string match,
ignoring case), so a summary that keeps only the beginning or the end scores low. Its repetition (the share of
repeated word 4-grams, metrics.repetition) is recorded beside the score: a small model beyond its window tends
to loop. The names are made of seeded syllables, so they occur nowhere in the essays.
"""

from __future__ import annotations

import random

from . import data
from .fit import fit
from .haystack import place, split_sentences
from .sample import Count, Draft, Sample, Scoring

FACTS = 6
HEAD = "Below is a long document, a collection of essays.\n\n"
QUESTION = (
    "\n\nWrite a summary of the document above: its main subjects, and every person it names with their role. "
    "Use only information from the document."
)
# No answer prefix: `longlm summarize` sends none, and beyond L the embedded model answers " Summary:" by
# ending its turn at once (all five 16k cases of an earlier version of this task were empty).
ANSWER_PREFIX = ""
MAX_NEW_TOKENS = 256
SCORING = Scoring(ANSWER_PREFIX, MAX_NEW_TOKENS)
ROLES = (
    ("harbour master", "Vellmoor"),
    ("head librarian", "Castel Ardo"),
    ("chief engineer", "the Ostrander dam"),
    ("lighthouse keeper", "Point Sabre"),
    ("mayor", "Quillhaven"),
    ("senior judge", "the Dunmarrow court"),
)
_SYLLABLES = ("ka", "ve", "lo", "mi", "tar", "sen", "dro", "qui", "bel", "nor", "vas", "zen", "rho", "tis")


def _name(rng: random.Random) -> tuple[str, str]:
    first = "".join(rng.choice(_SYLLABLES) for _ in range(2)).capitalize()
    last = "".join(rng.choice(_SYLLABLES) for _ in range(3)).capitalize()
    return first, last


def _facts(seed: int) -> tuple[list[str], list[str]]:
    """(fact sentences, the surnames to find), distinct surnames."""
    rng = random.Random(f"{seed}:summary")
    sentences, surnames = [], []
    for role, place_name in ROLES[:FACTS]:
        first, last = _name(rng)
        while last in surnames:
            first, last = _name(rng)
        surnames.append(last)
        sentences.append(f"The {role} of {place_name} is {first} {last}.")
    return sentences, surnames


def generate_summary(task: str, count: Count, length: int, *, seed: int, depth: float | None = None) -> Sample:
    """One summary sample of about ``length`` tokens (context + question); ``depth`` must be None."""
    if depth is not None:
        raise ValueError("the summary task places its facts itself; it takes no depth")
    sentences, surnames = _facts(seed)
    depths = [0.05 + 0.9 * i / (FACTS - 1) for i in range(FACTS)]
    words = data.essay_words()

    def render(n: int, m: int) -> Draft:
        placed = place(split_sentences(" ".join(words[:n]).strip()), " ", list(zip(sentences, depths)))
        return Draft(HEAD + placed.text, QUESTION, placed.needles, placed.positions)

    fitted = fit(render, count, length, task=task, lo=0, hi=len(words))
    return fitted.sample(SCORING, answers=surnames, seed=seed)
