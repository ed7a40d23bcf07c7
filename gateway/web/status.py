"""The gateway's own state for the technician: ``GET /api/doctor`` (the checks of ``bedside
doctor``, with the running radio's state instead of opening it again) and ``GET /api/gateway``
(identity, version, key, uptime, radio, uplinks and outbox)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from gateway.doctor import radio_status, run_checks
from gateway.fhir import jsonio

if TYPE_CHECKING:
    from gateway.ble.manager import SensorManager
    from gateway.config import Settings

GatewayState = Callable[[], Awaitable[Mapping[str, Any]]]
RetryDead = Callable[[], Awaitable[int]]
STATUS: Final[web.AppKey[tuple[Settings, SensorManager | None, GatewayState]]] = web.AppKey(
    "status_sources"
)
RETRY: Final[web.AppKey[RetryDead]] = web.AppKey("retry_dead")


def _json(data: object) -> web.Response:
    return web.Response(text=jsonio.dumps(data), content_type="application/json", charset="utf-8")


async def doctor(request: web.Request) -> web.Response:
    settings, manager, _ = request.app[STATUS]
    radio = radio_status(manager.radio.as_json()) if manager is not None else None
    checks = await run_checks(settings, radio=radio)
    return _json({"checks": [c.as_json() for c in checks]})


async def gateway_state(request: web.Request) -> web.Response:
    _, _, state = request.app[STATUS]
    return _json(await state())


async def retry_dead(request: web.Request) -> web.Response:
    """Put every item an uplink refused back in the queue (as ``bedside outbox retry-dead``)."""
    return _json({"requeued": await request.app[RETRY]()})


def setup_status(
    settings: Settings, manager: SensorManager | None, state: GatewayState, retry: RetryDead
) -> Callable[[web.Application], None]:
    def setup(app: web.Application) -> None:
        app[STATUS] = (settings, manager, state)
        app[RETRY] = retry
        app.router.add_get("/api/doctor", doctor)
        app.router.add_get("/api/gateway", gateway_state)
        app.router.add_post("/api/outbox/retry-dead", retry_dead)

    return setup
