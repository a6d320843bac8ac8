"""Evidence from attention: the passages of a document that the question's tokens attend to most, in the
attention heads chosen for retrieval.

The prompt's tokens after the document (the question and the template's end) are the query rows of an
AttentionTap (engine/evidence.py) over the forward calls that prefill them; the document's tokens are placed in
its passages (passages.py); a passage scores the attention its tokens receive, summed over the rows and the
chosen (layer, head) pairs. Which heads: those that measured best at finding an inserted fact in prose
(evaluation/heads.py, kept per model in heads.json), never a guess.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from ..defaults import DEFAULT_EVIDENCE_HEADS, DEFAULT_EVIDENCE_PASSAGES, DEFAULT_EVIDENCE_UNIT
from .passages import Passage, passage_scores, place_tokens, split_passages

Head = tuple[int, int]  # (layer, query head)


@dataclass(frozen=True)
class EvidenceSettings:
    """Answer from the ``passages`` (N) passages of the document the question attends to most, cut into
    ``unit``s ("sentence" or "paragraph") and scored in the model's ``heads`` best retrieval heads; 0 passages:
    answer from the whole document. ``auto``: the passages only where the document exceeds the model's window
    and the model's retrieval heads are known (evaluation/heads.py: evidence_for), else the whole document."""

    passages: int = DEFAULT_EVIDENCE_PASSAGES
    unit: str = DEFAULT_EVIDENCE_UNIT
    heads: int = DEFAULT_EVIDENCE_HEADS
    auto: bool = False


@dataclass(frozen=True)
class Found:
    """A passage with its score (the attention it received from the question, in the chosen heads)."""

    passage: Passage
    score: float
    rank: int  # 1 = the most attended

    def to_dict(self) -> dict:
        return {"text": self.passage.text, "page": self.passage.page, "score": round(self.score, 6), "rank": self.rank}


@dataclass(frozen=True)
class DocumentTokens:
    """Where the document's tokens are in a prompt: {prompt index: document character}, and the first prompt
    index after the document (the first query row)."""

    placed: dict[int, int]
    rows_from: int


def document_tokens(tokenizer, document: str, prompt_ids: Sequence[int]) -> DocumentTokens | None:
    """The document's tokens placed in ``prompt_ids`` (tokenizing the document alone, with character offsets);
    None when they cannot be found there (a tokenizer without offsets, or a prompt that does not hold the
    document as its own tokens)."""
    try:
        encoded = tokenizer(document, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True)
    except (NotImplementedError, ValueError, TypeError):
        return None
    placed = place_tokens(prompt_ids, encoded["input_ids"], encoded["offset_mapping"])
    if not placed:
        return None
    return DocumentTokens(placed=placed, rows_from=max(placed) + 1)


def token_scores(received: dict, heads: Sequence[Head]) -> list[float]:
    """Per key index: the attention it received, summed over ``heads``. ``received``: AttentionTap.received."""
    total = None
    for layer, head in heads:
        mass = received[layer][head]
        if total is None:
            total = mass.clone()
        else:
            width = max(total.shape[0], mass.shape[0])
            grown = total.new_zeros(width)
            grown[: total.shape[0]] += total
            grown[: mass.shape[0]] += mass
            total = grown
    return [] if total is None else total.tolist()


def rank(document: str, tokens: DocumentTokens, scores: Sequence[float], unit: str = "sentence") -> list[Found]:
    """The document's passages, the most attended first."""
    passages = split_passages(document, unit)
    totals = passage_scores(passages, tokens.placed, scores)
    order = sorted(range(len(passages)), key=lambda k: -totals[k])
    return [Found(passages[k], totals[k], n + 1) for n, k in enumerate(order)]


@contextmanager
def tapped(model, rows_from: int, total: int, layers: set[int] | None) -> Iterator:
    """An AttentionTap on the prompt rows [rows_from, total) while the block runs."""
    from ..engine.evidence import AttentionTap, tapping

    tap = AttentionTap(start=rows_from, stop=total, layers=None if layers is None else frozenset(layers))
    with tapping(model, tap):
        yield tap


def question_start(tokenizer, question: str, ids: Sequence[int], default: int) -> int:
    """Where the last occurrence of ``question``'s tokens begins in ``ids`` (its first token may merge with what
    precedes it), else ``default``."""
    run = list(tokenizer(question, add_special_tokens=False, split_special_tokens=True)["input_ids"])[1:]
    if not run:
        return default
    for at in range(len(ids) - len(run), -1, -1):
        if list(ids[at : at + len(run)]) == run:
            return max(0, at - 1)
    return default


def prefill_with_evidence(session, prepared, heads: Sequence[Head], unit: str, *, cache, progress=None):
    """``pipeline.prefill_prompt`` with the question's rows tapped: (last logits, cache status, the document's
    passages ranked by the attention they received in ``heads``). An empty ranking when the document's tokens
    cannot be placed in the prompt."""
    from .pipeline import prefill_prompt

    document = prepared.document.text
    tokens = document_tokens(prepared.loaded.tokenizer, document, prepared.ids)
    if tokens is None or tokens.rows_from >= len(prepared.ids):
        logits, status = prefill_prompt(session, prepared, prepared.ids, cache=cache, progress=progress)
        return logits, status, []
    with tapped(session.model, tokens.rows_from, len(prepared.ids), {layer for layer, _ in heads}) as tap:
        logits, status = prefill_prompt(session, prepared, prepared.ids, cache=cache, progress=progress)
    return logits, status, rank(document, tokens, token_scores(tap.received, heads), unit)


NOT_PLACED = "the document's tokens could not be found in the prompt: answering from the whole document"


@dataclass(frozen=True)
class Chosen:
    """The passages an answer is written from, in document order, and the text of them the second prompt reads
    (and --cite checks quotes against)."""

    passages: tuple[Found, ...]
    text: str


def choose(ranked: Sequence[Found], count: int) -> Chosen:
    """The ``count`` best of ``ranked`` passages (see evidence_text)."""
    passages, text = evidence_text(ranked, count)
    return Chosen(tuple(passages), text)


def evidence_text(found: Sequence[Found], count: int) -> tuple[list[Found], str]:
    """The ``count`` best passages in document order, and the text of them the second prompt reads: each after
    its `[page N]` marker when the page changes, separated by blank lines."""
    chosen = sorted(found[:count], key=lambda f: f.passage.start)
    parts, page = [], None
    for item in chosen:
        if item.passage.page is not None and item.passage.page != page:
            page = item.passage.page
            parts.append(f"[page {page}]\n{item.passage.text}")
        else:
            parts.append(item.passage.text)
    return chosen, "\n\n".join(parts)


def evidence_prompt(prepared, text: str, question: str | None, reserve: int):
    """(session, last logits) of the template filled with the evidence ``text`` instead of the document: short,
    so the model runs plainly unless the passages themselves exceed its window."""
    from .templates import chat_token_ids, user_message

    loaded = prepared.loaded
    ids = chat_token_ids(loaded.tokenizer, user_message(prepared.template, text, question))
    return prompt_session(loaded, prepared.requested_model, prepared.extension, ids, reserve)


def prompt_session(loaded, requested: str, extension, ids: Sequence[int], reserve: int):
    """(session, last logits) of a new session prefilled with ``ids``, the model switched to what their plan
    needs (the caller switches it back for its own session)."""
    import torch

    from ..runtime.generate import Session, prefill
    from .pipeline import configure, plan_for_length

    plan, chosen, _ = plan_for_length(loaded, requested, len(ids) + reserve, extension)
    configure(loaded.model, plan, chosen)
    session = Session.start(loaded.model, reserve=plan.N)
    input_ids = torch.tensor([list(ids)], device=loaded.device)
    return session, prefill(session, input_ids, chunk=chosen.prefill_chunk)
