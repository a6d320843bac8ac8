"""Parsing the evaluation's option values: lengths (4k, 16000), depths (0..1) and method names."""

from __future__ import annotations

import re

from ..errors import LongLMError
from .methods import METHODS

LENGTH_UNIT = 1024  # "4k" is 4 * 1024 = 4096 tokens
MAX_EVAL_LENGTH = 1024 * LENGTH_UNIT  # a typo such as 100000k must not start allocating for days


def parse_lengths(text: str) -> list[int]:
    """'4k,8k,16000' -> [4096, 8192, 16000]: a k suffix multiplies by 1024."""
    lengths = []
    for part in (p.strip().lower() for p in text.split(",")):
        match = re.fullmatch(r"(\d+(?:\.\d+)?)(k?)", part)
        if not match:
            raise LongLMError(f"bad length {part!r}: give token counts like 4k,8k,16000 (k = 1024)")
        value = float(match.group(1)) * (LENGTH_UNIT if match.group(2) else 1)
        if value < 1 or value != int(value):
            raise LongLMError(f"bad length {part!r}: it must be a whole number of tokens >= 1")
        if value > MAX_EVAL_LENGTH:
            raise LongLMError(
                f"length {part!r} is {int(value):,} tokens; evaluation prompts go up to {MAX_EVAL_LENGTH:,} "
                "(1024k): beyond that no machine this runs on holds the prompt's activations"
            )
        lengths.append(int(value))
    return lengths


def parse_depths(text: str) -> list[float]:
    depths = []
    for part in (p.strip() for p in text.split(",")):
        try:
            depth = float(part)
        except ValueError:
            raise LongLMError(f"bad depth {part!r}: give fractions between 0 and 1, like 0,0.5,1") from None
        if not 0.0 <= depth <= 1.0:
            raise LongLMError(f"bad depth {part!r}: depths are fractions between 0 (start) and 1 (end)")
        depths.append(depth)
    return depths


def parse_methods(text: str) -> list[str]:
    """`longlm passkey`'s methods: 'all' is METHODS; Dual Chunk Attention ('dca') only when named."""
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    if not names:
        raise LongLMError(f"no method given; choose from {', '.join((*METHODS, 'dca'))} or all")
    if "all" in names:
        return list(METHODS)
    known = (*METHODS, "dca")
    for name in names:
        if name not in known:
            raise LongLMError(f"unknown method {name!r}; choose from {', '.join(known)} or all")
    return list(dict.fromkeys(names))
