"""The patient API (docs/contracts.md, "HTTP API" and "Patient"), behind the same bearer auth as
every route, registered through :func:`gateway.web.app.build_app`'s ``setup``::

    app = build_app(token=token, assistant=services, setup=[setup_patient(patients)])

- ``GET /api/patient`` → ``{"patient", "source", "configured", "runtime", "held",
  "held_readings"}``;
- ``PUT /api/patient`` ``{"reference": "Patient/123", "identifier": {"system", "value"},
  "claim_held": false}`` (identifier and claim_held optional) → the same, after the change;
- ``DELETE /api/patient`` → the same, back to the configured patient (or none: readings held).

A bad reference or identifier is a 400 (code ``invalid_patient``) in the one JSON error shape; a
claim while the assignment file is unreadable: 409; the file cannot be written: 500.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from aiohttp import web
from pydantic import Field

from gateway.fhir import jsonio
from gateway.patients.assignment import PatientError, patient_ref, validate_reference
from gateway.patients.service import PatientService
from gateway.web.auditing import audit
from gateway.web.errors import ApiError, StrictBody, parse_body

PATIENTS: Final[web.AppKey[PatientService]] = web.AppKey("patients", PatientService)


class IdentifierBody(StrictBody):
    system: str = Field(min_length=1)
    value: str = Field(min_length=1)


class PatientBody(StrictBody):
    reference: str = Field(min_length=1)
    identifier: IdentifierBody | None = None
    claim_held: bool = False


def _json(data: Mapping[str, Any]) -> web.Response:
    return web.Response(text=jsonio.dumps(data), content_type="application/json", charset="utf-8")


def _error(exc: PatientError) -> ApiError:
    """The assignment file could not be written (500), or is unreadable so no claim is safe
    (409: clear or set without a claim first)."""
    if isinstance(exc.__cause__, OSError):
        return ApiError(500, str(exc), code="patient_not_saved")
    return ApiError(409, str(exc), code="patient_conflict")


async def get_patient(request: web.Request) -> web.Response:
    return _json(request.app[PATIENTS].show())


async def put_patient(request: web.Request) -> web.Response:
    body = await parse_body(request, PatientBody)
    ident = body.identifier
    try:
        validate_reference(body.reference)
    except PatientError as exc:
        raise ApiError(400, str(exc), param="reference", code="invalid_patient") from exc
    try:
        identifier = None if ident is None else (ident.system, ident.value)
        patient = patient_ref(body.reference, identifier)
    except PatientError as exc:
        raise ApiError(400, str(exc), param="identifier", code="invalid_patient") from exc
    try:
        shown = await request.app[PATIENTS].assign(patient, claim_held=body.claim_held)
    except PatientError as exc:
        raise _error(exc) from exc
    await audit(request, "update", what="Patient assignment", patient=body.reference)
    return _json(shown)


async def delete_patient(request: web.Request) -> web.Response:
    try:
        shown = await request.app[PATIENTS].clear()
    except PatientError as exc:
        raise _error(exc) from exc
    await audit(request, "delete", what="Patient assignment")
    return _json(shown)


def setup_patient(service: PatientService) -> Callable[[web.Application], None]:
    """The ``setup`` callback that adds the patient routes for ``service``."""

    def setup(app: web.Application) -> None:
        app[PATIENTS] = service
        app.router.add_get("/api/patient", get_patient)
        app.router.add_put("/api/patient", put_patient)
        app.router.add_delete("/api/patient", delete_patient)

    return setup
