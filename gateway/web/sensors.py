"""The sensors API (docs/contracts.md, "HTTP API" and "Sensors"), behind the same bearer auth as
every route; what ``bedside sensors`` calls on a running gateway:

- ``GET /api/sensors`` → ``{"sensors": [...]}``: every sensor with a session or seen advertising,
  problems first (see :meth:`gateway.ble.manager.SensorManager.sensors` for the fields);
- ``POST /api/sensors/{address}/accept`` → ``{"address", "changed"}``: connect to it from now on
  (persisted);
- ``DELETE /api/sensors/{address}`` → ``{"address", "bond_deleted"}``: stop accepting it, end its
  session and delete its bond (its readings stay);
- ``POST /api/sensors/{address}/passkey`` ``{"passkey": "123456"}`` → ``{"address",
  "used_now"}``: the passkey the sensor shows, for its pairing now or next;
- ``POST /api/sensors/{address}/measure`` → ``{"address", "codes", "value", "observation"}``:
  a measurement from this sensor now (its next value, or one started where its profile says how;
  the row's ``measure.burden`` says what that costs), or the machine code of why not.

A malformed address or passkey is a 400 (``invalid_address`` / ``invalid_passkey``); forgetting a
sensor of ``ble.allow`` is a 409 (``sensor_configured``); the accepted list cannot be saved: 500.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from pydantic import Field

from gateway.ble.errors import MeasureFailure, SensorError
from gateway.ble.pairing import PasskeyError
from gateway.ble.registry import SensorListError, check_address
from gateway.fhir import jsonio
from gateway.fhir.read import display_value, observation_codes
from gateway.web.auditing import audit
from gateway.web.errors import ApiError, StrictBody, parse_body

if TYPE_CHECKING:
    from gateway.ble.manager import SensorManager

MANAGER: Final[web.AppKey[SensorManager]] = web.AppKey("sensor_manager")
ROWS: Final[web.AppKey[Callable[[], list[dict[str, Any]]]]] = web.AppKey("sensor_rows")
ADDRESS_ROUTE: Final = "/api/sensors/{address}"


class PasskeyBody(StrictBody):
    passkey: str | int = Field(description="the six digits the sensor shows")


def _json(data: Mapping[str, Any]) -> web.Response:
    return web.Response(text=jsonio.dumps(data), content_type="application/json", charset="utf-8")


def _address(request: web.Request) -> str:
    try:
        return check_address(request.match_info["address"])
    except SensorListError as exc:
        raise ApiError(400, str(exc), param="address", code="invalid_address") from exc


def _list_error(exc: SensorListError) -> ApiError:
    if isinstance(exc.__cause__, OSError):
        return ApiError(500, str(exc), code="sensors_not_saved")
    return ApiError(409, str(exc), code="sensor_configured")


async def list_sensors(request: web.Request) -> web.Response:
    return _json({"sensors": request.app[ROWS]()})


async def accept_sensor(request: web.Request) -> web.Response:
    address = _address(request)
    try:
        changed = request.app[MANAGER].accept(address)
    except SensorListError as exc:
        raise _list_error(exc) from exc
    await audit(request, "update", what="Sensor", what_id=address, detail="accepted")
    return _json({"address": address, "changed": changed})


async def forget_sensor(request: web.Request) -> web.Response:
    address = _address(request)
    try:
        bond_deleted = await request.app[MANAGER].forget(address)
    except SensorListError as exc:
        raise _list_error(exc) from exc
    await audit(request, "delete", what="Sensor", what_id=address, detail="forgotten")
    return _json({"address": address, "bond_deleted": bond_deleted})


FAILURE_STATUS: Final = {
    MeasureFailure.NO_SENSOR: 404,
    MeasureFailure.NOT_CONNECTED: 409,
    MeasureFailure.BUSY: 409,
    MeasureFailure.NOT_ALLOWED: 409,
    MeasureFailure.TIMEOUT: 504,
}


async def measure_now(request: web.Request) -> web.Response:
    address = _address(request)
    try:
        resource = await request.app[MANAGER].measure_on(address)
    except SensorError as exc:
        status = FAILURE_STATUS.get(exc.failure, 409)
        raise ApiError(status, str(exc), code=str(exc.failure)) from exc
    return _json(
        {
            "address": address,
            "codes": list(observation_codes(resource)),
            "value": display_value(resource),
            "observation": resource,
        }
    )


async def give_passkey(request: web.Request) -> web.Response:
    address = _address(request)
    body = await parse_body(request, PasskeyBody)
    try:
        used_now = request.app[MANAGER].passkeys.give(address, body.passkey)
    except PasskeyError as exc:
        raise ApiError(400, str(exc), param="passkey", code="invalid_passkey") from exc
    return _json({"address": address, "used_now": used_now})


def setup_sensors(
    manager: SensorManager, rows: Callable[[], list[dict[str, Any]]] | None = None
) -> Callable[[web.Application], None]:
    """The ``setup`` callback that adds the sensor routes for ``manager``; ``rows`` makes the
    list (default: the manager's rows; the gateway adds each sensor's firmware)."""

    def setup(app: web.Application) -> None:
        app[MANAGER] = manager
        app[ROWS] = rows or manager.sensors
        app.router.add_get("/api/sensors", list_sensors)
        app.router.add_post(f"{ADDRESS_ROUTE}/accept", accept_sensor)
        app.router.add_delete(ADDRESS_ROUTE, forget_sensor)
        app.router.add_post(f"{ADDRESS_ROUTE}/passkey", give_passkey)
        app.router.add_post(f"{ADDRESS_ROUTE}/measure", measure_now)

    return setup
