"""The server's settings and their defaults: what `longlm serve`'s options fill (no HTTP stack imported)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ServeSettings:
        """From the parsed --api-key, --max-queue, --max-body (MiB), --request-timeout, --cors and --model-name."""
        return cls(
            api_key=options["api_key"],
            max_queue=options["max_queue"],
            max_body_bytes=options["max_body"] << 20,
            request_timeout=options["request_timeout"],
            cors_origins=tuple(options["cors"]),
            model_name=options["model_name"],
        )
