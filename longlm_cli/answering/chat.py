"""`longlm chat`: several questions over one prefilled document, each answered with the conversation so far.

The document is read (or loaded from the document cache) once. Each new question is appended to the same KV
cache after the previous answer: the whole conversation is rendered with the tokenizer's chat template and only
the ids beyond those already in the cache are prefilled. When the rendering of an earlier answer does not
reproduce the ids that were generated, the cache is cut back to the common prefix first, so every answer is
what a fresh run over the whole conversation would give.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..defaults import DEFAULT_CHAT_BUDGET_FACTOR
from ..doccache.keys import common_prefix_length
from ..doccache.store import DocCacheSettings
from ..errors import ConversationTooLongError
from ..evaluation.heads import evidence_for, prepared_heads
from ..planning.plan import Plan
from ..runtime.generate import ProgressFn, SamplingSettings, Session, decode, prefill
from .citations import citations_for
from .contract import response_dict
from .evidence import (
    NOT_PLACED,
    EvidenceSettings,
    choose,
    document_tokens,
    evidence_prompt,
    question_start,
    rank,
    tapped,
    token_scores,
)
from .pipeline import Prepared, Reading, configure, method_settings, prefill_prompt, prepare
from .templates import apply_chat_template, chat_token_ids, user_message


@dataclass(frozen=True)
class ChatSettings:
    """How much room to plan for the conversation beyond the document (tokens); None: 4 x max_new_tokens."""

    budget: int | None = None


@dataclass(frozen=True)
class Turn:
    number: int  # 1 for the first question
    question: str
    text: str
    finish_reason: str  # "eos", "stop" or "length"
    prompt_tokens: int  # tokens of the whole conversation before this answer
    new_tokens: int
    cache: str  # "hit", "miss" or "off" for the first turn's document; "conversation" afterwards
    timings: dict  # seconds: load (the model, first turn only), prefill, decode
    model: str
    sources: tuple[str, ...]
    plan: Plan
    extension: str | None
    citations: tuple | None = None  # with --cite: each quote of the answer, checked (citations.py)
    evidence: tuple | None = None  # with --evidence: the passages the answer was written from (evidence.Found)
    extension_settings: dict | None = None  # what the method beyond L runs with (pipeline.method_settings)

    @property
    def seconds(self) -> float:
        return self.timings["prefill"] + self.timings["decode"]

    def to_dict(self) -> dict:
        """The versioned JSON object of contract.py, as for ask and summarize."""
        return response_dict(self, command="chat", turn=self.number)


def render_conversation(tokenizer, messages: Sequence[dict]) -> list[int]:
    """Token ids of ``messages`` (user/assistant turns) ending with the generation prompt.

    With one user message this is exactly templates.chat_token_ids. Without a chat template, turns are plain
    text: each question followed by "Answer:" and its answer.
    """
    if getattr(tokenizer, "chat_template", None):
        return apply_chat_template(tokenizer, messages)
    if len(messages) == 1:
        return chat_token_ids(tokenizer, messages[0]["content"])
    text = ""
    for m in messages:
        text += m["content"] + "\n\nAnswer:" if m["role"] == "user" else " " + m["content"] + "\n\n"
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


class Chat:
    """One conversation over one document: call ``ask`` for each question."""

    def __init__(
        self,
        prepared: Prepared,
        *,
        sampling: SamplingSettings,
        cache: DocCacheSettings,
        progress: ProgressFn | None = None,
        evidence: EvidenceSettings = EvidenceSettings(),
        on_note: Callable[[str], None] | None = None,
    ) -> None:
        self.evidence = evidence_for(prepared, evidence)  # with passages: each answer from its question's passages
        self.on_note = on_note
        self.heads: list | None = None  # the retrieval heads, once known
        self.prepared = prepared
        self.loaded = prepared.loaded
        self.plan = prepared.plan
        self.sampling = sampling
        self.cache = cache
        self.progress = progress
        self.messages: list[dict] = []
        self.session = Session.start(self.loaded.model, reserve=self.plan.N)  # the first turn; later ones grow it
        self.cached_ids: list[int] = []  # the token ids the session's KV cache holds

    def ask(self, question: str, on_text: Callable[[str], None] | None = None) -> Turn:
        """Answer ``question`` given the document and the conversation so far."""
        start = time.perf_counter()
        first = not self.messages
        prepared = self.prepared
        content = user_message(prepared.template, prepared.document.text, question) if first else question
        messages = [*self.messages, {"role": "user", "content": content}]
        ids = render_conversation(self.loaded.tokenizer, messages)
        self._check_room(ids)
        chosen = None
        if self.evidence.passages:
            logits, status, chosen = self._read_tapped(ids, question, first)
        elif first:
            logits, status = prefill_prompt(self.session, prepared, ids, cache=self.cache, progress=self.progress)
        else:
            logits, status = self._append(ids), "conversation"
        prefilled = time.perf_counter()
        session = self.session
        if chosen is not None:  # the answer is written from the passages, in a short prompt of its own
            session, logits = evidence_prompt(prepared, chosen.text, question, self.sampling.max_new_tokens)
        decoded = decode(session, self.loaded.tokenizer, logits, settings=self.sampling, on_text=on_text)
        if chosen is not None:
            configure(self.loaded.model, self.plan, prepared.extension)  # back to the conversation's method
        # What the KV cache holds: a token that ended the answer (a stop string) was never run through the model.
        self.cached_ids = (ids + list(decoded.token_ids))[: self.session.length]
        self.messages = [*messages, {"role": "assistant", "content": decoded.text}]
        return Turn(
            number=len(self.messages) // 2,
            question=question,
            text=decoded.text,
            finish_reason=decoded.finish_reason,
            prompt_tokens=len(ids),
            new_tokens=len(decoded.token_ids),
            cache=status,
            timings={
                "load": prepared.load_seconds if first else 0.0,
                "prefill": prefilled - start,
                "decode": decoded.seconds,
            },
            model=self.loaded.name,
            sources=prepared.document.sources,
            plan=self.plan,
            extension=prepared.extension.method_on(self.plan),
            extension_settings=method_settings(self.loaded.model, self.plan, prepared.extension),
            citations=citations_for(
                prepared.shape.cite, decoded.text, prepared.document.text if chosen is None else chosen.text
            ),
            evidence=None if chosen is None else chosen.passages,
        )

    def _read_tapped(self, ids: list[int], question: str, first: bool):
        """Prefill as ``ask`` does, the question's rows tapped: (logits, cache status, the best passages in document
        order, or None when the document's tokens cannot be placed and the answer comes from the conversation)."""
        heads = self._evidence_heads()
        tokenizer, document = self.loaded.tokenizer, self.prepared.document.text
        tokens = document_tokens(tokenizer, document, ids)
        keep = min(common_prefix_length(self.cached_ids, ids), len(ids) - 1)
        rows_from = (tokens.rows_from if first else question_start(tokenizer, question, ids, keep)) if tokens else 0
        with tapped(self.loaded.model, rows_from, len(ids), {layer for layer, _ in heads}) as tap:
            if first:
                logits, status = prefill_prompt(
                    self.session, self.prepared, ids, cache=self.cache, progress=self.progress
                )
            else:
                logits, status = self._append(ids), "conversation"
        if tokens is None:
            if self.on_note is not None:
                self.on_note(NOT_PLACED)
            return logits, status, None
        ranked = rank(document, tokens, token_scores(tap.received, heads), self.evidence.unit)
        return logits, status, choose(ranked, self.evidence.passages)

    def _evidence_heads(self) -> list:
        if self.heads is None:
            self.heads = prepared_heads(self.prepared, self.evidence.heads, on_note=self.on_note)
        return self.heads

    def _check_room(self, ids: list[int]) -> None:
        needed = len(ids) + self.sampling.max_new_tokens
        if needed > self.plan.capacity:
            raise ConversationTooLongError(
                f"the conversation has outgrown its plan: {len(ids):,} tokens plus {self.sampling.max_new_tokens:,} "
                f"for the answer exceed the capacity {self.plan.capacity:,} (W={self.plan.W}, G={self.plan.G}); "
                "start a new chat with a larger --budget"
            )

    def _append(self, ids: list[int]):
        """Prefill what ``ids`` adds to the cached conversation, first cutting the cache to the common prefix."""
        import torch

        keep = min(common_prefix_length(self.cached_ids, ids), len(ids) - 1)
        if keep < self.session.length:
            # A negative count removes tokens; the grouped keys of the kept prefix stay valid.
            self.session.cache.crop(keep - self.session.length)
        new = torch.tensor([ids[keep:]], device=self.loaded.device)
        return prefill(self.session, new, chunk=self.prepared.extension.prefill_chunk)


def start_chat(
    paths: Sequence[str],
    *,
    reading: Reading = Reading(),
    sampling: SamplingSettings = SamplingSettings(),
    chat: ChatSettings = ChatSettings(),
    cache: DocCacheSettings = DocCacheSettings(),
    progress: ProgressFn | None = None,
    evidence: EvidenceSettings = EvidenceSettings(),
    on_note: Callable[[str], None] | None = None,
) -> Chat:
    """Read the documents, load the model and plan W, G for the document plus the conversation budget.

    The document is prefilled (or loaded from the document cache) with the first question.
    """
    budget = chat.budget if chat.budget is not None else DEFAULT_CHAT_BUDGET_FACTOR * sampling.max_new_tokens
    prepared = prepare("ask", paths, question="", reserve=budget, reading=reading)
    return Chat(prepared, sampling=sampling, cache=cache, progress=progress, evidence=evidence, on_note=on_note)
