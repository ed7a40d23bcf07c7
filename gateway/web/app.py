"""The aiohttp application: bearer-token auth, JSON errors, ``/healthz``, the OpenAI-compatible
``/v1`` API, and the routes other modules add through ``setup`` callbacks.

::

    app = build_app(token=token, engine=engine, embedder=embedder,
                    setup=[setup_consultations(service)])  # each: (web.Application) -> None
    runner = await serve(app, http.host, http.port)         # bedside run / demo: 127.0.0.1:8080
    ...
    await runner.cleanup()

The gateway serves before its assistant has loaded: it passes ``assistant=AssistantServices()``
(``"loading"``) and fills it in from a background task (:mod:`gateway.web.services`); ``engine``
and ``embedder`` are for an assistant that is there already. ``health`` adds components to
``/healthz``: ``build_app(..., health={"radio": radio_status})`` shows ``"radio":
radio_status()`` in every answer (the mapping stays reachable as ``app[HEALTH]`` to add more).

Route modules reach the services through the application keys of :mod:`gateway.web.services`
(``request.app[ASSISTANT]``). Every error response, on every route, is JSON in OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from aiohttp import web

from gateway import __version__
from gateway.errors import ConfigError
from gateway.rag.settings import EMBEDDED_MODEL
from gateway.web.access import RATE_LIMITER, access_middleware, setup_access
from gateway.web.auth import (
    API_TOKEN_FILE,
    DEMO_TOKEN_FILE,
    check_token,
    load_or_create_token,
)
from gateway.web.errors import ApiError, error_response
from gateway.web.openai_api import add_routes
from gateway.web.ratelimit import RateLimit, RateLimiter
from gateway.web.services import (
    ASSISTANT,
    HEALTH,
    STARTED_AT,
    UP_SINCE,
    AssistantServices,
    HealthCheck,
)
from gateway.web.settings import DEFAULT_HOST, DEFAULT_MAX_BODY, DEFAULT_PORT, HttpSettings
from gateway.web.sse import STREAMING

if TYPE_CHECKING:
    from gateway.assistant.backend import LlmEngine
    from gateway.users.directory import UserDirectory
    from gateway.web.embeddings import EmbedderLike
    from gateway.web.metrics import GatewayMetrics

__all__ = [
    "ASSISTANT",
    "HEALTH",
    "AssistantServices",
    "HttpSettings",
    "bound_port",
    "build_app",
    "resolve_token",
    "serve",
]

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S: Final = 5.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Setup = Callable[[web.Application], None]


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
        if request.get(STREAMING):  # the headers are out: end the stream, write nothing more
            raise
        return error_response(500, "internal error; the gateway log has the details")


async def healthz(request: web.Request) -> web.Response:
    """Liveness, without authentication: ``{"status": "ok", "version", "uptime_s", "model",
    "embedding_model", "assistant": "loading" | "ready" | "disabled" | "failed"}`` (with
    ``"assistant_error"`` when failed), then one field per health check of ``app[HEALTH]``."""
    app = request.app
    assistant = app[ASSISTANT]
    engine = assistant.running()
    embeddings = assistant.ready_embeddings()
    body: dict[str, object] = {
        "status": "ok",
        "version": __version__,
        "uptime_s": round(time.monotonic() - app[UP_SINCE], 3),  # an NTP step changes nothing
        "model": engine.model_info.name if engine is not None else None,
        "embedding_model": embeddings.name if embeddings is not None else None,
        **assistant.health(),
    }
    for name, check in app[HEALTH].items():
        try:
            body[name] = check()
        except Exception:
            log.exception("health check %r failed", name)
            body[name] = "unknown"
    return web.json_response(body)


def build_app(
    *,
    token: str,
    engine: LlmEngine | None = None,
    embedder: EmbedderLike | None = None,
    embedder_name: str = EMBEDDED_MODEL,
    assistant: AssistantServices | None = None,
    health: Mapping[str, HealthCheck] | None = None,
    setup: Sequence[Setup] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY,
    users: UserDirectory | None = None,
    metrics: GatewayMetrics | None = None,
    rate_limits: Mapping[str, RateLimit] | None = None,
) -> web.Application:
    """The application.

    ``assistant``: the services the gateway loads in the background; without it, ``engine``
    (started by the caller, closed after the runner's cleanup) and ``embedder`` (run in a
    thread the app owns) are ready at once, and with neither the assistant is disabled.
    ``health``: more ``/healthz`` fields, name → callable. Each ``setup`` callback registers more
    routes, after the built-in ones, behind the same auth. ``users``: the accounts that may log in
    and hold API tokens (None: the service token only); see :mod:`gateway.web.access`.
    ``rate_limits``: requests per caller by role (None: unlimited; :mod:`gateway.web.ratelimit`).
    """
    app = web.Application(
        middlewares=[
            *([metrics.middleware()] if metrics is not None else []),
            json_errors,
            access_middleware(token),
        ],
        client_max_size=max_body_bytes,
    )
    if assistant is None:
        assistant = _given_assistant(engine, embedder, embedder_name)
    elif engine is not None or embedder is not None:
        raise ValueError("build_app: give either assistant or engine/embedder, not both")
    app[ASSISTANT] = assistant
    app[HEALTH] = dict(health or {})
    app[STARTED_AT] = time.time()  # the models' "created" (a Unix time)
    app[UP_SINCE] = time.monotonic()
    if rate_limits is not None:
        app[RATE_LIMITER] = RateLimiter(rate_limits)

    async def embedder_thread(_app: web.Application) -> AsyncIterator[None]:
        yield
        if assistant.embeddings is not None:
            await asyncio.to_thread(assistant.embeddings.close)

    app.cleanup_ctx.append(embedder_thread)
    app.router.add_get("/healthz", healthz)
    setup_access(users)(app)
    add_routes(app)
    for callback in setup:
        callback(app)
    return app


def _given_assistant(
    engine: LlmEngine | None, embedder: EmbedderLike | None, embedder_name: str
) -> AssistantServices:
    if engine is None and embedder is None:
        return AssistantServices("disabled")
    assistant = AssistantServices()
    embeddings = None
    if embedder is not None:
        from gateway.web.embeddings import EmbeddingService

        embeddings = EmbeddingService(embedder, embedder_name)
    assistant.ready(engine, embeddings=embeddings)
    return assistant


async def serve(
    app: web.Application,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> web.AppRunner:
    """Start serving ``app`` (over TLS with ``ssl_context``); ``await runner.cleanup()`` stops
    it. A client that disconnects cancels its handler (and so its generation)."""
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"{host}:{port}: cannot listen ({exc.strerror or exc}); choose another --http-port"
        ) from exc
    scheme = "https" if ssl_context is not None else "http"
    log.info("HTTP API on %s://%s:%d", scheme, host, bound_port(runner))
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port the runner listens on (useful with port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the runner is not listening on a TCP socket")
