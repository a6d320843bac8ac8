"""OpenAI's wire shapes for `longlm serve`: request bodies checked into engine.Request, answers and errors built
as the openai client expects them. Pure Python; no HTTP stack, no torch.

A request that cannot be served is a RequestError with its HTTP status and OpenAI's error object. Fields this
server does not act on (frequency_penalty, logit_bias, user, ...) are accepted and ignored, as most local servers
do; fields that would change the answer in a way it cannot honour (n > 1, tools, logprobs, echo) are refused.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from typing import cast

from ..answering.passages import UNITS
from ..defaults import (
    DEFAULT_EVIDENCE_UNIT,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_TEMPERATURE,
    EXTENSION_METHODS,
    MAX_NEW_TOKENS_LIMIT,
)
from ..errors import InputError
from ..runtime.sampling import SamplingSettings
from .engine import Completion, Overrides, Request

ROLES = ("system", "developer", "user", "assistant")
MAX_STOP = 4  # as OpenAI: up to four stop strings
LONGLM_KEYS = ("extension", "window", "group_size", "evidence", "evidence_unit")  # the request's "longlm" object
MAX_EVIDENCE = 1000  # passages an answer may be written from
UNSUPPORTED = {  # field: (the value that is fine, why another is refused)
    "n": (1, "n must be 1: this server returns one choice"),
    "logprobs": (False, "log probabilities are not returned by this server"),
    "echo": (False, "echo is not supported by this server"),
    "tools": (None, "tool calls are not supported by this server"),
    "functions": (None, "function calls are not supported by this server"),
}


class RequestError(Exception):
    """A request answered with ``status`` and OpenAI's error object."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = {401: "authentication_error", 503: "server_error"}.get(self.status)
        return error_body(self.message, kind or "invalid_request_error", param=self.param, code=self.code)


def error_body(message: str, kind: str, *, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def parse_json(raw: bytes) -> dict:
    """The body as a JSON object; RequestError 400 for bytes that are not UTF-8, not JSON, or not an object."""
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise RequestError(400, "the request body is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise RequestError(400, f"the request body is not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    return body


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def chat_request(body: dict) -> Request:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty array", param="messages")
    return Request(
        messages=tuple(_message(m, i) for i, m in enumerate(messages)),
        prompt=None,
        sampling=sampling(body),
        overrides=overrides(body),
    )


def completion_request(body: dict) -> Request:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise RequestError(400, "prompt must be a non-empty string", param="prompt")
    return Request(messages=None, prompt=prompt, sampling=sampling(body), overrides=overrides(body))


def _message(message, index: int) -> dict:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise RequestError(400, f"{where} must be an object", param=where)
    role = message.get("role")
    if role not in ROLES:
        raise RequestError(400, f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}", param=f"{where}.role")
    content = message.get("content")
    if isinstance(content, list):  # content parts: text only
        parts = [p.get("text") if isinstance(p, dict) and p.get("type") == "text" else None for p in content]
        if any(not isinstance(p, str) for p in parts):
            raise RequestError(400, f"{where}.content may hold text parts only", param=f"{where}.content")
        content = "".join(cast("list[str]", parts))  # each a str: checked just above
    if not isinstance(content, str):
        raise RequestError(400, f"{where}.content must be a string", param=f"{where}.content")
    return {"role": "system" if role == "developer" else role, "content": content}


def sampling(body: dict) -> SamplingSettings:
    for field, (fine, why) in UNSUPPORTED.items():
        if body.get(field, fine) not in (fine, None):
            raise RequestError(400, why, param=field)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = DEFAULT_MAX_NEW_TOKENS if limit is None else _whole(limit, "max_tokens", 1, MAX_NEW_TOKENS_LIMIT)
    temperature = _number(body.get("temperature", DEFAULT_TEMPERATURE), "temperature", 0.0, 2.0)
    top_p = _number(body.get("top_p", 1.0), "top_p", 0.0, 1.0)
    if top_p == 0:
        raise RequestError(400, "top_p must be above 0", param="top_p")
    seed = body.get("seed")
    if seed is not None:
        seed = _whole(seed, "seed", -(2**63), 2**64 - 1)
    try:
        return SamplingSettings(
            max_new_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            top_p=top_p,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            stop=_stops(body.get("stop")),
        )
    except InputError as exc:
        raise RequestError(400, str(exc)) from None


def _stops(stop) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else ([] if stop is None else stop)
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > MAX_STOP:
        raise RequestError(400, f"stop must be a non-empty string or up to {MAX_STOP} of them", param="stop")
    return tuple(stops)


def overrides(body: dict) -> Overrides:
    """The request's "longlm" object: extension ("selfextend" or "dca"), window and group_size; evidence (answer
    from that many passages) and evidence_unit ("sentence" or "paragraph")."""
    extra = body.get("longlm")
    if extra is None:
        return Overrides()
    if not isinstance(extra, dict) or set(extra) - set(LONGLM_KEYS):
        raise RequestError(400, f"longlm may hold {', '.join(LONGLM_KEYS)} only", param="longlm")
    method = extra.get("extension")
    if method is not None and method not in EXTENSION_METHODS:
        raise RequestError(400, f"longlm.extension must be one of {', '.join(EXTENSION_METHODS)}", param="longlm")
    unit = extra.get("evidence_unit", DEFAULT_EVIDENCE_UNIT)
    if unit not in UNITS:
        raise RequestError(400, f"longlm.evidence_unit must be one of {', '.join(UNITS)}", param="longlm")
    window, group, evidence = extra.get("window"), extra.get("group_size"), extra.get("evidence")
    return Overrides(
        extension=method,
        window=None if window is None else _whole(window, "longlm.window", 1, 1 << 30),
        group_size=None if group is None else _whole(group, "longlm.group_size", 1, 1 << 30),
        evidence=0 if evidence is None else _whole(evidence, "longlm.evidence", 0, MAX_EVIDENCE),
        evidence_unit=unit,
    )


def stream_options(body: dict) -> bool:
    """Whether a streamed answer ends with a usage chunk (stream_options.include_usage)."""
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise RequestError(400, "stream_options.include_usage must be true or false", param="stream_options")
    return options.get("include_usage", False)


def streamed(body: dict) -> bool:
    value = body.get("stream", False)
    if not isinstance(value, bool):
        raise RequestError(400, "stream must be true or false", param="stream")
    return value


def _whole(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(400, f"{name} must be a whole number from {low:,} to {high:,}", param=name)
    return value


def _number(value, name: str, low: float, high: float) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value <= high:
        raise RequestError(400, f"{name} must be a number from {low:g} to {high:g}", param=name)
    return float(value)


# --- answers -----------------------------------------------------------------------------------------------


def new_id(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(12)}"


def usage(done: Completion) -> dict:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": done.cached_tokens},
    }


def details(done: Completion) -> dict:
    """What longlm adds to an answer: the plan it ran with, the extension, timings, and with longlm.evidence the
    passages the answer was written from."""
    found = {} if done.evidence is None else {"evidence": list(done.evidence)}
    return {"plan": done.plan, "extension": done.extension, "timings": done.timings, **found}


def chat_completion(done: Completion, *, model: str, ident: str) -> dict:
    message = {"role": "assistant", "content": done.text}
    choice = {"index": 0, "message": message, "finish_reason": done.finish_reason, "logprobs": None}
    return _answer("chat.completion", choice, done, model=model, ident=ident)


def text_completion(done: Completion, *, model: str, ident: str) -> dict:
    choice = {"index": 0, "text": done.text, "finish_reason": done.finish_reason, "logprobs": None}
    return _answer("text_completion", choice, done, model=model, ident=ident)


def _answer(kind: str, choice: dict | None, done: Completion, *, model: str, ident: str) -> dict:
    """A whole answer (or, with no choice, a stream's closing usage chunk) with its usage and longlm's details."""
    head = {"id": ident, "object": kind, "created": int(time.time()), "model": model}
    return {**head, "choices": [choice] if choice else [], "usage": usage(done), "longlm": details(done)}


def chunk(*, chat: bool, model: str, ident: str, text: str | None = None, finish: str | None = None) -> dict:
    """One streamed piece: the answer's text so far added to, or (``finish``) its end."""
    if chat:
        delta = {} if text is None else {"content": text}
        if text == "":
            delta["role"] = "assistant"
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        kind = "text_completion"
    return {"id": ident, "object": kind, "created": int(time.time()), "model": model, "choices": [choice]}


def usage_chunk(done: Completion, *, chat: bool, model: str, ident: str) -> dict:
    return _answer("chat.completion.chunk" if chat else "text_completion", None, done, model=model, ident=ident)
