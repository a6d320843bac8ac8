"""The JSON contract of the answering commands: `ask`, `summarize` and every `chat` turn print one shape.

Version JSON_VERSION. Keys: version, command, turn (1, 2, ... in chat; null otherwise), question (null for
summarize), answer, finish_reason ("eos": the model ended; "stop": a --stop string; "length": --max-new-tokens
reached), model, sources, extension ("selfextend", "dca" or null when the input fit the window),
extension_settings (null inside the window; SelfExtend's window, group_size and scale_base, or DCA's chunk_size,
local_window and chunk_len), plan (the plan
as `longlm plan --json` gives it), usage (prompt_tokens, answer_tokens, total_tokens), timings (seconds: load,
prefill, decode), cache ("hit", "miss", "off", or "conversation" for a chat turn after the first) and
citations (null unless --cite; else each quote of the answer with found true/false and its page) and evidence
(null unless --evidence; else the passages the answer was written from, in document order: text, page, score
and rank among all passages). A
change that renames or removes a key raises the version; new keys may be added within a version.

In a batch (`--each`), a document that cannot be answered gives {version, command, sources, error} instead.
"""

from __future__ import annotations

from dataclasses import asdict

from ..defaults import JSON_VERSION


def response_dict(answer, *, command: str, turn: int | None = None) -> dict:
    """One answer as the versioned JSON object (a dict ready for json.dumps).

    ``answer`` has text, question, finish_reason, model, sources, plan, extension, prompt_tokens, new_tokens,
    timings, cache and citations (answer.Answer, chat.Turn).
    """
    return {
        "version": JSON_VERSION,
        "command": command,
        "turn": turn,
        "question": answer.question,
        "answer": answer.text,
        "finish_reason": answer.finish_reason,
        "model": answer.model,
        "sources": list(answer.sources),
        "extension": answer.extension,
        "extension_settings": getattr(answer, "extension_settings", None),
        "plan": asdict(answer.plan),
        "usage": {
            "prompt_tokens": answer.prompt_tokens,
            "answer_tokens": answer.new_tokens,
            "total_tokens": answer.prompt_tokens + answer.new_tokens,
        },
        "timings": {key: round(float(value), 3) for key, value in answer.timings.items()},
        "cache": answer.cache,
        "citations": None if answer.citations is None else [c.to_dict() for c in answer.citations],
        "evidence": _evidence(answer),
    }


def _evidence(answer) -> list[dict] | None:
    found = getattr(answer, "evidence", None)
    return None if found is None else [item.to_dict() for item in found]


def failure_dict(*, command: str, source: str, error: str) -> dict:
    """A batch document that could not be answered, as a JSON object."""
    return {"version": JSON_VERSION, "command": command, "sources": [source], "error": error}
