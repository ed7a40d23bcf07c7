"""Bearer-token authentication for every route except ``GET /healthz``.

The token is compared in constant time. A missing or wrong token gets a 401 with an OpenAI-shaped
JSON error and ``WWW-Authenticate: Bearer`` (RFC 6750 §3). Tokens live in files of mode 0600 in
the data directory (``bedside demo`` creates ``DATA_DIR/demo-token``).
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.errors import ConfigError
from gateway.web.errors import error_response

TOKEN_BYTES: Final = 32  # 256 bits of randomness, URL-safe base64 (43 characters)
MIN_TOKEN_LENGTH: Final = 16
TOKEN_PATTERN: Final = re.compile(r"[A-Za-z0-9._~+/=-]+")  # RFC 6750 §2.1 b64token
DEMO_TOKEN_FILE: Final = "demo-token"  # noqa: S105 - a file name, not a secret
API_TOKEN_FILE: Final = "api-token"  # noqa: S105 - a file name, not a secret
REALM: Final = "bedside"
PUBLIC_ROUTES: Final = frozenset({("GET", "/healthz"), ("HEAD", "/healthz")})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def generate_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def check_token(token: str, where: str) -> str:
    """``token`` stripped, if it is usable as a bearer token; :class:`ConfigError` otherwise."""
    token = token.strip()
    if len(token) < MIN_TOKEN_LENGTH or TOKEN_PATTERN.fullmatch(token) is None:
        raise ConfigError(
            f"{where}: expected a bearer token of at least {MIN_TOKEN_LENGTH} characters "
            "(letters, digits, -._~+/=)"
        )
    return token


def load_or_create_token(path: Path) -> str:
    """The token in ``path``; a new random one (file mode 0600) when the file does not exist."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            return check_token(path.read_text(encoding="utf-8"), str(path))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the API token ({exc.strerror})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the API token ({exc.strerror})") from exc
    token = generate_token()
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    return token


def bearer_token(header: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer …`` header (scheme case-insensitive)."""
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison (the time does not depend on where the tokens differ)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _unauthorized(message: str, error: str | None) -> web.Response:
    challenge = f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")
    return error_response(
        401, message, code="invalid_api_key", headers={"WWW-Authenticate": challenge}
    )


def auth_middleware(
    token: str, *, public: Collection[tuple[str, str]] = PUBLIC_ROUTES
) -> Middleware:
    """Require ``Authorization: Bearer <token>`` on every request but the ``public`` ones
    (method, path)."""
    expected = check_token(token, "API token")

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (request.method, request.path) in public:
            return await handler(request)
        given = bearer_token(request.headers.get("Authorization"))
        if given is None:
            return _unauthorized(
                "missing bearer token: send 'Authorization: Bearer <token>' (the gateway's "
                "API token)",
                None,
            )
        if not token_matches(given, expected):
            return _unauthorized("the bearer token is not valid", "invalid_token")
        return await handler(request)

    return authenticate
