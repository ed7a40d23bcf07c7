"""Who may call what (gateway.web.access): the route × role table of docs/contracts.md is the
code's, every route of the running gateway is in it, and every route answers every role as the
table says; logins, CSRF and lockout over HTTP."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.users import UserDirectory
from gateway.users.demo import ensure_demo_users
from gateway.web.access import CSRF_HEADER, PAGES, ROUTE_ROLES, SESSION_COOKIE
from tests.harness import Running, running_gateway

DOCS = Path(__file__).resolve().parents[1] / "docs" / "contracts.md"
ROW = re.compile(r"^\| (GET|POST|PUT|PATCH|DELETE) \| (\S+) \| ([^|]+) \|$")
SERVICE_TOKEN = "access-test-service-token-0123456789"
ADDRESS = "F0:12:34:56:78:9A"
PARAMS = {
    "{address}": ADDRESS,
    "{id}": "no-such-consultation",
    "{model}": "gemma-3-270m",
    "{version}": "1",
}


def documented() -> dict[tuple[str, str], frozenset[str] | None]:
    rows: dict[tuple[str, str], frozenset[str] | None] = {}
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match is None:
            continue
        method, route, roles = match.groups()
        rows[(method, route)] = (
            None if roles.strip() == "public" else frozenset(r.strip() for r in roles.split(","))
        )
    return rows


def test_the_documented_table_is_the_code_s() -> None:
    in_code = {
        key: None if roles is None else frozenset(str(r) for r in roles)
        for key, roles in ROUTE_ROLES.items()
    }
    assert documented() == in_code


def url_of(route: str) -> str:
    for placeholder, value in PARAMS.items():
        route = route.replace(placeholder, value)
    return route


async def call(
    session: aiohttp.ClientSession, method: str, route: str, headers: dict[str, str]
) -> int:
    async with session.request(
        method, url_of(route), headers=headers, json={}, allow_redirects=False
    ) as answer:
        if answer.content_type != "text/event-stream":  # a live stream never ends
            await answer.read()
        return answer.status


@pytest.fixture
async def gateway(tmp_path: Path) -> Any:
    directory = UserDirectory(tmp_path)
    accounts = ensure_demo_users(directory, tmp_path)
    directory.close()
    http = {"enabled": True, "port": 0, "token": SERVICE_TOKEN}
    async with running_gateway(
        tmp_path, ["thermo"], seed=11, http=http, assistant={"enabled": False}
    ) as run:
        yield run, accounts


async def test_every_route_is_in_the_table_and_answers_every_role_as_it_says(
    gateway: tuple[Running, dict[str, dict[str, str]]],
) -> None:
    run, accounts = gateway
    app = run.gateway.web_app
    assert app is not None
    registered = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        resource = route.resource
        assert resource is not None
        registered.add((route.method, resource.canonical))
    assert registered == set(ROUTE_ROLES)

    base = f"http://127.0.0.1:{run.gateway.http_port}"
    tokens = {role: entry["token"] for role, entry in accounts.items()} | {"service": SERVICE_TOKEN}
    async with aiohttp.ClientSession(base) as session:
        for (method, route), roles in sorted(ROUTE_ROLES.items()):
            anonymous = await call(session, method, route, {})
            if roles is None:
                assert anonymous not in (401, 403), (method, route)
                continue
            # a page sends the logged-out browser to the login page; the API answers 401
            refused = 302 if (method, route) in PAGES else 401
            assert anonymous == refused, (method, route)
            bad = await call(session, method, route, {"Authorization": "Bearer not-a-token-at-all"})
            assert bad == refused, (method, route)
            for who, token in tokens.items():
                status = await call(session, method, route, {"Authorization": f"Bearer {token}"})
                allowed = who == "service" or who in {str(r) for r in roles}
                if allowed:
                    assert status not in (401, 403), (method, route, who, status)
                else:
                    assert status == 403, (method, route, who, status)


async def test_a_login_session_needs_its_csrf_token_to_change_anything(
    gateway: tuple[Running, dict[str, dict[str, str]]],
) -> None:
    run, accounts = gateway
    base = f"http://127.0.0.1:{run.gateway.http_port}"
    technician = accounts["technician"]
    jar = aiohttp.CookieJar(unsafe=True)  # the client keeps cookies of an IP address host
    async with aiohttp.ClientSession(base, cookie_jar=jar) as session:
        async with session.post(
            "/api/login",
            json={"username": technician["username"], "password": technician["password"]},
        ) as answer:
            assert answer.status == 200
            login = await answer.json()
            cookie = answer.cookies[SESSION_COOKIE]
            assert cookie["httponly"]
            assert cookie["samesite"] == "Strict"
        assert login["role"] == "technician"
        async with session.get("/api/me") as me:
            assert await me.json() == {
                "user": "technician",
                "role": "technician",
                "via": "session",
                "csrf_token": login["csrf_token"],
            }
        accept = f"/api/sensors/{ADDRESS}/accept"
        async with session.post(accept) as without:
            assert without.status == 403
            assert (await without.json())["error"]["code"] == "csrf_failed"
        async with session.post(accept, headers={CSRF_HEADER: "wrong"}) as wrong:
            assert wrong.status == 403
        async with session.post(accept, headers={CSRF_HEADER: login["csrf_token"]}) as right:
            assert right.status == 200
        async with session.get("/v1/models") as clinical:
            assert clinical.status == 403  # a technician's session, a clinician's route
        async with session.post("/api/logout", headers={CSRF_HEADER: login["csrf_token"]}) as out:
            assert out.status == 204
        async with session.get("/api/me") as after:
            assert after.status == 401


async def test_wrong_passwords_lock_the_login_with_retry_after(
    gateway: tuple[Running, dict[str, dict[str, str]]],
) -> None:
    run, accounts = gateway
    base = f"http://127.0.0.1:{run.gateway.http_port}"
    async with aiohttp.ClientSession(base) as session:
        for _ in range(5):
            async with session.post(
                "/api/login", json={"username": "clinician", "password": "not it"}
            ) as answer:
                assert answer.status == 401
                assert (await answer.json())["error"]["code"] == "login_failed"
        async with session.post(
            "/api/login",
            json={"username": "clinician", "password": accounts["clinician"]["password"]},
        ) as locked:
            assert locked.status == 429
            assert locked.headers["Retry-After"] == "30"
            assert "try again in 30 s" in (await locked.json())["error"]["message"]
        async with session.post("/api/login", json={"username": "x"}) as malformed:
            assert malformed.status == 400
