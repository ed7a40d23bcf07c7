"""The gateway's service token: reading, making and checking it, and the ``Authorization:
Bearer`` header (RFC 6750). Tokens live in files of mode 0600 in the data directory (``bedside
demo`` creates ``DATA_DIR/demo-token``); :mod:`gateway.web.access` checks every request.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from aiohttp import web

from gateway.errors import ConfigError

TOKEN_BYTES: Final = 32  # 256 bits of randomness, URL-safe base64 (43 characters)
MIN_TOKEN_LENGTH: Final = 16
TOKEN_PATTERN: Final = re.compile(r"[A-Za-z0-9._~+/=-]+")  # RFC 6750 §2.1 b64token
DEMO_TOKEN_FILE: Final = "demo-token"  # noqa: S105 - a file name, not a secret
API_TOKEN_FILE: Final = "api-token"  # noqa: S105 - a file name, not a secret
REALM: Final = "bedside"

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
