"""The one-shot answer behind `longlm summarize` and `longlm ask`: prepare, prefill through the cache, decode."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from ..doccache.store import DocCacheSettings
from ..errors import InputError, PlanError
from ..evaluation.heads import evidence_for, prepared_heads
from ..planning.plan import Plan
from ..runtime.generate import ProgressFn, SamplingSettings, Session, decode
from .citations import Citation, citations_for
from .contract import failure_dict, response_dict
from .evidence import NOT_PLACED, EvidenceSettings, Found, choose, evidence_prompt, prefill_with_evidence
from .pipeline import Reading, method_settings, prefill_prompt, prepare


@dataclass(frozen=True)
class Answer:
    task: str  # "ask" or "summarize"
    question: str | None
    text: str
    finish_reason: str  # "eos", "stop" or "length" (runtime.generate.Decoded)
    model: str
    plan: Plan
    extended: bool
    extension: str | None  # the method that ran beyond L ("selfextend", "dca"), None when not extended
    prompt_tokens: int
    new_tokens: int
    sources: tuple[str, ...]
    timings: dict = field(default_factory=dict)  # seconds: load, prefill, decode
    cache: str = "off"  # the document cache: "hit" (prefix loaded), "miss" (prefilled and saved) or "off"
    citations: tuple[Citation, ...] | None = None  # with --cite: each quote of the answer, checked
    evidence: tuple[Found, ...] | None = None  # with --evidence: the passages the answer was written from
    extension_settings: dict | None = None  # what the method beyond L ran with (pipeline.method_settings)

    def to_dict(self) -> dict:
        """The versioned JSON object of contract.py."""
        return response_dict(self, command=self.task)

    @property
    def empty_warning(self) -> str | None:
        """Why the answer holds no text, when it holds none (a small model beyond its window may end its turn
        at once: the RULER summary task at 16k); None otherwise."""
        if self.text.strip():
            return None
        why = {"eos": "the model ended its turn before writing anything", "stop": "a --stop string came first"}
        return f"the answer is empty: {why.get(self.finish_reason, 'only whitespace was written')}"


def answer_documents(
    task: str,
    paths: Sequence[str],
    *,
    question: str | None = None,
    sampling: SamplingSettings = SamplingSettings(),
    on_text: Callable[[str], None] | None = None,
    progress: ProgressFn | None = None,
    cache: DocCacheSettings = DocCacheSettings(),
    evidence: EvidenceSettings = EvidenceSettings(),
    on_note: Callable[[str], None] | None = None,
    reading: Reading = Reading(),
) -> Answer:
    """Summarize the documents at ``paths`` (task "summarize") or answer ``question`` about them ("ask").

    ``reading`` is pipeline.prepare's. The whole document goes through one forward context: it is
    never truncated or chunked. The extension method runs only when the prompt plus the answer exceed the model's
    pretraining window. With ``cache.enabled`` the document part of the prompt goes through the document cache (see
    pipeline.prefill_prompt). With ``evidence.passages``, the answer is written from the passages the question
    attends to most (evidence.py); ``on_note`` hears when the model's retrieval heads are measured.
    """
    sampling = sampling.for_task(task)
    prepared = prepare(task, paths, question=question, reserve=sampling.max_new_tokens, reading=reading)
    session, logits, status, timings, chosen = _read(prepared, question, sampling, cache, progress, evidence, on_note)
    decoded = decode(session, prepared.loaded.tokenizer, logits, settings=sampling, on_text=on_text)
    timings["decode"] = decoded.seconds
    plan = prepared.plan
    return Answer(
        task=task,
        question=question,
        text=decoded.text,
        finish_reason=decoded.finish_reason,
        model=prepared.loaded.name,
        plan=plan,
        extended=plan.needs_extension,
        extension=prepared.extension.method_on(plan),
        extension_settings=method_settings(prepared.loaded.model, plan, prepared.extension),
        prompt_tokens=len(prepared.ids),
        new_tokens=len(decoded.token_ids),
        sources=prepared.document.sources,
        timings=timings,
        cache=status,
        citations=citations_for(
            prepared.shape.cite, decoded.text, prepared.document.text if chosen is None else chosen.text
        ),
        evidence=None if chosen is None else chosen.passages,
    )


def _read(prepared, question, sampling, cache, progress, evidence: EvidenceSettings, on_note):
    """Prefill the prompt (through the document cache): (session, last logits, cache status, timings, None); with
    evidence, then the prompt of the best passages instead: (its session, its logits, ..., the passages)."""
    evidence = evidence_for(prepared, evidence)
    heads = prepared_heads(prepared, evidence.heads, on_note=on_note) if evidence.passages else None
    session = Session.start(prepared.loaded.model, reserve=prepared.plan.N)  # prompt + answer: allocated once
    start = time.perf_counter()
    if not heads:
        logits, status = prefill_prompt(session, prepared, prepared.ids, cache=cache, progress=progress)
        return session, logits, status, {"load": prepared.load_seconds, "prefill": time.perf_counter() - start}, None
    logits, status, ranked = prefill_with_evidence(
        session, prepared, heads, evidence.unit, cache=cache, progress=progress
    )
    timings = {"load": prepared.load_seconds, "prefill": time.perf_counter() - start}
    if not ranked:
        if on_note is not None:
            on_note(NOT_PLACED)
        return session, logits, status, timings, None
    start = time.perf_counter()
    chosen = choose(ranked, evidence.passages)
    del session  # the document's KV cache: the answer reads only the passages
    session, logits = evidence_prompt(prepared, chosen.text, question, sampling.max_new_tokens)
    timings["evidence"] = time.perf_counter() - start
    return session, logits, status, timings, chosen


@dataclass(frozen=True)
class Failed:
    """A document of a batch that could not be answered (it could not be read, or was too long)."""

    task: str
    source: str
    error: str

    def to_dict(self) -> dict:
        return failure_dict(command=self.task, source=self.source, error=self.error)


def answer_each(task: str, paths: Sequence[str], *, reading: Reading = Reading(), **options):
    """Answer ``task`` for each document in ``paths`` on its own, loading the model once.

    Yields an Answer per document, or a Failed for a document that cannot be read or answered (an input or
    plan error); a model error ends the batch. ``options`` are answer_documents's.
    """
    reading = replace(reading, loaded=reading.model.load())
    for path in paths:
        try:
            yield answer_documents(task, [path], reading=reading, **options)
        except (InputError, PlanError) as exc:
            yield Failed(task=task, source=path, error=" ".join(str(exc).split()))
