"""Server-sent events (WHATWG HTML "Server-sent events"): the response headers and one frame."""

from __future__ import annotations

from typing import Final

SSE_HEADERS: Final = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # proxies such as nginx: pass each frame on at once
}


def sse_frame(data: str, event: str | None = None) -> bytes:
    """One event: an optional ``event:`` line, one ``data:`` line (``data`` holds no newline,
    as compact JSON does), and the blank line that ends it."""
    head = f"event: {event}\n" if event is not None else ""
    return f"{head}data: {data}\n\n".encode()
