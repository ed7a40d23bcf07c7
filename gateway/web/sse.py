"""Server-sent events (WHATWG HTML "Server-sent events"): the response headers, starting a
stream, and one frame."""

from __future__ import annotations

from typing import Final

from aiohttp import web

SSE_HEADERS: Final = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # proxies such as nginx: pass each frame on at once
}


STREAMING: Final = web.RequestKey("streaming", bool)
"""Set once a stream's headers are sent: an error after that cannot become a JSON answer."""


async def start_stream(request: web.Request) -> web.StreamResponse:
    """Send the event-stream headers; the handler then writes frames."""
    response = web.StreamResponse(status=200, headers=SSE_HEADERS)
    await response.prepare(request)
    request[STREAMING] = True
    return response


def sse_frame(data: str, event: str | None = None) -> bytes:
    """One event: an optional ``event:`` line, one ``data:`` line (``data`` holds no newline,
    as compact JSON does), and the blank line that ends it."""
    head = f"event: {event}\n" if event is not None else ""
    return f"{head}data: {data}\n\n".encode()
