"""Reading server-sent events from a raw aiohttp response stream (the consultation replies)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from gateway.fhir import jsonio

Event = tuple[str, Any]  # (event name, the JSON of its data)


async def sse(response: aiohttp.ClientResponse) -> AsyncIterator[Event]:
    """Server-sent events (WHATWG HTML §9.2.6): ``event:`` and ``data:`` lines, a blank line
    dispatches."""
    name, data = "message", list[str]()
    async for raw in response.content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield name, jsonio.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[len("event:") :].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:") :].lstrip(" "))
