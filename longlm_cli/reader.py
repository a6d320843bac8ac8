"""The library behind `longlm summarize` and `longlm ask`: read, plan, extend, prefill, answer."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import IO, Callable, Sequence

from .defaults import DEFAULT_DEVICE, DEFAULT_DTYPE, DEFAULT_MODEL, DEFAULT_PREFILL_CHUNK
from .doccache import DocCacheSettings, prefill_cached, prompt_cache_key
from .documents import read_documents
from .generate import ProgressFn, SamplingSettings, Session, decode, prefill
from .models import LoadedModel, load_model
from .planning import Plan, make_plan
from .templates import chat_token_ids, load_template, user_message


@dataclass(frozen=True)
class ModelSettings:
    model: str = DEFAULT_MODEL
    device: str = DEFAULT_DEVICE
    dtype: str = DEFAULT_DTYPE
    trust_remote_code: bool = False


@dataclass(frozen=True)
class ExtensionSettings:
    window: int | None = None  # None: chosen by the plan
    group_size: int | None = None
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK


@dataclass(frozen=True)
class Answer:
    text: str
    model: str
    plan: Plan
    extended: bool
    prompt_tokens: int
    new_tokens: int
    sources: tuple[str, ...]
    timings: dict = field(default_factory=dict)  # seconds: load, prefill, decode
    cache: str = "off"  # the document cache: "hit" (prefix loaded), "miss" (prefilled and saved) or "off"

    def to_dict(self) -> dict:
        return asdict(self)  # the plan is a dataclass too: nested into a dict


def answer_documents(
    task: str,
    paths: Sequence[str],
    *,
    question: str | None = None,
    prompt_file: str | None = None,
    model: ModelSettings = ModelSettings(),
    extension: ExtensionSettings = ExtensionSettings(),
    sampling: SamplingSettings = SamplingSettings(),
    stdin: IO[bytes] | None = None,
    on_text: Callable[[str], None] | None = None,
    progress: ProgressFn | None = None,
    on_plan: Callable[[Plan, LoadedModel], None] | None = None,
    loaded: LoadedModel | None = None,
    cache: DocCacheSettings = DocCacheSettings(),
) -> Answer:
    """Summarize the documents at ``paths`` (task "summarize") or answer ``question`` about them ("ask").

    The whole document goes through one forward context: it is never truncated or chunked. SelfExtend is
    applied only when the prompt plus the answer exceed the model's pretraining window.
    With ``cache.enabled`` the document part of the prompt goes through the persistent document cache
    (see doccache): loaded when an earlier run saved it, else prefilled and saved.
    """
    template = load_template(task, prompt_file)  # fail on a bad template before any heavy work
    document = read_documents(paths, stdin=stdin)
    timings = {}
    start = time.perf_counter()
    loaded = loaded or load_model(model.model, device=model.device, dtype=model.dtype,
                                  trust_remote_code=model.trust_remote_code)
    timings["load"] = time.perf_counter() - start

    ids = chat_token_ids(loaded.tokenizer, user_message(template, document.text, question))
    plan = make_plan(context_window=loaded.context_window, length=len(ids) + sampling.max_new_tokens,
                     window=extension.window, group_size=extension.group_size)
    _configure(loaded.model, plan)
    if on_plan is not None:
        on_plan(plan, loaded)

    session = Session.start(loaded.model)
    start = time.perf_counter()
    prefix_len, key = (prompt_cache_key(loaded, model.model, template, document.text, ids, plan)
                       if cache.enabled else (0, None))
    logits, status = prefill_cached(session, ids, prefix_len=prefix_len, key=key, sources=document.sources,
                                    chunk=extension.prefill_chunk, progress=progress, settings=cache,
                                    device=loaded.device, prefill=prefill)
    timings["prefill"] = time.perf_counter() - start
    decoded = decode(session, loaded.tokenizer, logits, settings=sampling, on_text=on_text)
    timings["decode"] = decoded.seconds
    return Answer(text=decoded.text, model=loaded.name, plan=plan, extended=plan.needs_extension,
                  prompt_tokens=len(ids), new_tokens=len(decoded.token_ids), sources=document.sources,
                  timings=timings, cache=status)


def _configure(model, plan: Plan) -> None:
    from .selfextend import apply_selfextend, remove_selfextend

    if plan.needs_extension:
        apply_selfextend(model, group_size=plan.G, window=plan.W)
    else:
        remove_selfextend(model)
