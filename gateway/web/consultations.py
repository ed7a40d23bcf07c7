"""The consultations API (docs/contracts.md, "HTTP API"), registered through
:func:`gateway.web.app.build_app`'s ``setup``::

    app = build_app(token=token, engine=engine, setup=[setup_consultations(service)])
    app = build_app(token=token, assistant=services, setup=[setup_consultations()])
    # the gateway: the service comes with the assistant (services.ready(..., consultations=...))

- ``POST /api/consultations`` ``{"require": ["8867-4", ...]}`` (body optional) → 201 ``{"id",
  "status", "require"}``;
- ``GET /api/consultations?page=&per_page=`` → ``{"data": [{"id", "status", "busy", "created",
  "closed"}...], "page", "per_page", "total"}``: this run's and the archived ones, newest first;
- ``POST /api/consultations/{id}/messages`` ``{"content": "..."}`` → ``text/event-stream``: one
  server-sent event per consultation event (``event: token`` / ``observation_requested`` /
  ``observation`` / ``observation_unavailable`` / ``done``, ``data:`` its JSON, e.g.
  ``{"code", "reason", "reason_code": "not_allowed"}`` for a measurement not made); a failure
  after the stream started is an ``event: error`` with the JSON error body;
- ``GET /api/consultations/{id}`` → the record: messages, Observations (resources included),
  usage, and the signed draft once closed;
- ``POST /api/consultations/{id}/close`` → the signed draft Bundle (``application/fhir+json``).

Errors are JSON in the shape of every route here (``{"error": {"message", "type", "param",
"code"}}``): 400 bad body, 404 unknown consultation, 409 closed or busy (a message while one is
streaming, or closing then; a conversation longer than the model's context), 503 assistant
loading, disabled, failed or not running, 504 timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from aiohttp import web
from pydantic import Field, ValidationError

from gateway.assistant.consultation import (
    ConsultationBusyError,
    ConsultationClosedError,
    ConsultationError,
    ConsultationFullError,
    ConsultationInputError,
    ConsultationNotFoundError,
    ConsultationService,
    ReportError,
)
from gateway.assistant.errors import (
    EngineClosedError,
    EngineError,
    EngineTimeoutError,
    RemoteEngineError,
)
from gateway.fhir import jsonio
from gateway.web.auditing import audit
from gateway.web.errors import ApiError, StrictBody, parse_body, validation_error
from gateway.web.services import ASSISTANT
from gateway.web.sse import sse_frame, start_stream

log = logging.getLogger(__name__)

FHIR_JSON: Final = "application/fhir+json"
ID_PATTERN: Final = "{id}"
MAX_PER_PAGE: Final = 200


class CreateBody(StrictBody):
    require: list[str] = Field(default_factory=list)


class MessageBody(StrictBody):
    content: str = Field(min_length=1)


def api_error(exc: Exception) -> ApiError:
    """The HTTP error for a consultation or engine error."""
    if isinstance(exc, ConsultationNotFoundError):
        return ApiError(404, str(exc), code="consultation_not_found")
    if isinstance(exc, ConsultationClosedError):
        return ApiError(409, str(exc), code="consultation_closed")
    if isinstance(exc, ConsultationBusyError):
        return ApiError(409, str(exc), code="consultation_busy")
    if isinstance(exc, ConsultationFullError):
        return ApiError(409, str(exc), code="consultation_full")
    if isinstance(exc, ConsultationInputError):
        return ApiError(400, str(exc), code="invalid_consultation_request")
    cause = exc.__cause__ if isinstance(exc, ReportError) else exc
    if isinstance(cause, EngineTimeoutError):
        return ApiError(504, str(exc), code="timeout")
    if isinstance(cause, EngineClosedError):
        return ApiError(503, f"the assistant is not available: {exc}")
    if isinstance(cause, RemoteEngineError):
        return ApiError(502, str(exc), code="inference_server_failed")
    return ApiError(500, str(exc), code="consultation_failed")


def _service(request: web.Request, *, running: bool = True) -> ConsultationService:
    return request.app[ASSISTANT].consultation_service(running=running)


def _json(
    data: Mapping[str, Any], status: int = 200, content_type: str = "application/json"
) -> web.Response:
    return web.Response(
        text=jsonio.dumps(data),
        status=status,
        content_type=content_type,
        charset="utf-8",
    )


async def create_consultation(request: web.Request) -> web.Response:
    service = _service(request)
    body = await parse_body(request, CreateBody, optional=True)
    try:
        consultation = service.create(body.require)
    except ConsultationError as exc:
        raise api_error(exc) from exc
    return _json(
        {
            "id": consultation.id,
            "status": consultation.status,
            "require": list(consultation.require),
        },
        status=201,
    )


class PageQuery(StrictBody):
    page: int = Field(default=1, ge=1)
    per_page: int = Field(default=50, ge=1, le=MAX_PER_PAGE)


async def list_consultations(request: web.Request) -> web.Response:
    service = _service(request, running=False)
    try:
        query = PageQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise validation_error(exc) from exc
    rows = await service.history()
    first = (query.page - 1) * query.per_page
    page = rows[first : first + query.per_page]
    await audit(request, "search", what="Consultation", detail=f"{len(page)} of {len(rows)}")
    return _json({"data": page, "page": query.page, "per_page": query.per_page, "total": len(rows)})


async def get_consultation(request: web.Request) -> web.Response:
    service = _service(request, running=False)
    try:
        record = await service.snapshot(request.match_info["id"])
    except ConsultationError as exc:
        raise api_error(exc) from exc
    await audit(request, "read", what="Consultation", what_id=request.match_info["id"])
    return _json(record)


def _sse(name: str, data: Mapping[str, Any]) -> bytes:
    return sse_frame(jsonio.dumps(data), event=name)


async def post_message(request: web.Request) -> web.StreamResponse:
    service = _service(request)
    body = await parse_body(request, MessageBody)
    try:
        reply = await service.send(request.match_info["id"], body.content)
    except ConsultationError as exc:
        raise api_error(exc) from exc
    async with reply:
        response = await start_stream(request)
        try:
            async for event in reply:
                await response.write(_sse(event.name, event.data()))
        except (ConsultationError, EngineError) as exc:
            # Headers are sent: report in the stream.
            error = api_error(exc)
            log.info("consultation %s: reply failed: %s", request.match_info["id"], exc)
            await response.write(_sse("error", error.body()))
        except ConnectionResetError:
            log.debug("client went away during a consultation reply; the reply is cancelled")
            return response
        await response.write_eof()
    return response


async def close_consultation(request: web.Request) -> web.Response:
    service = _service(request)
    try:
        bundle = await service.close(request.match_info["id"])
    except ConsultationError as exc:
        raise api_error(exc) from exc
    return _json(bundle, content_type=FHIR_JSON)


def setup_consultations(
    service: ConsultationService | None = None,
) -> Callable[[web.Application], None]:
    """The ``setup`` callback for :func:`gateway.web.app.build_app` that adds these routes, with
    ``service`` (else the one the assistant's services get when ready)."""

    def setup(app: web.Application) -> None:
        if service is not None:
            app[ASSISTANT].consultations = service
        app.router.add_post("/api/consultations", create_consultation)
        app.router.add_get("/api/consultations", list_consultations)
        app.router.add_get(f"/api/consultations/{ID_PATTERN}", get_consultation)
        app.router.add_post(f"/api/consultations/{ID_PATTERN}/messages", post_message)
        app.router.add_post(f"/api/consultations/{ID_PATTERN}/close", close_consultation)

    return setup
