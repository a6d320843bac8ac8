"""The model side of `longlm serve`: one loaded model answering requests one at a time, the KV cache kept between
them.

A request's messages are rendered with the model's chat template, every content as text (a document in a
message cannot forge turns: templates.apply_chat_template). It is planned as `ask` plans: the prompt plus the
answer's room, beyond L through SelfExtend or DCA, never truncated. Beyond L the plan is made for that length
rounded up to L / PLAN_STEP_FRACTION tokens, so that the next question over the same document usually gets the
same W and G, and with them the same cache: a request whose prompt begins with the tokens the cache holds
prefills only the rest (``cached_tokens``). The HTTP side is app.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..answering.chat import render_conversation
from ..answering.evidence import (
    DocumentTokens,
    choose,
    document_tokens,
    prompt_session,
    question_start,
    rank,
    tapped,
    token_scores,
)
from ..answering.pipeline import ExtensionSettings, configure, default_method, plan_for_length
from ..defaults import DEFAULT_EVIDENCE_HEADS, DEFAULT_EVIDENCE_UNIT
from ..doccache.keys import common_prefix_length
from ..errors import PlanError
from ..evaluation.heads import heads_for
from ..planning.plan import Plan, longest_length, make_plan
from ..runtime.allocator import give_back_free_heap
from ..runtime.generate import Session, decode, prefill
from ..runtime.loader import LoadedModel
from ..runtime.sampling import SamplingSettings
from .store import MIN_NEW_TOKENS, PromptStore

_log = logging.getLogger(__name__)
OVERSIZED = 2  # a session with more than this many times the room a request plans is replaced (_oversized)

PLAN_STEP_FRACTION = 8  # beyond L, plans are made for the prompt and answer rounded up to L / 8 tokens


class Cancelled(Exception):
    """The client went away, or the server is stopping: the request ends at the next token."""


@dataclass(frozen=True)
class Overrides:
    """A request's own extension settings (its "longlm" object); None: the server's."""

    extension: str | None = None
    window: int | None = None
    group_size: int | None = None
    evidence: int = 0  # answer from this many passages the last question reads (0: from the whole prompt)
    evidence_unit: str = DEFAULT_EVIDENCE_UNIT


@dataclass(frozen=True)
class Request:
    """What to answer: chat ``messages`` (role and text content), or a plain ``prompt`` to continue."""

    messages: tuple[dict, ...] | None
    prompt: str | None
    sampling: SamplingSettings
    overrides: Overrides = Overrides()


@dataclass(frozen=True)
class Reading:
    """A request read for evidence: the document (the last user message but its last paragraph), the question
    (that paragraph) and where the document's tokens are in the prompt."""

    document: str
    question: str
    tokens: DocumentTokens


@dataclass(frozen=True)
class Planned:
    """A request with its prompt's token ids and the plan it will run with (Engine.plan)."""

    request: Request
    ids: list[int]
    plan: Plan
    extension: ExtensionSettings


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # OpenAI's: "stop" (the model ended, or a stop string) or "length"
    prompt_tokens: int
    cached_tokens: int  # of the prompt, reused from the previous request's KV cache
    completion_tokens: int
    plan: dict
    extension: str | None  # "selfextend", "dca", or None when the prompt and answer fit L
    timings: dict  # seconds: prefill, decode
    evidence: tuple[dict, ...] | None = None  # with longlm.evidence: the passages the answer was written from


ProgressFn = Callable[[int, int], None]


class Engine:
    """One model, one KV cache; ``run`` is called by one thread at a time (app.py holds the slot)."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        requested: str,
        extension: ExtensionSettings = ExtensionSettings(),
        store: PromptStore | None = None,
    ):
        self.loaded = loaded
        self.store = store  # prompts kept across restarts (store.py); None: in memory only
        self.requested = requested  # the name the model was asked for (the tuned settings are keyed by it)
        self.extension = extension
        self.session: Session | None = None
        self.heads: list | None = None  # the model's retrieval heads, once a request asked for evidence
        self.state: tuple | None = None  # the attention the session's cache was made with (_attention)
        self.current: tuple[Plan, ExtensionSettings] | None = None  # the plan that made it, and its settings
        self.cached_ids: list[int] = []
        self.lock = threading.Lock()

    @property
    def method(self) -> str:
        """What runs beyond L unless a request says otherwise."""
        return default_method(self.loaded.model.config, self.extension)

    @property
    def context_window(self) -> int:
        return self.loaded.context_window

    def capacity(self) -> int:
        """The longest prompt plus answer the server's extension settings reach."""
        return longest_length(self.context_window, window=self.extension.window, group_size=self.extension.group_size)

    def token_ids(self, request: Request) -> list[int]:
        tokenizer = self.loaded.tokenizer
        if request.messages is not None:
            return render_conversation(tokenizer, list(request.messages))
        return list(tokenizer(request.prompt, add_special_tokens=True, split_special_tokens=True)["input_ids"])

    def plan(self, request: Request) -> Planned:
        """The request's prompt ids and plan; PlanError when even the extension cannot hold the prompt and the
        answer (checked before the request waits for the model, so a stream can still answer 400)."""
        ids = self.token_ids(request)
        plan, extension = self._plan(len(ids), request)
        return Planned(request, ids, plan, extension)

    def run(
        self,
        planned: Planned,
        *,
        on_text: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] = lambda: False,
        progress: ProgressFn | None = None,
    ) -> Completion:
        """Answer a planned request; Cancelled when ``cancelled()`` turns true (checked at each chunk and piece
        of text)."""
        with self.lock:
            try:
                return self._run(planned, on_text, cancelled, progress)
            finally:
                give_back_free_heap()  # what this request's prefill freed, so the server's memory does not creep

    def _run(self, planned: Planned, on_text, cancelled, progress) -> Completion:
        ids, plan, extension = planned.ids, planned.plan, planned.extension
        start = time.perf_counter()
        reading = self._evidence_reading(planned)
        chosen = None
        if reading is None:
            logits, keep = self.prefill(planned, cancelled=cancelled, progress=progress)
        else:
            logits, keep, chosen = self._prefill_tapped(planned, reading, cancelled, progress)
        prefilled = time.perf_counter()
        assert self.session is not None and self.state is not None  # prefill (through _reuse) has set both
        session = self.session
        try:
            if chosen is not None:  # the answer is written from the passages, in a short prompt of its own
                assert reading is not None  # passages are chosen only from a reading
                content = chosen.text + "\n\n" + reading.question
                evidence_ids = render_conversation(self.loaded.tokenizer, [{"role": "user", "content": content}])
                reserve = planned.request.sampling.max_new_tokens
                session, logits = prompt_session(self.loaded, self.requested, extension, evidence_ids, reserve)
            decoded = decode(
                session,
                self.loaded.tokenizer,
                logits,
                settings=planned.request.sampling,
                on_text=_checked(on_text, cancelled),
            )
        except BaseException:
            self._keep_prompt_only(ids)
            raise
        finally:
            if chosen is not None:
                configure(self.loaded.model, plan, extension)  # back to what the session's cache was made with
        self.cached_ids = (ids + list(decoded.token_ids))[: self.session.length]
        if self.store is not None and len(ids) - keep >= MIN_NEW_TOKENS:
            self.store.save(self.session, self.state, ids)
        return Completion(
            text=decoded.text,
            finish_reason="length" if decoded.finish_reason == "length" else "stop",
            prompt_tokens=len(ids),
            cached_tokens=keep,
            completion_tokens=len(decoded.token_ids),
            plan=asdict(plan),
            extension=extension.method_on(plan),
            timings={"prefill": round(prefilled - start, 3), "decode": round(decoded.seconds, 3)},
            evidence=None if chosen is None else tuple(f.to_dict() for f in chosen.passages),
        )

    def _evidence_reading(self, planned: Planned) -> Reading | None:
        """With longlm.evidence, the last user message as a document and its last paragraph as the question; None
        without, or when that message has a single paragraph or its document's tokens cannot be placed."""
        wanted = planned.request.overrides
        users = [m for m in planned.request.messages or () if m["role"] == "user"]
        parts = users[-1]["content"].rsplit("\n\n", 1) if wanted.evidence and users else []
        if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
            return None
        tokens = document_tokens(self.loaded.tokenizer, parts[0], planned.ids)
        if tokens is None:
            return None
        if self.heads is None:
            self.heads = heads_for(self.loaded, self.requested, on_note=_log.info)
            configure(self.loaded.model, planned.plan, planned.extension)  # measuring ran the model plainly
        return Reading(parts[0], parts[1].strip(), tokens)

    def _prefill_tapped(self, planned: Planned, reading: Reading, cancelled, progress):
        """``prefill`` with the question's rows tapped (read again when the cache held them): (logits, tokens
        reused, the best passages in document order)."""
        wanted = planned.request.overrides
        assert self.heads is not None  # _evidence_reading measured them before giving a reading
        heads = self.heads[:DEFAULT_EVIDENCE_HEADS]
        rows = question_start(self.loaded.tokenizer, reading.question, planned.ids, reading.tokens.rows_from)
        keep = self._reuse(planned.plan, planned.extension, planned.ids)  # may switch the method: before the tap
        assert self.session is not None  # _reuse has made one
        if keep > rows:  # the rows must be read again to be seen
            self.session.cache.crop(rows - self.session.length)
            keep = rows
        with tapped(self.loaded.model, rows, len(planned.ids), {layer for layer, _ in heads}) as tap:
            logits = self._read(planned, keep, cancelled, progress)
        ranked = rank(reading.document, reading.tokens, token_scores(tap.received, heads), wanted.evidence_unit)
        return logits, keep, choose(ranked, wanted.evidence)

    def prefill(self, planned: Planned, *, cancelled: Callable[[], bool] = lambda: False, progress=None):
        """Bring the KV cache to ``planned``'s prompt, reading only what it lacks: (the last token's logits [1, V],
        the tokens reused). run holds the engine's lock around it."""
        keep = self._reuse(planned.plan, planned.extension, planned.ids)
        return self._read(planned, keep, cancelled, progress), keep

    def _read(self, planned: Planned, keep: int, cancelled, progress):
        try:
            return self._prefill(planned.ids, keep, planned.extension, cancelled, progress)
        except BaseException:
            self._keep_prompt_only(planned.ids)
            raise

    def _plan(self, prompt_tokens: int, request: Request) -> tuple[Plan, ExtensionSettings]:
        """The plan the cache was made with when it still suits (so the cache stays usable), else a new one for
        the prompt and answer, rounded up beyond L."""
        extension = _overridden(self.extension, request.overrides)
        needed = prompt_tokens + request.sampling.max_new_tokens
        kept = self._current_plan_for(needed, extension)
        if kept is not None:
            assert self.current is not None  # kept is the current plan, stretched
            return kept, self.current[1]
        step = max(1, self.context_window // PLAN_STEP_FRACTION)
        rounded = needed if needed <= self.context_window else -(-needed // step) * step
        try:
            plan, chosen, _ = plan_for_length(self.loaded, self.requested, rounded, extension)
        except PlanError:
            plan, chosen, _ = plan_for_length(self.loaded, self.requested, needed, extension)
        return plan, chosen

    def _current_plan_for(self, needed: int, extension: ExtensionSettings) -> Plan | None:
        """The cache's plan for ``needed`` tokens when the request chose nothing of its own and the plan's W and G
        keep the farthest grouped position within the paper's bound (2L/3) at that length; else None."""
        current = self.current
        if current is None or extension != self.extension or not current[0].needs_extension:
            return None
        plan = current[0]
        if needed <= plan.L or plan.W + (needed - plan.W) / plan.G > plan.high:
            return None
        try:
            return make_plan(context_window=plan.L, length=needed, window=plan.W, group_size=plan.G)
        except PlanError:
            return None

    def _reuse(self, plan: Plan, extension: ExtensionSettings, ids: Sequence[int]) -> int:
        """How many of ``ids`` the cache already holds under this plan (the cache is cut back to them); a new
        session when the plan's attention differs from the cache's."""
        state = _attention(plan, extension)
        if (
            self.session is None
            or state != self.state
            or self.session.length > plan.capacity
            or self._oversized(self.session, plan, ids)
        ):
            configure(self.loaded.model, plan, extension)
            self.session = Session.start(self.loaded.model, reserve=plan.N)
            self.state, self.cached_ids = state, []
        self.current = (plan, extension)
        keep = min(common_prefix_length(self.cached_ids, ids), len(ids) - 1)
        if keep < self.session.length:
            self.session.cache.crop(keep - self.session.length)
        if self.store is not None and len(ids) - keep >= MIN_NEW_TOKENS:
            keep = self._from_store(plan, ids, keep)
        return keep

    def _oversized(self, session: Session, plan: Plan, ids: Sequence[int]) -> bool:
        """Whether the session's buffers hold more than twice the room ``plan`` needs while it shares too little
        with ``ids`` to be worth keeping: a short request after a long one then starts a session of its size, and
        the long prompt's memory goes back to the system (a long one is in the prompt store, on disk)."""
        if session.room <= max(OVERSIZED * plan.N, MIN_NEW_TOKENS):  # small buffers cost little to keep
            return False
        return common_prefix_length(self.cached_ids, ids) < MIN_NEW_TOKENS

    def _from_store(self, plan: Plan, ids: Sequence[int], keep: int) -> int:
        """A saved prompt sharing more than ``keep`` tokens with ``ids`` replaces the session; the tokens kept."""
        assert self.store is not None and self.state is not None  # _reuse calls this with a store, its state set
        found = self.store.longest(self.state, ids, at_least=keep)
        if found is None:
            return keep
        session = Session.start(self.loaded.model, reserve=plan.N)
        if not self.store.load(session, found):
            return keep
        self.session, self.cached_ids = session, list(ids[: session.length])
        return session.length

    def _prefill(self, ids, keep: int, extension: ExtensionSettings, cancelled, progress):
        import torch

        def step(done: int, total: int) -> None:
            if cancelled():
                raise Cancelled()
            if progress is not None:
                progress(keep + done, keep + total)

        new = torch.tensor([list(ids[keep:])], device=self.loaded.device)
        assert self.session is not None  # _reuse has made one
        return prefill(self.session, new, chunk=extension.prefill_chunk, progress=step)

    def _keep_prompt_only(self, ids: Sequence[int]) -> None:
        """After a request ended early: what the cache holds of ``ids`` stays usable; anything beyond is cut."""
        if self.session is None:
            return
        held = min(self.session.length, len(ids))
        try:
            if held < self.session.length:
                self.session.cache.crop(held - self.session.length)
            self.cached_ids = list(ids[:held])
        except Exception:  # a cache that cannot be cut back: start afresh next time
            self.session, self.state, self.current, self.cached_ids = None, None, None, []


def _checked(on_text, cancelled):
    def show(piece: str) -> None:
        if cancelled():
            raise Cancelled()
        if on_text is not None:
            on_text(piece)

    return show


def _attention(plan: Plan, extension: ExtensionSettings) -> tuple:
    """What the KV cache's contents depend on: DCA's settings come from L alone, SelfExtend's from W, G and the
    query scaling, and without extension from nothing."""
    method = extension.method_on(plan)
    if method == "selfextend":
        return (method, plan.W, plan.G, extension.scale_base)
    return (method,)


def _overridden(extension: ExtensionSettings, overrides: Overrides) -> ExtensionSettings:
    changes: dict[str, Any] = {}
    if overrides.extension is not None:
        changes["method"] = overrides.extension
    if overrides.window is not None:
        changes["window"] = overrides.window
    if overrides.group_size is not None:
        changes["group_size"] = overrides.group_size
    return replace(extension, **changes) if changes else extension
