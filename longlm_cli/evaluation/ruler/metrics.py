"""RULER's scoring: string_match_all and string_match_part, per sample, on RULER's cleaned prediction.

Owns: turning a model's answer into a score in [0, 1] for a Sample. RULER reports the same numbers times 100
(averaged over samples and rounded to two decimals); the per-sample values here are not rounded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .sample import ALL, PART, Sample

_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess(prediction: str | None) -> str:
    """RULER's postprocess_pred: strip, control characters made newlines, strip again; None is ""."""
    if prediction is None:
        return ""
    return _CONTROL.sub("\n", prediction.strip()).strip()


def string_match_all(prediction: str, answers: Sequence[str]) -> float:
    """The fraction of the answers found in the prediction, ignoring case."""
    found = prediction.lower()
    return sum(1.0 if a.lower() in found else 0.0 for a in answers) / len(answers)


def string_match_part(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when any answer is found in the prediction, ignoring case, else 0.0."""
    found = prediction.lower()
    return max(1.0 if a.lower() in found else 0.0 for a in answers)


def repetition(text: str, n: int = 4) -> float:
    """The share of the word n-grams of ``text`` that repeat an earlier one (0: none; near 1: one loop)."""
    words = text.lower().split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def score(sample: Sample, prediction: str | None) -> float:
    """The sample's RULER metric on the prediction, in [0, 1]."""
    metric = {ALL: string_match_all, PART: string_match_part}[sample.metric]
    return metric(postprocess(prediction), sample.answers)
