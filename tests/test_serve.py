"""`longlm serve` against a live server on a random loopback port: the real openai client and plain HTTP, a tiny
random model. The engine is the library's; a test that needs a request to take its time wraps it in a gate."""

import json
import socket
import threading
import time

import httpx
import pytest

pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install 'longlm-cli[serve]')")
openai = pytest.importorskip("openai", reason="the openai client is part of the test extra")

from longlm_cli.answering.pipeline import ExtensionSettings, ModelSettings  # noqa: E402
from longlm_cli.serve.app import create_app  # noqa: E402
from longlm_cli.serve.engine import Engine  # noqa: E402
from longlm_cli.serve.settings import ServeSettings  # noqa: E402

from helpers import CORPUS, run, start_serve  # noqa: E402

QUESTION = "What colour is the ledger?"


class Server:
    """uvicorn in a thread on a port the OS chose; ``url`` is the API's base."""

    def __init__(self, engine: Engine, settings: ServeSettings):
        import uvicorn

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        config = uvicorn.Config(create_app(engine, settings), log_level="error", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def client(self, key: str = "unused"):
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0)


class GatedEngine(Engine):
    """An engine whose requests wait for ``gate`` before they run, and whose text pieces come slowly."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate.set()

    def run(self, request, *, on_text=None, cancelled=lambda: False, progress=None):
        self.gate.wait(timeout=30)

        def slow(piece):
            time.sleep(0.05)
            if on_text:
                on_text(piece)

        return super().run(request, on_text=slow, cancelled=cancelled, progress=progress)


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    return ModelSettings(model=str(tiny_dir), dtype="float32").load()


@pytest.fixture
def start(loaded, tiny_dir):
    servers = []

    def start(engine_class=Engine, **settings):
        engine = engine_class(loaded, requested=str(tiny_dir), extension=ExtensionSettings(use_tuned=False))
        servers.append(Server(engine, ServeSettings(**settings)))
        return servers[-1], engine

    yield start
    for server in servers:
        server.stop()


def _document_message(question=QUESTION, document=CORPUS * 6):
    return [{"role": "user", "content": f"{document}\n\nQuestion: {question}"}]


def test_models_and_health_describe_the_model(start, tiny_dir):
    server, engine = start()
    health = httpx.get(server.url.removesuffix("/v1") + "/health").json()
    assert health == {"status": "ok", "running": 0, "queued": 0}
    [model] = server.client().models.list().data
    assert model.id == str(tiny_dir)
    assert model.model_extra["context_window"] == 64 and model.model_extra["max_context_length"] == engine.capacity()


def test_a_long_prompt_is_answered_as_ask_answers_it(start, tiny_dir, tmp_path):
    """The same prompt and plan as `ask` give the same greedy answer: the logits match."""
    doc = tmp_path / "ledger.txt"
    doc.write_text(CORPUS * 6)
    asked = json.loads(run("ask", doc, QUESTION, "-m", tiny_dir, "--max-new-tokens", 8, "--json", "--no-cache").stdout)
    from longlm_cli.answering.templates import load_template, user_message
    from longlm_cli.documents import read_documents

    content = user_message(load_template("ask"), read_documents([str(doc)]).text, QUESTION)
    server, _ = start()
    plan = asked["plan"]
    answer = server.client().chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": content}],
        max_tokens=8,
        temperature=0,
        extra_body={"longlm": {"window": plan["W"], "group_size": plan["G"]}},
    )
    assert answer.model_extra["longlm"]["extension"] == "selfextend" and asked["extension"] == "selfextend"
    assert answer.usage.prompt_tokens == asked["usage"]["prompt_tokens"]
    assert answer.choices[0].message.content == asked["answer"]


def test_a_stream_gives_the_same_text_and_ends_with_usage(start):
    server, _ = start()
    client = server.client()
    whole = client.chat.completions.create(model="m", messages=_document_message(), max_tokens=12)
    pieces, usage = [], None
    for chunk in client.chat.completions.create(
        model="m", messages=_document_message(), max_tokens=12, stream=True, stream_options={"include_usage": True}
    ):
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        else:
            usage = chunk.usage
    assert "".join(pieces) == whole.choices[0].message.content
    assert usage.prompt_tokens == whole.usage.prompt_tokens and usage.completion_tokens == whole.usage.completion_tokens


def test_completions_continue_a_prompt(start):
    server, _ = start()
    done = server.client().completions.create(model="m", prompt=CORPUS, max_tokens=5)
    assert done.object == "text_completion" and done.usage.completion_tokens <= 5 and done.choices[0].text


def test_streamed_completions_give_the_same_text(start):
    server, _ = start()
    client = server.client()
    whole = client.completions.create(model="m", prompt=CORPUS, max_tokens=6)
    pieces = [c.choices[0].text for c in client.completions.create(model="m", prompt=CORPUS, max_tokens=6, stream=True)]
    assert "".join(pieces) == whole.choices[0].text


def test_a_second_question_on_the_same_document_reuses_its_tokens(start, loaded):
    server, engine = start()
    client = server.client()
    first = client.chat.completions.create(model="m", messages=_document_message(), max_tokens=4)
    # a longer answer asked for: the plan the cache was made with still holds it, so the cache is kept
    second = client.chat.completions.create(model="m", messages=_document_message("Who counted?"), max_tokens=40)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    ids = [
        engine.token_ids(engine_request)
        for engine_request in _requests(_document_message(), _document_message("Who counted?"))
    ]
    common = next(i for i, (a, b) in enumerate(zip(*ids)) if a != b)
    assert second.usage.prompt_tokens_details.cached_tokens == common > 100


def _requests(*message_lists):
    from longlm_cli.runtime.sampling import SamplingSettings
    from longlm_cli.serve.engine import Request

    return [Request(messages=tuple(m), prompt=None, sampling=SamplingSettings()) for m in message_lists]


def test_an_api_key_is_required_when_set(start):
    server, _ = start(api_key="sesame")
    with pytest.raises(openai.AuthenticationError) as failed:
        server.client("wrong").models.list()
    assert failed.value.body["code"] == "invalid_api_key"
    assert server.client("sesame").models.list().data


def test_a_body_over_the_limit_is_413(start):
    server, _ = start(max_body_bytes=4096)
    response = httpx.post(f"{server.url}/chat/completions", json={"messages": _document_message(document="x " * 4000)})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{not json", "the request body is not valid JSON"),
        (b"\xff\xfe{}", "the request body is not UTF-8"),
        (b"[1, 2]", "the request body must be a JSON object"),
        (b'{"messages": []}', "messages must be a non-empty array"),
        (b'{"messages": "hi"}', "messages must be a non-empty array"),
        (b'{"messages": [{"role": "wizard", "content": "x"}]}', "messages[0].role must be one of"),
        (b'{"messages": [{"role": "user", "content": 5}]}', "messages[0].content must be a string"),
        (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}', "max_tokens must be a whole"),
        (b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', "the request body is not valid"),
        (b'{"messages": [{"role": "user", "content": "x"}], "n": 3}', "n must be 1"),
        (b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream must be true or false"),
        (b'{"messages": [{"role": "user", "content": "x"}], "longlm": {"extension": "yarn"}}', "longlm.extension"),
    ],
)
def test_bad_requests_are_400_and_leave_the_server_usable(start, body, message):
    server, _ = start()
    response = httpx.post(f"{server.url}/chat/completions", content=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith(message)
    assert server.client().chat.completions.create(model="m", messages=_document_message(), max_tokens=2).choices


def test_a_prompt_beyond_the_extended_capacity_is_400_context_length_exceeded(start, loaded):
    server, engine = start()
    with pytest.raises(openai.BadRequestError) as failed:
        server.client().chat.completions.create(
            model="m", messages=_document_message(document=CORPUS * 200), max_tokens=4
        )
    assert failed.value.body["code"] == "context_length_exceeded"


def test_a_full_queue_is_503_with_retry_after(start):
    server, engine = start(GatedEngine, max_queue=0)
    engine.gate.clear()
    first = threading.Thread(
        target=lambda: server.client().chat.completions.create(model="m", messages=_document_message(), max_tokens=2)
    )
    first.start()
    time.sleep(0.5)
    response = httpx.post(f"{server.url}/chat/completions", json={"messages": _document_message()})
    engine.gate.set()
    first.join(timeout=30)
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["error"]["code"] == "busy"


def test_a_client_leaving_mid_stream_frees_the_slot(start):
    server, engine = start(GatedEngine, max_queue=0)
    body = {"messages": _document_message(), "max_tokens": 200, "stream": True}
    with httpx.stream("POST", f"{server.url}/chat/completions", json=body) as response:
        next(response.iter_lines())  # the first chunk, then the client goes away
    started = time.monotonic()
    while True:  # the abandoned request ends at its next token; the slot is then free
        answer = httpx.post(f"{server.url}/chat/completions", json={**body, "stream": False, "max_tokens": 2})
        if answer.status_code != 503 or time.monotonic() - started > 20:
            break
        time.sleep(0.1)
    assert answer.status_code == 200, answer.text


def test_serving_beyond_loopback_without_a_key_is_refused():
    result = run("serve", "--host", "0.0.0.0", "-m", "/nonexistent")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: --host 0.0.0.0 would let other machines use the model with no key: give --api-key (or set "
        "LONGLM_API_KEY), or --insecure to serve without one\n"
    )


def test_serve_without_the_extra_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sse_starlette" else real(name))
    result = run("serve")
    assert result.exit_code == 1
    assert result.stderr == "Error: longlm serve needs the serve extra: pip install 'longlm-cli[serve]'\n"


def test_a_stream_beyond_the_capacity_is_refused_before_it_starts(start):
    server, _ = start()
    body = {"messages": _document_message(document=CORPUS * 200), "max_tokens": 4, "stream": True}
    response = httpx.post(f"{server.url}/chat/completions", json=body)
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"


def test_the_command_serves_until_sigterm_and_exits_0(tiny_dir, tmp_path):
    """The installed command: the address on stderr, a request answered, SIGTERM, exit 0 without an error."""
    import os
    import signal

    proc, url = start_serve("-m", tiny_dir, env={**os.environ, "LONGLM_CACHE_DIR": str(tmp_path / "cache")})
    try:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        assert client.chat.completions.create(model="m", messages=_document_message(), max_tokens=2).choices
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=30)[1]
    finally:
        proc.kill()
    assert proc.returncode == 0  # not 130: a stop asked for
    assert not any(word in rest for word in ("Error", "Traceback", "Interrupted")), rest


@pytest.mark.parametrize("origins", [(), ("http://app.example",)], ids=["cors off", "cors on"])
def test_browsers_may_call_only_from_the_origins_given(start, origins):
    server, _ = start(cors_origins=origins)
    headers = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    response = httpx.options(f"{server.url}/chat/completions", headers=headers)
    allowed = response.headers.get("access-control-allow-origin")
    assert allowed == ("http://app.example" if origins else None)


def test_a_saved_prompt_is_reused_after_a_restart_with_the_same_answer(loaded, tiny_dir, tmp_path):
    """A second engine (a restarted server) finds the first one's prompt in the document cache, loads it, cuts it
    to the shared prefix and answers as an engine that prefilled everything."""
    from longlm_cli.doccache.store import DocCacheSettings
    from longlm_cli.serve.store import PromptStore

    def engine(with_store: bool) -> Engine:
        store = PromptStore(loaded, str(tiny_dir), DocCacheSettings(directory=tmp_path / "kv")) if with_store else None
        return Engine(loaded, requested=str(tiny_dir), extension=ExtensionSettings(use_tuned=False), store=store)

    first_question, second_question = _requests(_document_message(), _document_message("Who wrote the names?"))
    before = engine(True)
    assert before.run(before.plan(first_question)).cached_tokens == 0
    assert len(list((tmp_path / "kv").glob("*.safetensors"))) == 1
    after = engine(True)
    again = after.run(after.plan(second_question))
    fresh = engine(False)
    expected = fresh.run(fresh.plan(second_question))
    ids = [before.token_ids(r) for r in (first_question, second_question)]
    common = next(i for i, (a, b) in enumerate(zip(*ids)) if a != b)
    assert again.cached_tokens == common > 1000
    assert again.text == expected.text and again.completion_tokens == expected.completion_tokens


def test_a_request_past_its_time_limit_is_504_and_frees_the_slot(start):
    server, engine = start(GatedEngine, max_queue=0, request_timeout=2.0)
    body = {"messages": [{"role": "user", "content": "Who kept the ledger?"}], "max_tokens": 2}
    engine.gate.clear()  # the request waits at the gate past its limit
    response = httpx.post(f"{server.url}/chat/completions", json=body)
    assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"
    engine.gate.set()
    again = httpx.post(f"{server.url}/chat/completions", json=body)
    assert again.status_code == 200, again.text


def test_the_engine_reads_asks_prompt_into_asks_logits(loaded, tiny_dir, tmp_path):
    """Past L, with ask's W and G, the server's prefill of ask's prompt gives ask's last logits."""
    import torch

    from longlm_cli.answering.pipeline import Reading, prefill_prompt, prepare
    from longlm_cli.answering.templates import user_message
    from longlm_cli.doccache.store import DocCacheSettings
    from longlm_cli.runtime.generate import Session
    from longlm_cli.runtime.sampling import SamplingSettings
    from longlm_cli.serve.engine import Request

    doc = tmp_path / "ledger.txt"
    doc.write_text(CORPUS * 6)
    model = ModelSettings(model=str(tiny_dir), dtype="float32")
    none = ExtensionSettings(use_tuned=False)
    reading = Reading(model=model, extension=none, loaded=loaded)
    prepared = prepare("ask", [str(doc)], question=QUESTION, reserve=8, reading=reading)
    session = Session.start(loaded.model, reserve=prepared.plan.N)
    expected, _ = prefill_prompt(session, prepared, prepared.ids, cache=DocCacheSettings(enabled=False))
    plan = prepared.plan
    settings = ExtensionSettings(use_tuned=False, window=plan.W, group_size=plan.G)
    engine = Engine(loaded, requested=str(tiny_dir), extension=settings)
    content = user_message(prepared.template, prepared.document.text, QUESTION)
    planned = engine.plan(Request(({"role": "user", "content": content},), None, SamplingSettings(max_new_tokens=8)))
    assert planned.ids == prepared.ids and plan.needs_extension
    assert (planned.plan.W, planned.plan.G) == (plan.W, plan.G)
    logits, reused = engine.prefill(planned)
    assert reused == 0
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


def test_a_short_request_after_a_long_one_gives_the_long_ones_memory_back(loaded, tiny_dir):
    """The session of a long prompt is not kept for a short request that shares little with it: the short one
    gets a session of its own size (the long one is in the prompt store when there is one)."""
    engine = Engine(loaded, requested=str(tiny_dir), extension=ExtensionSettings(use_tuned=False))
    long_request, short_request = _requests(_document_message(), [{"role": "user", "content": "Who kept it?"}])
    engine.run(engine.plan(long_request))
    long_room = engine.session.room
    done = engine.run(engine.plan(short_request))
    assert long_room > 1024 and engine.session.room < long_room // 2
    assert done.cached_tokens == 0
    again = engine.run(engine.plan(_requests([{"role": "user", "content": "Who kept it? And why?"}])[0]))
    assert again.cached_tokens > 0  # a short prompt's session is kept for the next one that shares it


def test_a_request_may_ask_for_an_answer_from_evidence(start, tmp_path):
    """longlm.evidence: the last user message's last paragraph is the question, the rest its document; the answer
    is the one the same model gives to the best passages and the question alone."""
    server, _ = start()
    document = CORPUS * 2 + "The ledger itself was bound in red leather. " + CORPUS
    question = "What was the ledger bound in?"
    body = {"messages": [{"role": "user", "content": f"{document}\n\n{question}"}], "max_tokens": 4}
    answer = httpx.post(f"{server.url}/chat/completions", json={**body, "longlm": {"evidence": 1}}, timeout=120)
    assert answer.status_code == 200, answer.text
    found = answer.json()["longlm"]["evidence"]
    assert len(found) == 1 and found[0]["text"] in document and found[0]["rank"] == 1
    alone = {"messages": [{"role": "user", "content": f"{found[0]['text']}\n\n{question}"}], "max_tokens": 4}
    direct = httpx.post(f"{server.url}/chat/completions", json=alone, timeout=120).json()
    assert "evidence" not in direct["longlm"]
    assert answer.json()["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
    again = httpx.post(f"{server.url}/chat/completions", json={**body, "longlm": {"evidence": 1}}, timeout=120)
    repeated = again.json()["longlm"]["evidence"]  # the question's rows read again over the cached document
    assert [(e["text"], e["rank"]) for e in repeated] == [(e["text"], e["rank"]) for e in found]
    assert repeated[0]["score"] == pytest.approx(found[0]["score"], rel=1e-2)
    bad = httpx.post(f"{server.url}/chat/completions", json={**body, "longlm": {"evidence_unit": "page"}})
    assert bad.status_code == 400 and "evidence_unit" in bad.json()["error"]["message"]
