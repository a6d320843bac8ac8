"""RULER's question answering among many documents: qa_1 (SQuAD v2.0 dev) and qa_2 (HotpotQA dev, distractor).

Owns: the qa prompt (RULER's template and answer prefix, split into the document part and the question), the
choice of question and of distractor documents, and their order.

Follows RULER's qa.py: sample i asks question i (here: question ``seed`` modulo the number of questions, in
the data files' order, unanswerable SQuAD questions left out); the gold documents (SQuAD: the paragraph;
HotpotQA: all ten given paragraphs) are joined by distractors, SQuAD's first from the same article, then from
all documents; the documents are shuffled with the seed and numbered "Document i:".

Deviations: RULER adds whole documents ten at a time; here whole documents are added one at a time and the
gap left (less than one document) is filled by one more distractor cut after some words, appended last, so
the length lands within a few tokens; distractors are a prefix of one seeded order instead of a fresh draw
per size, so the fitted prompt is the one measured.
"""

from __future__ import annotations

import random
import re

from . import data
from .fit import fit
from .sample import PART, Count, Draft, Sample, Scoring

HEAD = (
    "Answer the question based on the given documents. Only give me the answer and do not output any other "
    "words.\n\nThe following are given documents.\n\n"
)
QUESTION = (
    "\n\nAnswer the question based on the given documents. Only give me the answer and do not output "
    "any other words.\n\nQuestion: {query}"
)
ANSWER_PREFIX = " Answer:"
DOCUMENT = "Document {i}:\n{document}"
MAX_NEW_TOKENS = 32
SCORING = Scoring(ANSWER_PREFIX, MAX_NEW_TOKENS, PART)
TOP_UP = 5000  # words of the cut document: more than any document has, the cut is clamped to its length

DATASETS = {"qa_1": data.squad, "qa_2": data.hotpotqa}


def _distractors(question: data.Question, documents: int, seed: int) -> list[int]:
    """RULER's extra documents as one order: the same article's paragraphs first, then all others."""
    rng = random.Random(f"{seed}:documents")
    related = list(question.related)
    rng.shuffle(related)
    taken = set(question.gold) | set(question.related)
    others = [i for i in range(documents) if i not in taken]
    rng.shuffle(others)
    return related + others


def _cut(document: str, words: int) -> str:
    """The document's first ``words`` words, its own spacing kept."""
    ends = [m.end() for m in re.finditer(r"\S+", document)]
    return document[: ends[min(words, len(ends)) - 1]] if ends and words > 0 else ""


def generate_qa(task: str, count: Count, length: int, *, seed: int, depth: float | None = None) -> Sample:
    """One qa sample of about ``length`` tokens (context + question); ``depth`` must be None."""
    questions, documents = DATASETS[task]()
    question = questions[seed % len(questions)]
    extra = _distractors(question, len(documents), seed)
    gold = len(question.gold)
    asked = QUESTION.format(query=question.query)

    def render(n: int, m: int) -> Draft:
        texts = [documents[i] for i in list(question.gold) + extra[: n - gold]]
        random.Random(seed).shuffle(texts)
        if m and n - gold < len(extra):
            texts.append(_cut(documents[extra[n - gold]], m))
        body = "\n\n".join(DOCUMENT.format(i=i + 1, document=d) for i, d in enumerate(texts))
        return Draft(HEAD + body, asked)

    fitted = fit(render, count, length, task=task, lo=gold, hi=gold + len(extra), top_up=TOP_UP)
    numbered = fitted.draft.context.removeprefix(HEAD)
    return fitted.sample(SCORING, answers=question.answers, seed=seed, query=question.query, documents=numbered)
