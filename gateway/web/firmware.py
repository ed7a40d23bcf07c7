"""The firmware API (docs/contracts.md, "Firmware"), for technicians and admins; what
``bedside firmware`` and the page's update button call:

- ``GET /api/firmware`` → ``{"sensors": [...], "repository"}``: every sensor with a session,
  its image slots read now (``images``), the version it runs, the repository's update for it;
- ``POST /api/firmware/{address}/upload?force=false&confirm=true`` with the image as the body
  (``application/octet-stream``) → 202 ``{"job"}``: the update runs in the background;
- ``POST /api/firmware/{address}/update`` ``{"force", "confirm"}`` → 202 ``{"job"}``: the same
  with the repository's image for the sensor's model;
- ``GET /api/firmware/{address}/job?after=REVISION`` → ``{"job"}``: the last update of the
  sensor; with ``after``, answered once the job changed past that revision (or after
  :data:`WAIT_S`), so a client follows the progress without polling;
- ``POST /api/firmware/{address}/confirm`` and ``…/revert`` → ``{"address", "images"}``.

Errors: a file that is not an intact image 400 (``invalid_image``); no such sensor 404
(``no_sensor``); not connected, no SMP, busy, nothing to update to, the sensor refused or the
link dropped: 409 with the machine code and the sentence; a body over ``max_image_bytes`` 413.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from pydantic import Field

from gateway.ble.registry import SensorListError, check_address
from gateway.firmware.device import DeviceRefusedError, FirmwareError, LinkLostError
from gateway.firmware.image import ImageError
from gateway.firmware.service import (
    FirmwareBusyError,
    NotReadyError,
    NoUpdateError,
    UnknownSensorError,
)
from gateway.web.auditing import PRINCIPAL_NAME, PRINCIPAL_ROLE
from gateway.web.errors import ApiError, StrictBody, compact_json, parse_body

if TYPE_CHECKING:
    from gateway.firmware.service import FirmwareService

SERVICE: Final[web.AppKey[FirmwareService]] = web.AppKey("firmware")
ROUTE: Final = "/api/firmware/{address}"
WAIT_S: Final = 25.0
TRUE: Final = frozenset({"1", "true", "yes"})
FALSE: Final = frozenset({"0", "false", "no"})

# error class → (HTTP status, machine code); the first match wins
ERRORS: Final[tuple[tuple[type[Exception], int, str], ...]] = (
    (ImageError, 400, "invalid_image"),
    (UnknownSensorError, 404, "no_sensor"),
    (NotReadyError, 409, "not_ready"),
    (FirmwareBusyError, 409, "busy"),
    (NoUpdateError, 409, "no_update"),
    (DeviceRefusedError, 409, "device_refused"),
    (LinkLostError, 409, "link_lost"),
    (FirmwareError, 409, "firmware_failed"),
)


class UpdateBody(StrictBody):
    force: bool = Field(default=False, description="install even if not newer")
    confirm: bool = Field(default=True, description="confirm once the new image proves itself")


def _json(data: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        text=compact_json(data), status=status, content_type="application/json", charset="utf-8"
    )


def _address(request: web.Request) -> str:
    try:
        return check_address(request.match_info["address"])
    except SensorListError as exc:
        raise ApiError(400, str(exc), param="address", code="invalid_address") from exc


def _flag(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw.lower() in TRUE:
        return True
    if raw.lower() in FALSE:
        return False
    raise ApiError(400, f"{name}={raw!r}: expected true or false", param=name, code="invalid_flag")


def _api_error(exc: Exception) -> ApiError:
    for kind, status, code in ERRORS:
        if isinstance(exc, kind):
            return ApiError(status, str(exc), code=code)
    raise exc


def _who(request: web.Request) -> dict[str, str | None]:
    return {"by": request.get(PRINCIPAL_NAME), "role": request.get(PRINCIPAL_ROLE)}


async def list_firmware(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    repository = None
    if service.settings.repository is not None:
        images = service.repository.images if service.repository is not None else ()
        repository = {
            "path": str(service.settings.repository),
            "error": service.repository_error,
            "images": [
                {"model": i.model, "version": str(i.version), "file": i.path.name} for i in images
            ],
        }
    return _json({"sensors": await service.list(), "repository": repository})


async def upload(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    address = _address(request)
    force, confirm = _flag(request, "force", False), _flag(request, "confirm", True)
    limit = service.settings.max_image_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(
            413,
            f"the image is {request.content_length} bytes, more than firmware.max_image_bytes "
            f"({limit})",
            code="image_too_large",
        )
    data = await request.read()
    if not data:
        raise ApiError(400, "no image: send the MCUboot image file as the body", code="no_image")
    try:
        job = service.start_update(address, data, force=force, confirm=confirm, **_who(request))
    except (FirmwareError, ImageError) as exc:
        raise _api_error(exc) from exc
    return _json({"job": job.as_json()}, status=202)


async def update_from_repository(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    address = _address(request)
    body = await parse_body(request, UpdateBody) if request.can_read_body else UpdateBody()
    try:
        job = service.start_repository_update(
            address, force=body.force, confirm=body.confirm, **_who(request)
        )
    except (FirmwareError, ImageError) as exc:
        raise _api_error(exc) from exc
    return _json({"job": job.as_json()}, status=202)


async def job_state(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    address = _address(request)
    job = service.job(address)
    if job is None:
        raise ApiError(
            404, f"no firmware update of {address} since the gateway started", code="no_job"
        )
    after = request.query.get("after")
    if after is not None:
        try:
            revision = int(after)
        except ValueError:
            raise ApiError(
                400, f"after={after!r}: expected a revision number", param="after"
            ) from None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WAIT_S):
                await job.changed(revision)
    return _json({"job": job.as_json()})


async def confirm(request: web.Request) -> web.Response:
    address = _address(request)
    try:
        slots = await request.app[SERVICE].confirm(address, **_who(request))
    except (FirmwareError, ImageError) as exc:
        raise _api_error(exc) from exc
    return _json({"address": address, "images": [slot.as_json() for slot in slots]})


async def revert(request: web.Request) -> web.Response:
    address = _address(request)
    try:
        slots = await request.app[SERVICE].revert(address, **_who(request))
    except (FirmwareError, ImageError) as exc:
        raise _api_error(exc) from exc
    return _json({"address": address, "images": [slot.as_json() for slot in slots]})


def setup_firmware(service: FirmwareService) -> Callable[[web.Application], None]:
    """The ``setup`` callback that adds the firmware routes."""

    def setup(app: web.Application) -> None:
        app[SERVICE] = service
        app.router.add_get("/api/firmware", list_firmware)
        app.router.add_post(f"{ROUTE}/upload", upload)
        app.router.add_post(f"{ROUTE}/update", update_from_repository)
        app.router.add_get(f"{ROUTE}/job", job_state)
        app.router.add_post(f"{ROUTE}/confirm", confirm)
        app.router.add_post(f"{ROUTE}/revert", revert)

    return setup
