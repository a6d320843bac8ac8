"""Binding and running the server: the socket first (so `--port 0` can say which port it got), then uvicorn
until SIGINT or SIGTERM, which let the running request finish for up to ``grace`` seconds and then cancel it."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

from ..answering.pipeline import ExtensionSettings, ModelSettings
from ..doccache.store import DocCacheSettings
from ..errors import InputError
from .settings import ServeSettings

EXTRA_MODULES = ("starlette", "uvicorn", "sse_starlette")
INSTALL_HINT = "longlm serve needs the serve extra: pip install 'longlm-cli[serve]'"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class Address:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}/v1"


def missing_extra() -> str | None:
    """INSTALL_HINT when a module of the serve extra cannot be imported, else None."""
    import importlib.util

    return INSTALL_HINT if any(importlib.util.find_spec(name) is None for name in EXTRA_MODULES) else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None, insecure: bool) -> None:
    """InputError for a server reachable beyond this machine with no API key, unless the user says so."""
    if not is_loopback(host) and api_key is None and not insecure:
        raise InputError(
            f"--host {host} would let other machines use the model with no key: give --api-key (or set "
            "LONGLM_API_KEY), or --insecure to serve without one"
        )


def bind(address: Address) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    try:
        return socket.create_server((address.host, address.port), family=family, reuse_port=False)
    except OSError as exc:
        raise InputError(f"cannot listen on {address.host}:{address.port}: {exc.strerror or exc}") from None


def serve(
    *,
    model: ModelSettings,
    extension: ExtensionSettings,
    settings: ServeSettings,
    address: Address = Address(),
    grace: float = DEFAULT_GRACE_SECONDS,
    cache: DocCacheSettings = DocCacheSettings(),
    on_ready: Callable[[str, object], None] | None = None,
) -> None:
    """Load the model, bind ``address`` and answer until stopped. ``on_ready(url, engine)`` once listening."""
    import uvicorn

    from ..runtime.allocator import share_heaps
    from .app import create_app
    from .engine import Engine
    from .store import PromptStore

    sock = bind(address)
    share_heaps()  # before any worker thread exists
    loaded = model.load()
    store = PromptStore(loaded, model.model, cache) if cache.enabled else None
    engine = Engine(loaded, requested=model.model, extension=extension, store=store)
    app = create_app(engine, settings)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        # uvicorn annotates it int, but only hands it to asyncio's timeout, which takes any number of seconds.
        timeout_graceful_shutdown=grace,  # type: ignore[arg-type]
        lifespan="off",
    )
    server = uvicorn.Server(config)
    if on_ready is not None:
        on_ready(address.url(sock.getsockname()[1]), engine)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn hands the signal on once it has stopped: a stop asked for, not a failure
        pass
