"""Audit entries for API requests: who called (the authenticated principal, or the name given
at a login), from which address (docs/architecture.md, "Audit trail")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

if TYPE_CHECKING:
    from gateway.review.audit import AuditTrail

AUDIT: Final[web.AppKey[AuditTrail | None]] = web.AppKey("audit")
PRINCIPAL_NAME: Final = web.RequestKey("audit_user", str)  # set by the access middleware
PRINCIPAL_ROLE: Final = web.RequestKey("audit_role", str)


async def audit(request: web.Request, action: str, **fields: Any) -> None:
    """Record one audit entry for this request (when the gateway keeps a trail); ``user``
    defaults to the authenticated caller."""
    trail = request.app.get(AUDIT)
    if trail is None:
        return
    who: dict[str, Any] = {"user": request.get(PRINCIPAL_NAME), "role": request.get(PRINCIPAL_ROLE)}
    await trail.record(action, address=request.remote, **(who | fields))
