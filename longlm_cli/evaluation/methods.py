"""How a case is run with each method: the plain model, SelfExtend (planned W and G, or given ones), Dual Chunk
Attention (official settings for L), transformers' YaRN and dynamic NTK scalings, and truncation to the window
(what a user without extension would do).

Owns the method names and specs (`selfextend:1024x4` is SelfExtend with W = 1024, G = 4; a `+log` suffix, as in
`selfextend+log` or `selfextend:1024x4+log`, adds the reference code's query log-scaling with base L), the setting each
method takes at a length (``Setup``), and ``answer_greedily``, which switches the model to a method, answers
from a fresh KV cache and restores the model.
"""

from __future__ import annotations

import re
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import cast

from ..defaults import DEFAULT_EVAL_NEW_TOKENS, LOG_SCALE_BASE_WINDOWS
from ..errors import LongLMError

METHODS = ("none", "selfextend", "yarn", "dynamic")  # `--method all` in `longlm passkey`
EXTRA_METHODS = ("dca", "truncate")
_GRID = re.compile(r"selfextend:(\d+)x(\d+)")
LOG_SUFFIX = "+log"  # selfextend specs only: SelfExtend with query log-scaling at base LOG_SCALE_BASE_WINDOWS * L


@dataclass(frozen=True)
class Setup:
    """How one method runs at one length: SelfExtend's W, G and log-scaling base, a RoPE scaling factor, or a
    token budget."""

    extended: bool
    W: int | None = None
    G: int | None = None
    factor: float | None = None
    budget: int | None = None  # truncate: the most prompt tokens kept
    scale_base: float | None = None  # SelfExtend's query log-scaling base (`+log` methods); None: off


def _split_log(spec: str) -> tuple[str, bool]:
    """('selfextend:16x4', True) for 'selfextend:16x4+log'; the spec unchanged and False without the suffix."""
    spec = spec.strip().lower()
    if spec.endswith(LOG_SUFFIX):
        return spec[: -len(LOG_SUFFIX)], True
    return spec, False


def parse_method(spec: str) -> tuple[str, int | None, int | None]:
    """'selfextend:1024x4' -> ('selfextend', 1024, 4); 'yarn' -> ('yarn', None, None); a '+log' suffix (SelfExtend
    only) parses like the spec without it: see ``is_log_scaled``."""
    spec, log = _split_log(spec)
    match = _GRID.fullmatch(spec)
    if match:
        return "selfextend", int(match.group(1)), int(match.group(2))
    if spec not in (*METHODS, *EXTRA_METHODS) or (log and spec != "selfextend"):
        raise LongLMError(
            f"unknown method {spec + LOG_SUFFIX if log else spec!r}; choose from "
            f"{', '.join((*METHODS, *EXTRA_METHODS))}, or selfextend:WxG, with {LOG_SUFFIX} after a selfextend "
            "method for query log-scaling"
        )
    return spec, None, None


def is_log_scaled(spec: str) -> bool:
    """Whether ``spec`` (a valid method) asks for SelfExtend's query log-scaling ('selfextend:WxG+log')."""
    return _split_log(spec)[1]


def method_setup(
    spec: str,
    length: int,
    *,
    L: int,
    max_new_tokens: int,
    window=None,
    group_size=None,
    log_base=None,
    extend_from: float | None = None,
) -> Setup:
    """The setting ``spec`` runs with for a ``length``-token prompt on a model of window ``L``.

    ``window``/``group_size`` are the user's SelfExtend choice for plain ``selfextend`` (None: planned).
    ``+log`` methods log-scale queries at base ``log_base`` (None: LOG_SCALE_BASE_WINDOWS * L, the reference's
    pretraining length); methods without ``+log`` are never scaled. SelfExtend methods switch on above
    ``extend_from`` * L (None: beyond L, as every other method).
    """
    from ..planning.plan import make_plan

    name, W, G = parse_method(spec)
    target = length + max_new_tokens
    early = name == "selfextend" and extend_from is not None and target > extend_from * L
    if name == "none" or (target <= L and not early):
        return Setup(extended=False)
    if name == "truncate":
        return Setup(extended=False, budget=L - max_new_tokens)
    if name == "dca":
        return Setup(extended=True)
    if name == "selfextend":
        W, G = (W, G) if W is not None else (window, group_size)
        plan = make_plan(context_window=L, length=target, window=W, group_size=G, extend_from=extend_from)
        if not plan.needs_extension:  # N <= W: nothing lies beyond the neighbour window
            return Setup(extended=False)
        default_base = log_base if log_base is not None else LOG_SCALE_BASE_WINDOWS * L
        scale_base = float(default_base) if is_log_scaled(spec) else None
        return Setup(extended=True, W=plan.W, G=plan.G, scale_base=scale_base)
    return Setup(extended=True, factor=round(target / L, 4))


def method_record(loaded, spec: str, setup: Setup) -> dict:
    """What a case's record says of its method beyond W, G and factor: Dual Chunk Attention's settings
    (``{"dca": {"chunk_size", "local_window", "chunk_len"}}``) when it ran; else nothing."""
    from ..engine.methods import dca_settings

    if parse_method(spec)[0] == "dca" and setup.extended:
        return {"dca": dca_settings(loaded.model.config, loaded.context_window)}
    return {}


@contextmanager
def running(loaded, spec: str, setup: Setup):
    """The model switched to ``spec`` with ``setup``; yields whether to prefill in one pass (else the CLI's chunks)."""
    from ..engine.methods import attach, detach
    from ..engine.scaling import rope_scaling

    name = parse_method(spec)[0]
    model = loaded.model
    try:
        if name in ("selfextend", "dca") and setup.extended:
            attach(
                model, name, L=loaded.context_window, window=setup.W, group_size=setup.G, scale_base=setup.scale_base
            )
            yield False  # the CLI's chunked prefill, as `ask` runs it
            return
        detach(model)
        scaling = name if name in ("yarn", "dynamic") and setup.extended else None
        context = (
            # method_setup gives every extended yarn or dynamic setup its factor.
            rope_scaling(model, scaling, factor=cast(float, setup.factor), context_window=loaded.context_window)
            if scaling
            else nullcontext()
        )
        with context:
            # One pass: transformers' SDPA then runs the causal kernel without a mask (a chunk after the first
            # needs an explicit mask, a slower path), and dynamic NTK rotates every prompt key alike.
            yield True
    finally:
        detach(model)


def answer_greedily(loaded, spec: str, setup: Setup, ids, *, max_new_tokens: int, **repetition) -> str:
    """The greedy answer to ``ids`` [1, n] with method ``spec`` switched on, from a fresh KV cache;
    ``repetition``: SamplingSettings' repetition_penalty / no_repeat_ngram_size."""
    with running(loaded, spec, setup) as one_pass:
        chunk = ids.shape[1] if one_pass else None
        return greedy_answer(
            loaded.model, loaded.tokenizer, ids, max_new_tokens=max_new_tokens, chunk=chunk, **repetition
        )


def greedy_answer(
    model, tokenizer, ids, *, max_new_tokens: int = DEFAULT_EVAL_NEW_TOKENS, chunk: int | None = None, **repetition
) -> str:
    """The greedy answer to the prompt ``ids`` [1, n] from a fresh KV cache (prefilled in ``chunk``-token
    pieces; None is the CLI's default chunk); ``repetition`` as in answer_greedily."""
    from ..runtime.generate import SamplingSettings, Session, decode, prefill

    session = Session.start(model, reserve=ids.shape[1] + max_new_tokens)
    logits = prefill(session, ids, chunk=chunk) if chunk else prefill(session, ids)
    return decode(
        session,
        tokenizer,
        logits,
        settings=SamplingSettings(max_new_tokens=max_new_tokens, temperature=0.0, **repetition),
    ).text
