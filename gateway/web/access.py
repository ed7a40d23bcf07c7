"""Who may call what: credentials, roles and CSRF for every route (docs/contracts.md, "Users and
roles", whose table :data:`ROUTE_ROLES` is and a test checks).

A request is authenticated by, in this order:

1. ``Authorization: Bearer <token>``: the gateway's service token (``http.token`` or
   ``DATA_DIR/api-token``; it acts as ``admin``) or a user's API token (``bedside users token``);
2. the ``bedside_session`` cookie of a login (``POST /api/login``): HttpOnly, SameSite=Strict,
   Secure over TLS. A state-changing request (POST, PUT, PATCH, DELETE) with a cookie must also
   send the session's CSRF token in ``X-CSRF-Token`` (the synchronizer-token pattern, OWASP CSRF
   Prevention Cheat Sheet); a bearer token needs none (a browser never sends it on its own).

No credentials, or credentials that are not valid: 401. Valid credentials whose role the route
does not allow, or a missing CSRF token: 403. A route missing from the table is refused to every
role but ``admin`` (a new route must be added to the table and the docs).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import Field

from gateway.users.directory import SESSION_S, LockedError, Role, UserError
from gateway.web.auditing import PRINCIPAL_NAME, PRINCIPAL_ROLE, audit
from gateway.web.auth import REALM, bearer_token, check_token
from gateway.web.errors import ApiError, StrictBody, error_response, parse_body
from gateway.web.ratelimit import RateLimiter, retry_after

if TYPE_CHECKING:
    from gateway.users.directory import UserDirectory

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SESSION_COOKIE: Final = "bedside_session"
CSRF_HEADER: Final = "X-CSRF-Token"
SERVICE: Final = "service"  # the principal name of the service token
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})

EVERYONE: Final = frozenset(Role)
CLINICAL: Final = frozenset({Role.CLINICIAN, Role.ADMIN})
TECHNICAL: Final = frozenset({Role.TECHNICIAN, Role.ADMIN})

# (method, route) → the roles allowed; PUBLIC: no credentials needed. docs/contracts.md has the
# same table; tests/test_access.py checks both and calls every route with every role.
ROUTE_ROLES: Final[Mapping[tuple[str, str], frozenset[Role] | None]] = {
    ("GET", "/healthz"): None,
    ("GET", "/"): TECHNICAL,
    ("GET", "/review"): CLINICAL,
    ("GET", "/login"): None,
    ("GET", "/static/{name}"): None,
    ("POST", "/api/login"): None,
    ("POST", "/api/logout"): EVERYONE,
    ("GET", "/api/me"): EVERYONE,
    ("GET", "/v1/models"): CLINICAL,
    ("GET", "/v1/models/{model}"): CLINICAL,
    ("POST", "/v1/chat/completions"): CLINICAL,
    ("POST", "/v1/embeddings"): CLINICAL,
    ("POST", "/api/consultations"): CLINICAL,
    ("GET", "/api/consultations"): CLINICAL,
    ("GET", "/api/consultations/{id}"): CLINICAL,
    ("POST", "/api/consultations/{id}/messages"): CLINICAL,
    ("POST", "/api/consultations/{id}/close"): CLINICAL,
    ("GET", "/api/patient"): EVERYONE,
    ("PUT", "/api/patient"): EVERYONE,
    ("DELETE", "/api/patient"): EVERYONE,
    ("GET", "/api/sensors"): EVERYONE,
    ("GET", "/api/live"): EVERYONE,
    ("GET", "/metrics"): frozenset({Role.ADMIN}),
    ("GET", "/api/doctor"): TECHNICAL,
    ("GET", "/api/gateway"): TECHNICAL,
    ("POST", "/api/sensors/{address}/accept"): TECHNICAL,
    ("DELETE", "/api/sensors/{address}"): TECHNICAL,
    ("POST", "/api/sensors/{address}/passkey"): TECHNICAL,
    ("POST", "/api/sensors/{address}/measure"): TECHNICAL,
    ("POST", "/api/outbox/retry-dead"): TECHNICAL,
    ("GET", "/api/firmware"): TECHNICAL,
    ("POST", "/api/firmware/{address}/upload"): TECHNICAL,
    ("POST", "/api/firmware/{address}/update"): TECHNICAL,
    ("GET", "/api/firmware/{address}/job"): TECHNICAL,
    ("POST", "/api/firmware/{address}/confirm"): TECHNICAL,
    ("POST", "/api/firmware/{address}/revert"): TECHNICAL,
    ("GET", "/api/logs"): TECHNICAL,
    ("GET", "/api/diagnostics"): TECHNICAL,
    ("GET", "/api/drafts"): CLINICAL,
    ("GET", "/api/drafts/{id}"): CLINICAL,
    ("PATCH", "/api/drafts/{id}"): CLINICAL,
    ("GET", "/api/drafts/{id}/versions/{version}"): CLINICAL,
    ("POST", "/api/drafts/{id}/offer"): CLINICAL,
    ("POST", "/api/drafts/{id}/approve"): CLINICAL,
    ("POST", "/api/drafts/{id}/reject"): CLINICAL,
    ("GET", "/api/drafts/{id}/pdf"): CLINICAL,
    ("GET", "/api/audit"): frozenset({Role.ADMIN}),
}

# HTML pages: a logged-out browser is sent to /login
PAGES: Final = frozenset({("GET", "/"), ("GET", "/review")})
USERS: Final[web.AppKey[UserDirectory | None]] = web.AppKey("users")
RATE_LIMITER: Final[web.AppKey[RateLimiter]] = web.AppKey("rate_limiter")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (or the service token, as admin) and how they authenticated."""

    name: str
    role: Role
    via: str  # "service", "token" or "session"
    csrf: str | None = None


PRINCIPAL: Final = web.RequestKey("principal", Principal)


def route_key(request: web.Request) -> tuple[str, str]:
    """(method, the route's pattern as registered: ``canonical`` drops regex parts): a key of
    the table; HEAD is answered as GET."""
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else request.path
    return request.method if request.method != "HEAD" else "GET", canonical


def _unauthorized(message: str, *, given: bool) -> web.Response:
    """401 with the RFC 6750 §3 challenge (``error="invalid_token"`` for credentials that were
    sent but are not valid)."""
    challenge = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if given else "")
    return error_response(
        401, message, code="invalid_api_key", headers={"WWW-Authenticate": challenge}
    )


def _forbidden(message: str, code: str = "forbidden") -> web.Response:
    return error_response(403, message, code=code)


def access_middleware(service_token: str) -> Middleware:
    """Authenticate every request but the public ones and apply :data:`ROUTE_ROLES`."""
    expected = check_token(service_token, "API token")

    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = route_key(request)
        allowed = ROUTE_ROLES.get(key, frozenset({Role.ADMIN}))
        if allowed is None:
            return await handler(request)
        principal, problem = _authenticate(request, expected)
        if principal is None and key in PAGES:  # a browser: to the login page, and back
            target = f"/login?next={quote(request.path, safe='/')}"
            return web.Response(status=302, headers={"Location": target})
        if principal is None:
            sent = "Authorization" in request.headers or SESSION_COOKIE in request.cookies
            return _unauthorized(problem, given=sent)
        if principal.role not in allowed:
            roles = ", ".join(sorted(str(r) for r in allowed))
            return _forbidden(
                f"{principal.name} ({principal.role}) may not {key[0]} {key[1]}; it needs the "
                f"role {roles}"
            )
        if principal.via == "session" and request.method in UNSAFE_METHODS:
            given = request.headers.get(CSRF_HEADER, "")
            if principal.csrf is None or not hmac.compare_digest(given, principal.csrf):
                return _forbidden(
                    f"missing or wrong {CSRF_HEADER} header: send the csrf_token of your login",
                    "csrf_failed",
                )
        limiter = request.app.get(RATE_LIMITER)
        wait = limiter.take(principal.name, principal.role) if limiter is not None else None
        if wait is not None:
            return error_response(
                429,
                f"too many requests from {principal.name}: the {principal.role} limit is "
                f"reached; retry in {retry_after(wait)} s",
                code="rate_limited",
                headers={"Retry-After": retry_after(wait)},
            )
        request[PRINCIPAL] = principal
        request[PRINCIPAL_NAME], request[PRINCIPAL_ROLE] = principal.name, str(principal.role)
        return await handler(request)

    return access


def _authenticate(request: web.Request, expected: str) -> tuple[Principal | None, str]:
    users = request.app.get(USERS)
    given = bearer_token(request.headers.get("Authorization"))
    if given is not None:
        if hmac.compare_digest(given.encode(), expected.encode()):
            return Principal(SERVICE, Role.ADMIN, "service"), ""
        user = users.token_user(given) if users is not None else None
        if user is None:
            return None, "the bearer token is not valid"
        return Principal(user.name, user.role, "token"), ""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and users is not None:
        session = users.session(cookie)
        if session is not None:
            return Principal(session.user.name, session.user.role, "session", session.csrf), ""
        return None, "the login session has ended; log in again"
    return None, (
        "missing credentials: send 'Authorization: Bearer <token>' or log in (POST /api/login)"
    )


class LoginBody(StrictBody):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


async def login(request: web.Request) -> web.Response:
    users = request.app.get(USERS)
    if users is None:
        raise ApiError(404, "this gateway has no user accounts", code="no_users")
    body = await parse_body(request, LoginBody)
    try:  # argon2: tens of milliseconds, off the event loop
        session = await asyncio.to_thread(users.login, body.username, body.password)
    except LockedError as exc:
        await audit(request, "login", user=body.username, outcome="failure", detail="locked")
        raise ApiError(
            429, str(exc), code="locked", headers={"Retry-After": f"{exc.retry_after_s:.0f}"}
        ) from exc
    except UserError as exc:
        await audit(request, "login", user=body.username, outcome="failure", detail=str(exc))
        raise ApiError(401, str(exc), code="login_failed") from exc
    await audit(request, "login", user=session.user.name, role=str(session.user.role))
    response = web.json_response(
        {"user": session.user.name, "role": str(session.user.role), "csrf_token": session.csrf}
    )
    response.set_cookie(
        SESSION_COOKIE,
        session.session_id,
        max_age=int(SESSION_S),
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/",
    )
    return response


async def logout(request: web.Request) -> web.Response:
    principal: Principal = request[PRINCIPAL]
    users = request.app.get(USERS)
    cookie = request.cookies.get(SESSION_COOKIE)
    if principal.via == "session" and cookie and users is not None:
        await asyncio.to_thread(users.logout, cookie)
        await audit(request, "logout")
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def me(request: web.Request) -> web.Response:
    principal: Principal = request[PRINCIPAL]
    answer = {"user": principal.name, "role": str(principal.role), "via": principal.via}
    if principal.csrf is not None:  # the page's own script reads it (same origin only)
        answer["csrf_token"] = principal.csrf
    return web.json_response(answer)


def setup_access(users: UserDirectory | None) -> Callable[[web.Application], None]:
    """The ``setup`` callback for the login routes and the user directory."""

    def setup(app: web.Application) -> None:
        app[USERS] = users
        app.router.add_post("/api/login", login)
        app.router.add_post("/api/logout", logout)
        app.router.add_get("/api/me", me)

    return setup
