"""RULER's aggregation tasks: common-words extraction (cwe) and frequent-words extraction (fwe).

Owns: both prompts (RULER's templates and answer prefixes, split into the document part and the question),
cwe's numbered word list with its worked example, and fwe's Zipf-distributed coded text.

cwe follows RULER's common_words_extraction.py with synthetic.yaml's settings: ten common words among
uncommon ones from wonderwords' nouns, adjectives and verbs, 30 and 3 repeats (6 and 1 below 4,096 tokens),
after a worked example of 40 words (20 below 4,096) with its answer, joined exactly as RULER joins them.
fwe follows freq_words_extraction.py: a vocabulary of length // 50 random six-letter words, the first made
"..." as noise, word k repeated int(n * k^-2 / zeta(2)) times, shuffled; the answers are words 2 to 4.

Deviations: the list size n is fitted to the token budget instead of grown in steps; RULER draws the example
and the task's words from one random stream, here from two streams of the seed; fwe's vocabulary has at
least 5 words (RULER's length // 50 leaves fewer below 250 tokens) and n is at least 27, the smallest count
that puts every answer word in the text; zeta(2) is pi^2 / 6, the value scipy gives, so scipy is not needed.
"""

from __future__ import annotations

import math
import random
import string

from . import data
from .fit import fit
from .sample import Count, Draft, Sample, Scoring

CWE_HEAD = (
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Memorize the ones that appear most often.\n"
)
CWE_QUESTION = "\nQuestion: What are the 10 most common words in the above list?"
CWE_ANSWER_PREFIX = " Answer: The top 10 words that appear most often in the list are:"
CWE_MAX_NEW_TOKENS = 120
CWE_SCORING = Scoring(CWE_ANSWER_PREFIX, CWE_MAX_NEW_TOKENS)
COMMON = 10
SHORT = 4096  # RULER's threshold for the smaller example and fewer repeats

FWE_HEAD = (
    "Read the following coded text and track the frequency of each coded word. Find the three most "
    "frequently appeared coded words. "
)
FWE_QUESTION = (
    "\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the three "
    "most frequently appeared words in the above coded text?"
)
FWE_ANSWER_PREFIX = " Answer: According to the coded text above, the three most frequently appeared words are:"
FWE_MAX_NEW_TOKENS = 50
FWE_SCORING = Scoring(FWE_ANSWER_PREFIX, FWE_MAX_NEW_TOKENS)
ALPHA = 2.0
ZETA = math.pi**2 / 6  # scipy.special.zeta(2.0)
CODED_LENGTH = 6
FWE_MIN_WORDS = math.ceil(4**ALPHA * ZETA)  # the 4th word (the last answer) appears at least once


def _numbered(words: list[str]) -> str:
    return " ".join(f"{i + 1}. {word}" for i, word in enumerate(words))


def _word_list(chosen: list[str], common_repeats: int, uncommon_repeats: int, seed: int) -> str:
    """RULER's get_example: the first ten words repeated more, all shuffled with the seed, numbered."""
    words = chosen[:COMMON] * common_repeats + chosen[COMMON:] * uncommon_repeats
    random.Random(seed).shuffle(words)
    return _numbered(words)


def generate_cwe(task: str, count: Count, length: int, *, seed: int, depth: float | None = None) -> Sample:
    """One cwe sample of about ``length`` tokens (context + question); ``depth`` must be None."""
    vocabulary = data.cwe_words()
    (example_size, example_common, example_uncommon), (common, uncommon) = (
        ((20, 3, 1), (6, 1)) if length < SHORT else ((40, 10, 3), (30, 3))
    )
    order = list(vocabulary)
    random.Random(seed).shuffle(order)  # the task's words: a prefix of this order, so answers never change
    example_words = random.Random(f"{seed}:example").sample(vocabulary, example_size)
    # RULER: the example prompt with its answer prefix, the answer right after it ("are:1. ..."), a newline.
    example = (
        CWE_HEAD
        + _word_list(example_words, example_common, example_uncommon, seed)
        + CWE_QUESTION
        + CWE_ANSWER_PREFIX
        + _numbered(example_words[:COMMON])
        + "\n"
    )

    def render(n: int, m: int) -> Draft:
        return Draft(example + CWE_HEAD + _word_list(order[:n], common, uncommon, seed), CWE_QUESTION)

    fitted = fit(render, count, length, task=task, lo=COMMON, hi=len(order))
    return fitted.sample(CWE_SCORING, answers=order[:COMMON], seed=seed)


def _coded_vocabulary(size: int, seed: int) -> list[str]:
    """RULER's vocabulary: random six-letter words, sorted, shuffled with the seed, the first made "..."."""
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choices(string.ascii_lowercase, k=CODED_LENGTH)) for _ in range(size)]
    while len(set(vocabulary)) < size:
        vocabulary.append("".join(rng.choices(string.ascii_lowercase, k=CODED_LENGTH)))
    vocabulary = sorted(set(vocabulary))
    random.Random(seed).shuffle(vocabulary)
    vocabulary[0] = "..."  # RULER: the most frequent word is noise
    return vocabulary


def _coded_text(vocabulary: list[str], n: int, seed: int) -> str:
    counts = [int(n * (k**-ALPHA) / ZETA) for k in range(1, len(vocabulary) + 1)]
    words = [word for word, c in zip(vocabulary, counts) for _ in range(c)]
    random.Random(seed).shuffle(words)
    return " ".join(words)


def generate_fwe(task: str, count: Count, length: int, *, seed: int, depth: float | None = None) -> Sample:
    """One fwe sample of about ``length`` tokens (context + question); ``depth`` must be None."""
    vocabulary = _coded_vocabulary(max(5, length // 50), seed)

    def render(n: int, m: int) -> Draft:
        return Draft(FWE_HEAD + _coded_text(vocabulary, n, seed), FWE_QUESTION)

    fitted = fit(render, count, length, task=task, lo=FWE_MIN_WORDS, hi=10**8)
    return fitted.sample(FWE_SCORING, answers=vocabulary[1:4], seed=seed)
