"""The answering pipeline under `ask`, `summarize` and `chat`: settings, `prepare` and `prefill_prompt`.

``prepare`` reads the template and the documents, loads the model, plans W and G for the prompt plus the room
asked for, and switches the extension method (SelfExtend, or Dual Chunk Attention) on or off. ``prefill_prompt``
prefills a prompt whose first tokens are the document, loading that prefix from the document cache (doccache/store.py,
a plain store) when an earlier run saved it, else prefilling and saving it. answer.py and chat.py are thin users
of both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import IO, Any

from ..defaults import (
    DEFAULT_DEVICE,
    DEFAULT_DTYPE,
    DEFAULT_KV_DTYPE,
    DEFAULT_MODEL,
    DEFAULT_QUANTIZE,
    DOC_CACHE_MAX_BYTES_ENV,
)
from ..doccache.keys import document_key, document_prefix_length, model_identity
from ..doccache.store import DocCacheSettings, entry_size, load_entry, prune, save_entry
from ..documents import Document, read_documents
from ..engine.methods import ExtensionSettings, configure, default_method, method_settings  # noqa: F401 (re-exported)
from ..errors import CacheError, PlanError
from ..models.tokens import count_tokens
from ..paths import human_size, own_directory
from ..planning.plan import Plan, make_plan
from ..planning.tuned import Tuned, tuned_plan
from ..report import note, warn
from ..runtime.generate import ProgressFn, Session, prefill
from ..runtime.kvcache import cache_unsupported_reason
from ..runtime.loader import LoadedModel, load_model
from .templates import OutputShape, Template, chat_token_ids, load_template, user_message

PlanFn = Callable[["Prepared"], None]  # told what was read, loaded and planned, before any prefill


@dataclass(frozen=True)
class ModelSettings:
    model: str = DEFAULT_MODEL
    device: str = DEFAULT_DEVICE
    dtype: str = DEFAULT_DTYPE
    quantize: str = DEFAULT_QUANTIZE
    trust_remote_code: bool = False
    kv_dtype: str = DEFAULT_KV_DTYPE

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ModelSettings:
        """From the parsed -m and the loading options (cli/options.py hands those over as one ``loading``
        dict: --device, --dtype, --quantize, --kv-dtype, --trust-remote-code)."""
        return cls(model=options["model"], **options["loading"])

    def load(self, tokens: int = 0) -> LoadedModel:
        """The model, admitted for a run of about ``tokens`` tokens (runtime.loader.load_model)."""
        return load_model(
            self.model,
            device=self.device,
            dtype=self.dtype,
            trust_remote_code=self.trust_remote_code,
            quantize=self.quantize,
            tokens=tokens,
            kv_dtype=self.kv_dtype,
        )


@dataclass(frozen=True)
class Reading:
    """How prepare reads the documents and what it runs them with: the prompt file, the answer's shape, the
    model and the extension settings, stdin (for '-'), a hook told the plan, and a model already loaded."""

    prompt_file: str | None = None
    shape: OutputShape = OutputShape()
    model: ModelSettings = ModelSettings()
    extension: ExtensionSettings = ExtensionSettings()
    stdin: IO[bytes] | None = None
    on_plan: PlanFn | None = None
    loaded: LoadedModel | None = None


@dataclass(frozen=True)
class Prepared:
    """Everything an answer needs before its prefill: the inputs, the loaded model and the plan it runs with."""

    template: Template
    shape: OutputShape
    document: Document
    loaded: LoadedModel
    requested_model: str
    ids: list[int]  # the prompt: the template filled with the document and the question, as chat-template ids
    plan: Plan
    extension: ExtensionSettings
    load_seconds: float
    tuned: Tuned | None = None  # `longlm tune`'s settings when they were used


def prepare(
    task: str, paths: Sequence[str], *, question: str | None, reserve: int, reading: Reading = Reading()
) -> Prepared:
    """Read, load, plan for the prompt plus ``reserve`` tokens, and switch SelfExtend on or off to match.

    The template (with ``shape``'s instructions at its end) is checked before any heavy work; the document is
    never truncated.
    """
    shape, model, extension, loaded = reading.shape, reading.model, reading.extension, reading.loaded
    template = load_template(task, reading.prompt_file).shaped(shape)
    document = read_documents(paths, stdin=reading.stdin)
    start = time.perf_counter()
    loaded = loaded or model.load(count_tokens(document.text, model=model.model).count + reserve)
    load_seconds = time.perf_counter() - start
    ids = chat_token_ids(loaded.tokenizer, user_message(template, document.text, question))
    try:
        plan, extension, tuned = plan_for_length(loaded, model.model, len(ids) + reserve, extension)
    except PlanError as exc:
        if reserve <= len(ids) or not _plannable(loaded, model.model, len(ids) + 1, extension):
            raise
        # The answer's room, not the document, is what does not fit: say so rather than "document too long".
        raise PlanError(f"the prompt's {len(ids):,} tokens and an answer of up to {reserve:,} tokens: {exc}") from None
    configure(loaded.model, plan, extension)
    prepared = Prepared(
        template=template,
        shape=shape,
        document=document,
        loaded=loaded,
        requested_model=model.model,
        ids=ids,
        plan=plan,
        extension=extension,
        load_seconds=load_seconds,
        tuned=tuned,
    )
    if reading.on_plan is not None:
        reading.on_plan(prepared)
    return prepared


def plan_for_length(loaded: LoadedModel, requested: str, length: int, extension: ExtensionSettings):
    """(plan, extension settings, tuned entry or None): `longlm tune`'s winner for this model near ``length``
    when the user chose no extension setting and the input needs extension, else the plan's own choice."""
    L = loaded.context_window
    found = tuned_plan(requested, L, length) if extension.use_tuned and not extension.chosen_by_user() else None
    if found is not None:
        plan, tuned = found
        chosen = replace(
            extension,
            method=tuned.method,
            window=tuned.window,
            group_size=tuned.group_size,
            scale_base=tuned.scale_base,
        )
        return plan, chosen, tuned
    extension = replace(extension, method=default_method(loaded.model.config, extension))
    plan = make_plan(
        context_window=L,
        length=length,
        window=extension.window,
        group_size=extension.group_size,
        extend_from=extension.extend_from if extension.method == "selfextend" else None,
    )
    return plan, extension, None


def _plannable(loaded, requested: str, length: int, extension: ExtensionSettings) -> bool:
    try:
        plan_for_length(loaded, requested, length, extension)
    except PlanError:
        return False
    return True


def prefill_prompt(
    session: Session,
    prepared: Prepared,
    ids: Sequence[int],
    *,
    cache: DocCacheSettings = DocCacheSettings(),
    progress: ProgressFn | None = None,
):
    """Prefill ``ids`` (a prompt that starts with ``prepared``'s document) through the document cache, in chunks
    of the prepared extension settings' prefill_chunk tokens.

    Returns (last logits [1, V], status) with status "hit", "miss" or "off" as in ``prefill_cached``.
    """
    prefix_len, key = (
        prompt_cache_key(
            prepared.loaded,
            prepared.requested_model,
            prepared.template,
            prepared.document.text,
            ids,
            prepared.plan,
            prepared.extension,
        )
        if cache.enabled
        else (0, None)
    )
    return prefill_cached(
        session,
        ids,
        prefix_len=prefix_len,
        key=key,
        sources=prepared.document.sources,
        chunk=prepared.extension.prefill_chunk,
        progress=progress,
        settings=cache,
        device=prepared.loaded.device,
    )


def prompt_cache_key(
    loaded: LoadedModel,
    requested_model: str,
    template: Template,
    document: str,
    ids: Sequence[int],
    plan: Plan,
    extension: ExtensionSettings = ExtensionSettings(),
) -> tuple[int, str]:
    """(document prefix length, cache key) for the prompt ``ids`` = chat_token_ids(template filled with document)."""
    before, _ = template.split()
    prefix_len = document_prefix_length(ids, lambda after: chat_token_ids(loaded.tokenizer, before + document + after))
    identity = model_identity(requested_model, loaded.model)
    method = extension.method_on(plan)
    # document_key has no field for these: they go into the identity, so SelfExtend's keys stay as they were.
    if method == "dca":  # other positions for every layer's queries: other keys and values after the first layer
        identity = {**identity, "extension": "dca"}
    elif method is not None and extension.scale_base is not None:
        # Log-scaled queries change every layer's output, hence the keys and values of all layers but the first.
        identity = {**identity, "selfextend_scale_base": float(extension.scale_base)}
    key = document_key(
        prefix_ids=ids[:prefix_len],
        document=document,
        identity=identity,
        dtype=loaded.dtype,
        device_type=str(loaded.device).split(":")[0],
        window=plan.W,
        group_size=plan.G,
        extended=plan.needs_extension,
    )
    return prefix_len, key


def _offset_progress(progress, base: int, total: int):
    if progress is None:
        return None
    return lambda done, _: progress(base + done, total)


def _worth_caching(settings: DocCacheSettings, key: str | None, prefix_len: int, total: int) -> bool:
    """Whether a prompt of ``total`` tokens goes through the cache: it is on, the prefix is followed by more
    tokens, and the document is not so short that an entry would save only a fraction of a second."""
    if not settings.enabled or key is None or not 0 < prefix_len < total:
        return False
    return prefix_len >= settings.resolved_min_tokens()


def prefill_cached(
    session: Session,
    ids: Sequence[int],
    *,
    prefix_len: int,
    key: str | None,
    sources: Sequence[str],
    chunk: int,
    progress=None,
    settings: DocCacheSettings = DocCacheSettings(),
    device=None,
    dtype=None,
):
    """Prefill ``ids`` into ``session``, the first ``prefix_len`` through the document cache.

    Returns (last logits [1, V], status) with status "hit" (the prefix was loaded), "miss" (prefilled and
    saved) or "off" (cache disabled or not possible for this model: everything prefilled at once).
    """
    import torch

    device = device if device is not None else next(session.model.parameters()).device
    input_ids = torch.tensor([list(ids)], device=device)
    reason = cache_unsupported_reason(session.cache) if settings.enabled and key is not None else None
    if reason is None and settings.enabled and key is not None:
        reason = unusable_directory(settings.resolved_directory())
    if reason is not None:
        note(f"document cache off: {reason}")
    if reason is not None or not _worth_caching(settings, key, prefix_len, len(ids)):
        return prefill(session, input_ids, chunk=chunk, progress=progress), "off"
    assert key is not None  # _worth_caching is False without a key
    directory = settings.resolved_directory()
    limit = settings.resolved_max_bytes()  # a bad $LONGLM_CACHE_MAX_BYTES fails before any work
    prefix = list(ids[:prefix_len])
    dtype = dtype if dtype is not None else session.kv_dtype  # what the entry's keys and values are kept in
    total = len(ids)
    adopt = session.adopt_rotated if session.rotates_in_place else None
    if load_entry(
        directory, key, prefix, session.cache, config=session.model.config, dtype=dtype, device=device, adopt=adopt
    ):
        status = "hit"
    else:
        prefill(session, input_ids[:, :prefix_len], chunk=chunk, progress=_offset_progress(progress, 0, total))
        status = "miss"
        save_within_limit(directory, key, session, prefix, sources, limit)
    logits = prefill(
        session, input_ids[:, prefix_len:], chunk=chunk, progress=_offset_progress(progress, prefix_len, total)
    )
    return logits, status


def unusable_directory(directory) -> str | None:
    """Why the document cache cannot use ``directory`` (a symbolic link: paths.own_directory), or None."""
    try:
        own_directory(directory)
    except CacheError as exc:
        return str(exc)
    return None


def save_within_limit(directory, key: str, session, prefix: list[int], sources: Sequence[str], limit: int) -> None:
    """Save the document's entry and prune the cache to ``limit``. An entry above the limit is not written (kept,
    it would evict every other entry and still be over the limit); a failure to write is one warning."""
    size = entry_size(session.cache, len(prefix))
    if size > limit:
        note(
            f"this document's cache entry would take {human_size(size)}, more than the cache limit of "
            f"{human_size(limit)} (${DOC_CACHE_MAX_BYTES_ENV}); not saved"
        )
        return
    try:
        save_entry(directory, key, session.cache, prefix, sources, rotated=session.rotated_in_place())
        prune(directory, max_bytes=limit, keep=key)
    except (OSError, CacheError) as exc:  # the answer does not need the cache: go on without it
        warn(f"could not save the document cache in {directory}: {getattr(exc, 'strerror', None) or exc}")
