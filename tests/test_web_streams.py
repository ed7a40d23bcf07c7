"""A stream whose handler fails after its headers were sent ends there: no JSON error is written
into the event stream (the client would read it as a broken chunk)."""

from __future__ import annotations

import contextlib

import aiohttp
from aiohttp import web

from gateway.web.app import bound_port, build_app, serve
from gateway.web.sse import sse_frame, start_stream

TOKEN = "stream-test-service-token-0123456789"


async def fails_midway(request: web.Request) -> web.StreamResponse:
    response = await start_stream(request)
    await response.write(sse_frame('{"n": 1}', event="tick"))
    raise RuntimeError("a bug after the first frame")


async def test_a_stream_that_fails_after_its_headers_just_ends() -> None:
    def setup(app: web.Application) -> None:
        app.router.add_get("/broken", fails_midway)

    runner = await serve(build_app(token=TOKEN, setup=[setup]), "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{bound_port(runner)}/broken"
        received = b""
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers=headers) as answer,
        ):
            assert answer.status == 200
            assert answer.content_type == "text/event-stream"
            with contextlib.suppress(aiohttp.ClientPayloadError):
                async for chunk in answer.content.iter_any():
                    received += chunk
        assert b"event: tick" in received
        assert b"500" not in received
        assert b"internal error" not in received
    finally:
        await runner.cleanup()
