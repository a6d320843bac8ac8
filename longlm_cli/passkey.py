"""Passkey retrieval prompts in the format of the SelfExtend paper (after Mohtashami & Jaggi, 2023)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

TASK = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
        "I will quiz you about the important information there.")
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
KEY_LINE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"


@dataclass(frozen=True)
class PasskeyPrompt:
    text: str
    key: str
    depth: float  # where the key line sits among the filler lines, 0 (start) .. 1 (end)
    filler_lines: int


def random_key(rng: random.Random, digits: int = 5) -> str:
    return str(rng.randint(10 ** (digits - 1), 10**digits - 1))


def build_prompt(count_tokens, length: int, *, depth: float, key: str) -> PasskeyPrompt:
    """A prompt of about ``length`` tokens (as counted by ``count_tokens(text) -> int``) with ``key`` at ``depth``."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be between 0 and 1, got {depth}")

    def assemble(lines: int) -> str:
        before = round(lines * depth)
        parts = [TASK, *[FILLER] * before, KEY_LINE.format(key=key), *[FILLER] * (lines - before), QUESTION]
        return " ".join(parts)

    fixed = count_tokens(assemble(0))
    per_line = max(1, count_tokens(assemble(20)) - fixed) / 20
    lines = max(0, round((length - fixed) / per_line))
    # One correction step: filler tokenizes almost linearly, so this lands within a few tokens.
    lines = max(0, lines + round((length - count_tokens(assemble(lines))) / per_line))
    return PasskeyPrompt(text=assemble(lines), key=key, depth=depth, filler_lines=lines)


def found_key(answer: str, key: str) -> bool:
    """Exact match of the first number in the answer."""
    match = re.search(r"\d+", answer)
    return match is not None and match.group(0) == key
