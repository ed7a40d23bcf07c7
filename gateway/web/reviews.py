"""The review API (docs/contracts.md, "Review"): clinicians list, read, edit, approve and reject
draft reports; admins read and check the audit trail.

- ``GET /api/drafts?status=&patient=&since=&until=&page=&per_page=`` → ``{"data": [{"id",
  "status", "patient", "version", "created", "updated"}...], "page", "per_page", "total"}``,
  newest first;
- ``GET /api/drafts/{id}`` → the draft: ``bundle`` (latest version), ``versions``,
  ``observations``, ``transcript``, ``citations``, ``strips``;
- ``GET /api/drafts/{id}/versions/{version}`` → one version and its Bundle;
- ``PATCH /api/drafts/{id}`` ``{"version", "conclusion"?, "findings"?, "medications"?: {id:
  {"text"?, "dose"?}}}`` → ``{"id", "version", "status"}`` (the next version);
- ``POST /api/drafts/{id}/offer`` ``{"version", "action", "medications"?, "reason"?}`` →
  ``{"decision", "bundle", "payload"}``: what an approval or rejection would make, and the bytes
  (base64url) the clinician signs;
- ``POST /api/drafts/{id}/approve`` ``{"decision", "signature"}`` → the signed final Bundle;
- ``POST /api/drafts/{id}/reject`` ``{"version", "reason"}`` or ``{"decision", "signature"}``
  → the signed Bundle of the rejected report;
- ``GET /api/drafts/{id}/pdf`` → the PDF copy of an approved report;
- ``GET /api/audit?after=&limit=`` → ``{"entries", "check"}`` (admin).

Refusals: 400 bad input, 403 a signature that is not the reviewer's (``bad_signature``) or a
decision for someone else, 404 unknown draft, 409 a stale version or decision (``stale``) or a
draft decided already (``already_decided``). Every read of a draft and every change is audited.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

from aiohttp import web
from pydantic import AwareDatetime, Field, ValidationError

from gateway.fhir import jsonio
from gateway.fhir.review import report_entry
from gateway.review.decision import DecisionDoc, EditDoc
from gateway.review.errors import DraftNotFoundError, ReviewRefusedError
from gateway.store import audit as audit_table
from gateway.store.reviews import MAX_PAGE, DraftQuery
from gateway.web.access import PRINCIPAL, Principal
from gateway.web.auditing import AUDIT, audit
from gateway.web.errors import ApiError, StrictBody, parse_body, validation_error

if TYPE_CHECKING:
    from gateway.review.audit import AuditTrail
    from gateway.review.service import ReviewService
    from gateway.store.aio import AsyncStore
    from gateway.store.store import Store

REVIEWS: Final[web.AppKey[ReviewService]] = web.AppKey("reviews")
AUDIT_STORE: Final[web.AppKey[AsyncStore]] = web.AppKey("audit_store")
FHIR_JSON: Final = "application/fhir+json"
PDF_CONTENT_TYPE: Final = "application/pdf"
DRAFT: Final = "/api/drafts/{id}"


class ListQuery(StrictBody):
    status: str | None = None
    patient: str | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    page: int = Field(default=1, ge=1)
    per_page: int = Field(default=20, ge=1, le=MAX_PAGE)


class EditBody(EditDoc):
    version: int = Field(ge=1)


class OfferBody(StrictBody):
    version: int = Field(ge=1)
    action: Literal["approve", "reject"]
    medications: dict[str, Literal["accept", "reject"]] = Field(default_factory=dict)
    reason: str | None = Field(default=None, min_length=1, max_length=500)


class SignedBody(StrictBody):
    decision: DecisionDoc
    signature: str = Field(min_length=1, max_length=4096)


class RejectBody(StrictBody):
    version: int | None = Field(default=None, ge=1)
    reason: str | None = Field(default=None, min_length=1, max_length=500)
    decision: DecisionDoc | None = None
    signature: str | None = Field(default=None, min_length=1, max_length=4096)


def _json(data: Mapping[str, Any], content_type: str = "application/json") -> web.Response:
    return web.Response(text=jsonio.dumps(data), content_type=content_type, charset="utf-8")


def refused(exc: ReviewRefusedError) -> ApiError:
    return ApiError(exc.status, str(exc), code=exc.code)


def _principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def _draft_id(request: web.Request) -> str:
    return request.match_info["id"]


async def list_drafts(request: web.Request) -> web.Response:
    try:
        query = ListQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise validation_error(exc) from exc
    rows, total = await request.app[REVIEWS].drafts(
        DraftQuery(
            status=query.status,
            patient=query.patient,
            since=query.since.isoformat() if query.since else None,
            until=query.until.isoformat() if query.until else None,
            page=query.page,
            per_page=query.per_page,
        )
    )
    await audit(request, "search", what="DiagnosticReport", detail=f"{len(rows)} of {total}")
    return _json({"data": rows, "page": query.page, "per_page": query.per_page, "total": total})


async def get_draft(request: web.Request) -> web.Response:
    draft_id = _draft_id(request)
    try:
        draft = await request.app[REVIEWS].get(draft_id)
    except ReviewRefusedError as exc:
        raise refused(exc) from exc
    await audit(
        request, "read", what="DiagnosticReport", what_id=draft_id, patient=draft["patient"]
    )
    return _json(draft)


async def get_version(request: web.Request) -> web.Response:
    draft_id = _draft_id(request)
    try:
        number = int(request.match_info["version"])
        found = await request.app[REVIEWS].version(draft_id, number)
    except ValueError as exc:
        raise ApiError(400, "version: expected a number", code="invalid_review") from exc
    except ReviewRefusedError as exc:
        raise refused(exc) from exc
    await audit(request, "read", what="DiagnosticReport", what_id=f"{draft_id}/v{number}")
    return _json(found)


async def edit_draft(request: web.Request) -> web.Response:
    body = await parse_body(request, EditBody)
    edit = body.edit()
    if edit.empty:
        raise ApiError(400, "nothing to change: give conclusion, findings or medications")
    try:
        result = await request.app[REVIEWS].edit(
            _draft_id(request), body.version, edit, user=_principal(request).name
        )
    except ReviewRefusedError as exc:
        raise refused(exc) from exc
    return _json(result)


async def offer(request: web.Request) -> web.Response:
    body = await parse_body(request, OfferBody)
    reviews = request.app[REVIEWS]
    try:
        doc = reviews.new_decision(
            _draft_id(request),
            body.version,
            body.action,
            _principal(request).name,
            medications=body.medications,
            reason=body.reason,
        )
        return _json(await reviews.offer(doc))
    except (ReviewRefusedError, ValidationError) as exc:
        raise _refusal(exc) from exc


def _refusal(exc: ReviewRefusedError | ValidationError) -> ApiError:
    return refused(exc) if isinstance(exc, ReviewRefusedError) else validation_error(exc)


def _same_draft(request: web.Request, doc: DecisionDoc) -> None:
    if doc.draft != _draft_id(request):
        raise ApiError(400, f"the decision is about draft {doc.draft}, not this one")


def _jws(signature: str) -> str:
    """The compact JWS, given as itself or as base64 of it (as ``Signature.data`` holds it)."""
    if signature.count(".") == 2:
        return signature
    try:
        return base64.b64decode(signature, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ApiError(400, "signature: expected a compact JWS", param="signature") from exc


async def approve(request: web.Request) -> web.Response:
    body = await parse_body(request, SignedBody)
    _same_draft(request, body.decision)
    if body.decision.action != "approve":
        raise ApiError(400, "decision.action: expected approve on this route")
    return await _decide(request, body.decision, _jws(body.signature))


async def reject(request: web.Request) -> web.Response:
    body = await parse_body(request, RejectBody)
    principal = _principal(request)
    if body.decision is not None:
        if body.signature is None:
            raise ApiError(400, "signature: a signed decision needs its signature")
        _same_draft(request, body.decision)
        doc, jws = body.decision, _jws(body.signature)
    else:
        if body.version is None or body.reason is None:
            raise ApiError(400, "give version and reason (or a signed decision)")
        try:
            doc = request.app[REVIEWS].new_decision(
                _draft_id(request), body.version, "reject", principal.name, reason=body.reason
            )
        except ValidationError as exc:
            raise validation_error(exc) from exc
        jws = None
    if doc.action != "reject":
        raise ApiError(400, "decision.action: expected reject on this route")
    return await _decide(request, doc, jws)


async def _decide(request: web.Request, doc: DecisionDoc, jws: str | None) -> web.Response:
    try:
        outcome = await request.app[REVIEWS].decide(
            doc, jws, via="api", principal=_principal(request).name, address=request.remote
        )
    except ReviewRefusedError as exc:
        raise refused(exc) from exc
    return _json(outcome.bundle, FHIR_JSON)


async def get_pdf(request: web.Request) -> web.Response:
    draft_id = _draft_id(request)
    try:
        draft = await request.app[REVIEWS].latest(draft_id)
    except ReviewRefusedError as exc:
        raise refused(exc) from exc
    forms = report_entry(draft["bundle"])["resource"].get("presentedForm", [])
    pdf = next((f for f in forms if f.get("contentType") == PDF_CONTENT_TYPE), None)
    if pdf is None:
        raise refused(DraftNotFoundError(f"draft {draft_id} has no PDF copy: approve it first"))
    await audit(
        request, "read", what="DiagnosticReport", what_id=f"{draft_id}/pdf",
        patient=draft["patient"],
    )  # fmt: skip
    return web.Response(
        body=base64.b64decode(pdf["data"]),
        content_type=PDF_CONTENT_TYPE,
        headers={"Content-Disposition": f'attachment; filename="report-{draft_id}.pdf"'},
    )


class AuditQuery(StrictBody):
    after: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=1000)


async def get_audit(request: web.Request) -> web.Response:
    try:
        query = AuditQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise validation_error(exc) from exc

    def read(store: Store) -> dict[str, Any]:
        return {
            "entries": audit_table.entries(store.conn, after=query.after, limit=query.limit),
            "check": audit_table.verify(store.conn).as_json(),
        }

    return _json(await request.app[AUDIT_STORE].read(read))


def setup_reviews(
    reviews: ReviewService, trail: AuditTrail | None, store: AsyncStore
) -> Callable[[web.Application], None]:
    """The ``setup`` callback for :func:`gateway.web.app.build_app` that adds these routes."""

    def setup(app: web.Application) -> None:
        app[REVIEWS] = reviews
        app[AUDIT] = trail
        app[AUDIT_STORE] = store
        app.router.add_get("/api/drafts", list_drafts)
        app.router.add_get(DRAFT, get_draft)
        app.router.add_patch(DRAFT, edit_draft)
        app.router.add_get(f"{DRAFT}/versions/{{version}}", get_version)
        app.router.add_post(f"{DRAFT}/offer", offer)
        app.router.add_post(f"{DRAFT}/approve", approve)
        app.router.add_post(f"{DRAFT}/reject", reject)
        app.router.add_get(f"{DRAFT}/pdf", get_pdf)
        app.router.add_get("/api/audit", get_audit)

    return setup
