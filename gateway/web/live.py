"""The live stream of the technician's page: ``GET /api/live``, server-sent events.

Events (each ``data`` is one JSON object):

- ``sensors``: ``{"sensors": [rows of GET /api/sensors], "at"}``, when a client connects and every
  :data:`SENSORS_EVERY_S` after;
- ``vital``: ``{"address", "codes", "text", "at"}`` for every new live Observation with a value
  (``text`` as the live view shows it, "72 /min");
- ``waveform``: ``{"address", "codes", "period_ms", "factor", "origin", "unit", "data", "at"}``
  for every live waveform segment (the ECG strip, a pleth), the samples as sent.

Each client has a bounded queue; a client that falls behind loses its oldest events (counted in
``dropped``), never slows the gateway. The hub is fed by the ingest pipeline's observation events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from gateway.fhir import jsonio
from gateway.fhir.read import display_value, observation_codes
from gateway.web.sse import sse_frame, start_stream

if TYPE_CHECKING:
    from gateway.ble.measure import ObservationEvent

QUEUE_SIZE: Final = 512
CLOSE: Final = b""  # queued to end a client's stream (the gateway stops)
SENSORS_EVERY_S: Final = 1.0
HEARTBEAT_S: Final = 15.0


@dataclass(eq=False)  # hashed by identity: the hub keeps a set of them
class _Client:
    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: int = 0

    def put(self, frame: bytes) -> None:
        """Queue the frame; when the queue is full, the oldest frame makes room."""
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
                self.dropped += 1
        self.queue.put_nowait(frame)


class LiveHub:
    """Fans the gateway's live Observations out to the page's clients."""

    def __init__(self, sensors: Callable[[], list[dict[str, Any]]]) -> None:
        self._sensors = sensors
        self._clients: set[_Client] = set()

    @property
    def clients(self) -> int:
        return len(self._clients)

    def close(self) -> None:
        """End every client's stream (the server is shutting down: it need not wait for them)."""
        for client in self._clients:
            client.put(CLOSE)

    def publish(self, event: ObservationEvent) -> None:
        """Called for every new Observation (stored records from a sensor's memory are not live)."""
        if event.stored or not self._clients:
            return
        frame = _frame(event.address, event.resource)
        if frame is not None:
            for client in self._clients:
                client.put(frame)

    def sensors_frame(self) -> bytes:
        return sse_frame(
            jsonio.dumps({"sensors": self._sensors(), "at": time.time()}), event="sensors"
        )

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = await start_stream(request)
        client = _Client()
        self._clients.add(client)
        try:
            await response.write(self.sensors_frame())
            next_sensors = time.monotonic() + SENSORS_EVERY_S
            while True:
                wait = max(0.0, next_sensors - time.monotonic())
                try:
                    frame = await asyncio.wait_for(client.queue.get(), timeout=wait)
                except TimeoutError:
                    await response.write(self.sensors_frame())
                    next_sensors = time.monotonic() + SENSORS_EVERY_S
                    continue
                if frame == CLOSE:
                    break
                await response.write(frame)
        except ConnectionResetError:  # the page was closed
            pass
        finally:
            self._clients.discard(client)
        return response


def _frame(address: str, resource: Mapping[str, Any]) -> bytes | None:
    codes = observation_codes(resource)
    sampled = resource.get("valueSampledData")
    at = resource.get("effectiveDateTime")
    if isinstance(sampled, Mapping):
        origin = sampled.get("origin", {})
        data = {
            "address": address,
            "codes": list(codes),
            "period_ms": sampled.get("period"),
            "factor": sampled.get("factor", 1),
            "origin": origin.get("value", 0),
            "unit": origin.get("unit") or origin.get("code"),
            "data": sampled.get("data", ""),
            "at": at,
        }
        return sse_frame(jsonio.dumps(data), event="waveform")
    text = display_value(resource)
    if text is None:
        return None
    return sse_frame(
        jsonio.dumps({"address": address, "codes": list(codes), "text": text, "at": at}),
        event="vital",
    )


LIVE: Final[web.AppKey[LiveHub]] = web.AppKey("live_hub", LiveHub)


async def live(request: web.Request) -> web.StreamResponse:
    return await request.app[LIVE].stream(request)
