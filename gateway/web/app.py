"""The aiohttp application: bearer-token auth, JSON errors, ``/healthz``, the OpenAI-compatible
``/v1`` API, and the routes other modules add through ``setup`` callbacks.

::

    app = build_app(token=token, engine=engine, embedder=embedder,
                    setup=[consultations.add_routes])   # each: Callable[[web.Application], None]
    runner = await serve(app, http.host, http.port)     # bedside run / demo: 127.0.0.1:8080
    ...
    await runner.cleanup()

Route modules reach the services through the application keys of :mod:`gateway.web`
(``request.app[ENGINE]``, ``request.app[EMBEDDINGS]``). Every error response, on every route, is
JSON in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gateway import __version__
from gateway.errors import ConfigError
from gateway.web import EMBEDDINGS, ENGINE, STARTED_AT
from gateway.web.auth import (
    API_TOKEN_FILE,
    DEMO_TOKEN_FILE,
    auth_middleware,
    check_token,
    load_or_create_token,
)
from gateway.web.openai_api import (
    ApiError,
    EmbedderLike,
    EmbeddingService,
    add_routes,
    error_response,
)

if TYPE_CHECKING:
    from gateway.assistant.engine import Engine

__all__ = [
    "EMBEDDINGS",
    "ENGINE",
    "HttpSettings",
    "bound_port",
    "build_app",
    "resolve_token",
    "serve",
]

log = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8080
DEFAULT_MAX_BODY: Final = 4 * 1024 * 1024
DEFAULT_EMBEDDER_NAME: Final = "all-MiniLM-L6-v2"  # DESIGN.md §5 embedded embedding model
SHUTDOWN_TIMEOUT_S: Final = 5.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Setup = Callable[[web.Application], None]


class HttpSettings(BaseModel):
    """Where the HTTP API listens and how clients authenticate (nest as ``http``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="serve the API (and load the assistant)")
    host: str = Field(default=DEFAULT_HOST, description="listen address (loopback by default)")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=DEFAULT_PORT, description="TCP port (--http-port); 0 picks a free one"
    )
    token: SecretStr | None = Field(default=None, description="the bearer token clients send")
    token_file: Path | None = Field(
        default=None,
        description="a file holding the token (default: DATA_DIR/api-token, created if absent)",
    )
    max_body_bytes: Annotated[int, Field(ge=1024)] = DEFAULT_MAX_BODY


def resolve_token(http: HttpSettings, data_dir: Path, *, demo: bool = False) -> str:
    """The API token: ``http.token``, else the contents of ``http.token_file``, else
    ``DATA_DIR/demo-token`` (demo) or ``DATA_DIR/api-token``, created with a random token."""
    if http.token is not None:
        return check_token(http.token.get_secret_value(), "http.token")
    path = http.token_file or data_dir / (DEMO_TOKEN_FILE if demo else API_TOKEN_FILE)
    return load_or_create_token(path)


def _http_error(exc: web.HTTPException, request: web.Request) -> web.Response:
    status = exc.status
    headers: dict[str, str] = {}
    code: str | None = None
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        headers["Allow"] = allowed
        message = f"method {request.method} is not allowed on {request.path}; allowed: {allowed}"
        code = "method_not_allowed"
    elif isinstance(exc, web.HTTPNotFound):
        message = f"no route {request.method} {request.path}"
        code = "not_found"
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        message = f"the request body is too large ({exc.text})"
        code = "request_too_large"
    else:
        message = exc.text or exc.reason
    return error_response(status, message, code=code, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON in OpenAI's shape; unexpected exceptions logged, answered with 500."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < web.HTTPBadRequest.status_code:
            raise
        return _http_error(exc, request)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal error; the gateway log has the details")


async def healthz(request: web.Request) -> web.Response:
    """Liveness, without authentication: ``{"status": "ok", ...}``."""
    engine = request.app[ENGINE]
    embeddings = request.app[EMBEDDINGS]
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "uptime_s": round(time.time() - request.app[STARTED_AT], 3),
            "model": engine.model_info.name if engine is not None and engine.running else None,
            "embedding_model": embeddings.name if embeddings is not None else None,
        }
    )


def build_app(
    *,
    token: str,
    engine: Engine | None,
    embedder: EmbedderLike | None = None,
    embedder_name: str = DEFAULT_EMBEDDER_NAME,
    setup: Sequence[Setup] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY,
) -> web.Application:
    """The application. ``engine`` must be started by the caller (and closed after the runner's
    cleanup); the embedder runs in a thread the app owns (stopped on cleanup). Each ``setup``
    callback registers more routes, after the built-in ones, behind the same auth."""
    app = web.Application(
        middlewares=[json_errors, auth_middleware(token)], client_max_size=max_body_bytes
    )
    app[ENGINE] = engine
    service = EmbeddingService(embedder, embedder_name) if embedder is not None else None
    app[EMBEDDINGS] = service
    app[STARTED_AT] = time.time()

    async def embedder_thread(_app: web.Application) -> AsyncIterator[None]:
        yield
        if service is not None:
            await asyncio.to_thread(service.close)

    app.cleanup_ctx.append(embedder_thread)
    app.router.add_get("/healthz", healthz)
    add_routes(app)
    for callback in setup:
        callback(app)
    return app


async def serve(
    app: web.Application, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> web.AppRunner:
    """Start serving ``app``; ``await runner.cleanup()`` stops it. A client that disconnects
    cancels its handler (and so its generation)."""
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"{host}:{port}: cannot listen ({exc.strerror or exc}); choose another --http-port"
        ) from exc
    log.info("HTTP API on http://%s:%d", host, bound_port(runner))
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port the runner listens on (useful with port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the runner is not listening on a TCP socket")
