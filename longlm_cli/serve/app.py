"""The HTTP side of `longlm serve`: a Starlette app speaking OpenAI's API over one engine.Engine.

Requests take turns on the one model in arrival order; at most ``max_queue`` wait behind the running one, and
any more get 503 with Retry-After. The model runs in a worker thread, so the server keeps answering (health,
models, 503s, keep-alives) while it works. A client that goes away, a request past its wall-time limit, or the
server stopping sets the request's cancel flag, which the engine checks at each prefill chunk and each token.
Streams are server-sent events (sse-starlette): a comment with the prefill's progress while the prompt is read,
then chat.completion.chunk objects and ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
from collections.abc import Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..errors import LongLMError, PlanError
from . import protocol
from .engine import Cancelled, Engine
from .protocol import RequestError
from .settings import ServeSettings

RETRY_AFTER_SECONDS = 5
KEEPALIVE_SECONDS = 10  # a stream's comment interval while nothing else is sent


class Slots:
    """One model, taken in turn: ``enter`` counts a request in (RequestError 503 beyond the queue's room), ``turn``
    waits for the model (asyncio.Lock wakes its waiters in arrival order)."""

    def __init__(self, max_queue: int):
        self.room = max_queue + 1
        self.inside = 0
        self.lock = asyncio.Lock()

    def enter(self) -> None:
        if self.inside >= self.room:
            raise RequestError(503, "the server is busy: every slot of its queue is taken; retry later", code="busy")
        self.inside += 1

    def leave(self) -> None:
        self.inside -= 1


def create_app(engine: Engine, settings: ServeSettings) -> Starlette:
    slots = Slots(settings.max_queue)
    server = _Handlers(engine, settings, slots)
    routes = [
        Route("/health", server.health, methods=["GET"]),
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/v1/chat/completions", server.chat, methods=["POST"]),
        Route("/v1/completions", server.completions, methods=["POST"]),
    ]
    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={404: _not_found, 405: _not_allowed})
    app.state.slots = slots
    return app


async def _not_found(request, exc) -> JSONResponse:
    return _error(RequestError(404, f"no such endpoint: {request.url.path}"))


async def _not_allowed(request, exc) -> JSONResponse:
    return _error(RequestError(405, f"{request.method} is not allowed on {request.url.path}"))


def _error(exc: RequestError) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.status == 503 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


class _Handlers:
    def __init__(self, engine: Engine, settings: ServeSettings, slots: Slots):
        self.engine, self.settings, self.slots = engine, settings, slots
        self.name = settings.model_name or engine.loaded.name

    async def health(self, request: HttpRequest) -> JSONResponse:
        return JSONResponse(
            {"status": "ok", "running": min(self.slots.inside, 1), "queued": max(0, self.slots.inside - 1)}
        )

    async def models(self, request: HttpRequest) -> JSONResponse:
        try:
            self._authorize(request)
        except RequestError as exc:
            return _error(exc)
        entry = {
            "id": self.name,
            "object": "model",
            "created": 0,
            "owned_by": "longlm",
            "context_window": self.engine.context_window,
            "max_context_length": self.engine.capacity(),
            "extension": self.engine.method,
        }
        return JSONResponse({"object": "list", "data": [entry]})

    async def chat(self, request: HttpRequest):
        return await self._answer(request, chat=True)

    async def completions(self, request: HttpRequest):
        return await self._answer(request, chat=False)

    async def _answer(self, request: HttpRequest, *, chat: bool):
        try:
            self._authorize(request)
            body = protocol.parse_json(await self._body(request))
            wanted = protocol.chat_request(body) if chat else protocol.completion_request(body)
            stream, with_usage = protocol.streamed(body), protocol.stream_options(body)
            planned = await _planned(self.engine, wanted)
            self.slots.enter()
        except RequestError as exc:
            return _error(exc)
        job = _Job(self.engine, planned, chat=chat, model=self.name)
        if stream:
            return EventSourceResponse(
                self._events(request, job, with_usage),
                ping=KEEPALIVE_SECONDS,
                send_timeout=self.settings.request_timeout,
            )
        try:
            done = await self._run(request, job)
        except RequestError as exc:
            return _error(exc)
        finally:
            self.slots.leave()
        return JSONResponse(job.answer(done))

    def _authorize(self, request: HttpRequest) -> None:
        key = self.settings.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise RequestError(401, "a valid API key is needed: Authorization: Bearer <key>", code="invalid_api_key")

    async def _body(self, request: HttpRequest) -> bytes:
        """The body, read no further than the size limit (413 beyond it, whatever Content-Length says)."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"the request body is larger than {limit:,} bytes", code="request_too_large")
        parts, size = [], 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise RequestError(413, f"the request body is larger than {limit:,} bytes", code="request_too_large")
            parts.append(part)
        return b"".join(parts)

    async def _run(self, request: HttpRequest, job: _Job):
        """Run ``job`` when its turn comes; cancel it when the client goes away or its time is up (waiting
        included)."""
        with anyio.move_on_after(self.settings.request_timeout) as timer:
            async with self.slots.lock, anyio.create_task_group() as group:
                group.start_soon(_cancel_on_disconnect, request, group.cancel_scope)
                try:
                    done, failed = await job.run(), None
                except RequestError as exc:  # raised from here, not from inside the task group
                    done, failed = None, exc
                group.cancel_scope.cancel()
            if failed is not None:
                raise failed
            return done
        if timer.cancelled_caught:
            raise RequestError(504, f"the request ran past {self.settings.request_timeout:g} s", code="timeout")
        raise RequestError(499, "the client went away")

    async def _events(self, request: HttpRequest, job: _Job, with_usage: bool):
        try:
            with anyio.move_on_after(self.settings.request_timeout):
                async with self.slots.lock:
                    async for event in job.events(with_usage):
                        yield event
                    return
            late = RequestError(504, f"the request ran past {self.settings.request_timeout:g} s", code="timeout")
            yield {"data": _json(late.body())}
            yield {"data": "[DONE]"}
        finally:
            self.slots.leave()


async def _planned(engine: Engine, wanted):
    """The request planned (tokenized in a worker thread: a long document takes a while); RequestError 400 for a
    prompt no plan holds, or one the model's chat template refuses."""
    try:
        return await anyio.to_thread.run_sync(engine.plan, wanted)
    except PlanError as exc:
        raise RequestError(400, str(exc), param="messages", code="context_length_exceeded") from None
    except LongLMError as exc:
        raise RequestError(400, str(exc)) from None


async def _cancel_on_disconnect(request: HttpRequest, scope) -> None:
    while not await request.is_disconnected():
        await anyio.sleep(0.25)
    scope.cancel()


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False)


class _Job:
    """One request on the engine, run in a worker thread; its text and progress reach the event loop."""

    def __init__(self, engine: Engine, planned, *, chat: bool, model: str):
        self.engine, self.planned, self.chat, self.model = engine, planned, chat, model
        self.cancel = threading.Event()
        self.ident = protocol.new_id("chatcmpl" if chat else "cmpl")

    def answer(self, done) -> dict:
        build = protocol.chat_completion if self.chat else protocol.text_completion
        return build(done, model=self.model, ident=self.ident)

    async def run(self, on_text: Callable | None = None, progress: Callable | None = None):
        """The engine's Completion; RequestError for what the request asked that cannot be done."""
        try:
            # Abandoned on cancellation: the flag set below stops the thread at its next chunk or token, and the
            # engine's own lock keeps the next request's thread waiting until then.
            return await anyio.to_thread.run_sync(self._call, on_text, progress, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            self.cancel.set()
            raise
        except LongLMError as exc:  # the memory check before a long prefill, a template that refuses a turn
            raise RequestError(400, str(exc)) from None
        except Cancelled:
            raise RequestError(499, "the request was cancelled") from None

    def _call(self, on_text, progress):
        return self.engine.run(self.planned, on_text=on_text, progress=progress, cancelled=self.cancel.is_set)

    async def events(self, with_usage: bool):
        """Server-sent events: progress comments during the prefill, the text's pieces, the end, [DONE]."""
        send: MemoryObjectSendStream[tuple]
        receive: MemoryObjectReceiveStream[tuple]
        send, receive = anyio.create_memory_object_stream(max_buffer_size=1 << 16)
        loop = asyncio.get_running_loop()

        def put(item) -> None:
            loop.call_soon_threadsafe(send.send_nowait, item)

        async def work() -> None:
            try:
                done = await self.run(on_text=lambda p: put(("text", p)), progress=lambda d, t: put(("progress", d, t)))
                await send.send(("done", done))
            except RequestError as exc:
                await send.send(("error", exc))
            finally:
                await send.aclose()

        head = protocol.chunk(chat=self.chat, model=self.model, ident=self.ident, text="")
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(work)
                yield {"data": _json(head)}
                async for item in receive:
                    for event in self._event(item, with_usage):
                        yield event
        finally:
            self.cancel.set()

    def _event(self, item, with_usage: bool):
        kind = item[0]
        if kind == "progress":
            yield ServerSentEvent(comment=f"prefill {item[1]:,}/{item[2]:,} tokens")
        elif kind == "text":
            yield {"data": _json(protocol.chunk(chat=self.chat, model=self.model, ident=self.ident, text=item[1]))}
        elif kind == "error":
            yield {"data": _json(item[1].body())}
            yield {"data": "[DONE]"}
        else:
            done = item[1]
            end = protocol.chunk(chat=self.chat, model=self.model, ident=self.ident, finish=done.finish_reason)
            yield {"data": _json(end)}
            if with_usage:
                yield {"data": _json(protocol.usage_chunk(done, chat=self.chat, model=self.model, ident=self.ident))}
            yield {"data": "[DONE]"}
