"""The JSON contract of the answering commands: `ask`, `summarize` and every `chat` turn print one shape.

Version JSON_VERSION. Keys: version, command, turn (1, 2, ... in chat; null otherwise), question (null for
summarize), answer, finish_reason ("eos": the model ended; "stop": a --stop string; "length": --max-new-tokens
reached), model, sources, extension ("selfextend", "dca" or null when the input fit the window), plan (the plan
as `longlm plan --json` gives it), usage (prompt_tokens, answer_tokens, total_tokens), timings (seconds: load,
prefill, decode), cache ("hit", "miss", "off", or "conversation" for a chat turn after the first) and
citations (null unless --cite; else each quote of the answer with found true/false and its page). A
change that renames or removes a key raises the version; new keys may be added within a version.

In a batch (`--each`), a document that cannot be answered gives {version, command, sources, error} instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from .defaults import JSON_VERSION
from .planning import Plan


def response_dict(
    *,
    command: str,
    answer: str,
    question: str | None,
    finish_reason: str,
    model: str,
    sources: Sequence[str],
    plan: Plan,
    extension: str | None,
    prompt_tokens: int,
    answer_tokens: int,
    timings: dict,
    cache: str,
    turn: int | None = None,
    citations: Sequence | None = None,
) -> dict:
    """One answer as the versioned JSON object (a dict ready for json.dumps)."""
    return {
        "version": JSON_VERSION,
        "command": command,
        "turn": turn,
        "question": question,
        "answer": answer,
        "finish_reason": finish_reason,
        "model": model,
        "sources": list(sources),
        "extension": extension,
        "plan": asdict(plan),
        "usage": {
            "prompt_tokens": prompt_tokens,
            "answer_tokens": answer_tokens,
            "total_tokens": prompt_tokens + answer_tokens,
        },
        "timings": {key: round(float(value), 3) for key, value in timings.items()},
        "cache": cache,
        "citations": None if citations is None else [c.to_dict() for c in citations],
    }


def failure_dict(*, command: str, source: str, error: str) -> dict:
    """A batch document that could not be answered, as a JSON object."""
    return {"version": JSON_VERSION, "command": command, "sources": [source], "error": error}
