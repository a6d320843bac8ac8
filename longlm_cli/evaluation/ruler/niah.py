"""RULER's needle-in-a-haystack tasks: single, multi-key, multi-value and multi-query needles.

Owns: the eight NIAH settings of RULER's synthetic.yaml, their prompt (RULER's template and answer prefix,
split into the document part and the question), the needles and the three haystacks: the Paul Graham essays
("essay"), RULER's repeated noise line ("repeat") and other needles of the same form ("needle").

Follows RULER's niah.py: keys are "adjective-noun" words or UUIDs, values 7-digit numbers or UUIDs; the needle
list is shuffled with the seed; without a requested depth the needles go to depths drawn from RULER's 40-point
grid (essay) or uniformly (the other haystacks). Deviations: a requested depth places the queried needles
(the ones whose values are the answers) at that depth, one after another, and any other needles at drawn
depths; keys are never repeated, and distractor needles never reuse a real key.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

from . import data
from .fit import fit
from .haystack import noise_lines, noise_text, place, split_sentences
from .sample import Count, Draft, Sample, Scoring

NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
HEAD = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_needle_v} afterwards.\n"
)
QUESTION = "\nWhat are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
ANSWER_PREFIX = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
MAX_NEW_TOKENS = 128
DEPTHS = tuple(round(100 * i / 39) for i in range(40))  # np.round(np.linspace(0, 100, 40)), in percent
TOP_UP = 30  # noise sentences after the distractor needles, enough to cover one needle's worth of tokens


@dataclass(frozen=True)
class Setting:
    haystack: str  # "essay", "repeat" or "needle"
    key_type: str  # "words" or "uuids"
    value_type: str  # "numbers" or "uuids"
    keys: int = 1
    values: int = 1
    queries: int = 1


SETTINGS = {
    "niah_single_1": Setting("repeat", "words", "numbers"),
    "niah_single_2": Setting("essay", "words", "numbers"),
    "niah_single_3": Setting("essay", "words", "uuids"),
    "niah_multikey_1": Setting("essay", "words", "numbers", keys=4),
    "niah_multikey_2": Setting("needle", "words", "numbers"),
    "niah_multikey_3": Setting("needle", "uuids", "uuids"),
    "niah_multivalue": Setting("essay", "words", "numbers", values=4),
    "niah_multiquery": Setting("essay", "words", "numbers", keys=4, queries=4),  # RULER: keys >= queries
}


def _random(kind: str, rng: random.Random) -> str:
    if kind == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))
    if kind == "words":
        adjectives, nouns = data.key_words()
        return f"{rng.choice(adjectives)}-{rng.choice(nouns)}"
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def singular(template: str) -> str:
    # RULER's edits when a single value is asked for, in its order ("are all" before "are").
    for old, new in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
        template = template.replace(old, new)
    return template


@dataclass(frozen=True)
class _Needles:
    texts: tuple[str, ...]  # shuffled, as RULER inserts them
    queried: tuple[bool, ...]  # whether each needle's value is an answer
    first: int  # index in ``texts`` of the first answer's needle
    keys: tuple[str, ...]
    queries: tuple[str, ...]
    answers: tuple[str, ...]


def _needles(setting: Setting, rng: random.Random, seed: int) -> _Needles:
    keys: list[str] = []
    values: list[list[str]] = []
    needles: list[tuple[str, int, str]] = []
    for _ in range(setting.keys):
        key = _random(setting.key_type, rng)
        while key in keys:
            key = _random(setting.key_type, rng)
        keys.append(key)
        values.append([_random(setting.value_type, rng) for _ in range(setting.values)])
        needles += [
            (NEEDLE.format(type_needle_v=setting.value_type, key=key, value=v), len(keys) - 1, v) for v in values[-1]
        ]
    random.Random(seed).shuffle(needles)
    chosen = rng.sample(range(setting.keys), setting.queries)
    answers = tuple(v for i in chosen for v in values[i])
    first = next(i for i, (_, k, v) in enumerate(needles) if k == chosen[0] and v == answers[0])
    return _Needles(
        tuple(t for t, _, _ in needles),
        tuple(k in chosen for _, k, _ in needles),
        first,
        tuple(keys),
        tuple(keys[i] for i in chosen),
        answers,
    )


def _depths(setting: Setting, needles: _Needles, rng: random.Random, depth: float | None) -> list[float]:
    """A depth per needle: RULER's draw, or ``depth`` for the queried needles and draws for the others."""
    drawn_count = len(needles.texts) if depth is None else needles.queried.count(False)
    if setting.haystack == "essay":
        drawn = iter(sorted(d / 100 for d in rng.sample(DEPTHS, drawn_count)))
    else:  # RULER inserts into noise lines or needle lines at uniformly drawn positions
        drawn = iter(sorted(rng.random() for _ in range(drawn_count)))
    if depth is None:  # the i-th needle at the i-th smallest depth, as RULER does
        return [next(drawn) for _ in needles.texts]
    return [depth if queried else next(drawn) for queried in needles.queried]


class _Distractors:
    """RULER's "needle" haystack: needles with random keys and values, grown on demand, same for every size."""

    def __init__(self, setting: Setting, seed: int, keys: tuple[str, ...]):
        self.setting, self.keys = setting, set(keys)
        self.pool: list[str] = []
        self.rng = random.Random(f"{seed}:distractors")

    def take(self, n: int) -> list[str]:
        while len(self.pool) < n:
            key = _random(self.setting.key_type, self.rng)
            if key not in self.keys:
                value = _random(self.setting.value_type, self.rng)
                self.pool.append(NEEDLE.format(type_needle_v=self.setting.value_type, key=key, value=value))
        return self.pool[:n]


def _prompt_parts(setting: Setting, queries: tuple[str, ...]) -> tuple[str, str, str]:
    """(head, question, answer prefix), with RULER's singular wording when one value is asked for."""
    type_v = setting.value_type
    parts: tuple[str, ...] = (HEAD, QUESTION, ANSWER_PREFIX)
    if setting.queries * setting.values == 1:
        type_v, parts = type_v[:-1], tuple(singular(p) for p in parts)
    query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]
    head, question, prefix = (p.format(type_needle_v=type_v, query=query) for p in parts)
    return head, question, prefix


def generate_niah(task: str, count: Count, length: int, *, seed: int, depth: float | None = None) -> Sample:
    """One NIAH sample of about ``length`` tokens (context + question)."""
    setting = SETTINGS[task]
    rng = random.Random(seed)
    needles = _needles(setting, rng, seed)
    depths = _depths(setting, needles, rng, depth)
    head, question, prefix = _prompt_parts(setting, needles.queries)
    distractors = _Distractors(setting, seed, needles.keys)
    words = data.essay_words() if setting.haystack == "essay" else ()

    def render(n: int, m: int) -> Draft:
        if setting.haystack == "essay":
            units, sep = split_sentences(" ".join(words[:n]).strip()), " "
        elif setting.haystack == "repeat":
            units, sep = noise_lines(n), "\n"
        else:
            units, sep = distractors.take(n) + ([noise_text(m)] if m else []), "\n"
        placed = place(units, sep, list(zip(needles.texts, depths)))
        return Draft(head + placed.text, question, placed.needles, placed.positions)

    hi = len(words) if words else 10**8
    fitted = fit(render, count, length, task=task, lo=0, hi=hi, top_up=TOP_UP if setting.haystack == "needle" else 0)
    first = depth if depth is not None else depths[needles.first]
    return fitted.sample(Scoring(prefix, MAX_NEW_TOKENS), answers=needles.answers, seed=seed, depth=first)
