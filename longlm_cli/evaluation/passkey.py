"""The passkey task of the SelfExtend paper (after Mohtashami & Jaggi, 2023): its texts, prompt, keys, scoring."""

from __future__ import annotations

import random
import re

from .prompts import CountFn, EvalPrompt, check_room, closest

TASK = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there."
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
KEY_LINE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"

FILLER_SENTENCES = tuple(s.strip() + "." for s in FILLER.split(".") if s.strip())


def random_key(rng: random.Random, digits: int = 5) -> str:
    return str(rng.randint(10 ** (digits - 1), 10**digits - 1))


def found_key(answer: str, key: str) -> bool:
    """Exact match of the first number in the answer."""
    match = re.search(r"\d+", answer)
    return match is not None and match.group(0) == key


def passkey_prompt(count: CountFn, length: int, *, depth: float, key: str) -> EvalPrompt:
    """The SelfExtend paper's passkey prompt, about ``length`` tokens long, key line at ``depth``.

    The filler is the paper's line cut into its five sentences, so the length can be matched to a few tokens;
    a whole number of filler lines gives exactly the paper's text.
    """

    def assemble(n: int):
        before = round(n * depth)
        units = [FILLER_SENTENCES[i % len(FILLER_SENTENCES)] for i in range(n)]
        text = " ".join([TASK, *units[:before], KEY_LINE.format(key=key), *units[before:], QUESTION])
        return text, before

    fixed = count(assemble(0)[0])
    per_unit = max(1.0, (count(assemble(50)[0]) - fixed) / 50)
    check_room(fixed, length)
    n = closest(assemble, count, length, round((length - fixed) / per_unit), per_unit, limit=10**7)
    text, before = assemble(n)
    return EvalPrompt(text=text, expected=key, depth=depth, position=before / n if n else depth)
