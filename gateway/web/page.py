"""The field technician's page, served by the gateway itself: no Node build, the HTML, CSS and
JavaScript in ``gateway/web/static/`` are package data, read once at start.

- ``GET /``: the page (technician, admin). A browser that is not logged in is sent to the login
  page; a logged-in clinician gets 403.
- ``GET /review``: the clinician's page (clinician, admin): draft reports, edited, approved with
  the clinician's key (signed in the browser) or rejected.
- ``GET /login``: the login form (public); it posts to ``POST /api/login`` and comes back.
- ``GET /static/{name}``: the page's CSS and JavaScript (public: they hold no data).
- ``GET /api/live``: the live stream (:mod:`gateway.web.live`).

The page uses only the JSON API (``/api/me``, ``/api/sensors``, ``/api/live``, the sensor
actions with the session's CSRF token), so everything it shows or does is there for scripts too.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Final

from aiohttp import web

from gateway.web.errors import ApiError
from gateway.web.live import LIVE, LiveHub, live

STATIC: Final = {
    "page.css": "text/css",
    "api.js": "text/javascript",
    "page.js": "text/javascript",
    "login.js": "text/javascript",
    "review.js": "text/javascript",
}
PAGES: Final = ("index.html", "login.html", "review.html")
# The page loads nothing from elsewhere and runs no inline script.
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
FILES: Final[web.AppKey[dict[str, bytes]]] = web.AppKey("page_files", dict)


def _load() -> dict[str, bytes]:
    folder = resources.files("gateway.web") / "static"
    return {name: (folder / name).read_bytes() for name in (*STATIC, *PAGES)}


def _html(request: web.Request, name: str) -> web.Response:
    return web.Response(
        body=request.app[FILES][name],
        content_type="text/html",
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )


async def index(request: web.Request) -> web.Response:
    return _html(request, "index.html")


async def review_page(request: web.Request) -> web.Response:
    return _html(request, "review.html")


async def login_page(request: web.Request) -> web.Response:
    return _html(request, "login.html")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    content_type = STATIC.get(name)
    if content_type is None:
        raise ApiError(404, f"no file {name!r} here", code="not_found")
    return web.Response(
        body=request.app[FILES][name],
        content_type=content_type,
        charset="utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
    )


def setup_page(hub: LiveHub) -> Callable[[web.Application], None]:
    """The ``setup`` callback for the page, its files and the live stream."""

    def setup(app: web.Application) -> None:
        app[FILES] = _load()
        app[LIVE] = hub
        app.router.add_get("/", index)
        app.router.add_get("/review", review_page)
        app.router.add_get("/login", login_page)
        app.router.add_get("/static/{name}", static)
        app.router.add_get("/api/live", live)

        async def end_streams(_app: web.Application) -> None:
            hub.close()

        app.on_shutdown.append(end_streams)

    return setup
