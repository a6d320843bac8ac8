"""The passkey task of the SelfExtend paper (after Mohtashami & Jaggi, 2023): its texts, keys and scoring.

Prompts are built by ``evaluate.passkey_prompt``.
"""

from __future__ import annotations

import random
import re

TASK = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
        "I will quiz you about the important information there.")
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
KEY_LINE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"


def random_key(rng: random.Random, digits: int = 5) -> str:
    return str(rng.randint(10 ** (digits - 1), 10**digits - 1))


def found_key(answer: str, key: str) -> bool:
    """Exact match of the first number in the answer."""
    match = re.search(r"\d+", answer)
    return match is not None and match.group(0) == key
