"""The server's settings and their defaults: what `longlm serve`'s options fill (no HTTP stack imported)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_QUEUE = 8  # requests waiting behind the running one
DEFAULT_MAX_BODY_BYTES = 64 << 20  # a request body (the documents are in it): 64 MiB
DEFAULT_REQUEST_TIMEOUT = 3600.0  # seconds a request may run, waiting included


@dataclass(frozen=True)
class ServeSettings:
    api_key: str | None = None  # None: no key asked for
    max_queue: int = DEFAULT_MAX_QUEUE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    cors_origins: tuple[str, ...] = ()
    model_name: str | None = None  # what /v1/models and the answers call the model; None: its own name
