"""The technician's page in a real browser: Debian's Chromium driven by Playwright (no browser
download), against the gateway and the simulator over Bumble."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from gateway.users import UserDirectory
from gateway.users.demo import ensure_demo_users
from tests.harness import Running, running_gateway, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless, offline: no first-run, sync, component update or background requests.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KINDS = ["ecg", "spo2", "thermo"]
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it)"
)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Running, dict[str, dict[str, str]], str]]:
    directory = UserDirectory(tmp_path)
    accounts = ensure_demo_users(directory, tmp_path)
    directory.close()
    async with running_gateway(
        tmp_path,
        KINDS,
        seed=21,
        overrides={"thermo.interval_s": 1.0, "spo2.pleth": True},
        http={"enabled": True, "port": 0},
        assistant={"enabled": False},
        patient={"reference": "Patient/7"},
    ) as run:
        await wait_until(
            lambda: run.states() == dict.fromkeys(KINDS, "streaming"), 30, "sensors streaming"
        )
        yield run, accounts, f"http://127.0.0.1:{run.gateway.http_port}"


async def log_in(page: Page, base: str, account: dict[str, str]) -> None:
    await page.goto(f"{base}/")
    assert "/login?next=/" in page.url  # a logged-out browser is sent to the login page
    await page.fill("#username", account["username"])
    await page.fill("#password", account["password"])
    await page.click("button[type=submit]")


async def rows(page: Page) -> list[dict[str, Any]]:
    return await page.eval_on_selector_all(
        "#sensors tbody tr",
        "rows => rows.map(r => ({address: r.dataset.address, "
        "cells: [...r.cells].map(c => c.textContent)}))",
    )


async def test_the_technician_sees_the_sensors_live_with_the_ecg_strip_and_manages_them(
    browser: Browser,
    gateway: tuple[Running, dict[str, dict[str, str]], str],
    tmp_path: Path,
) -> None:
    run, accounts, base = gateway
    # The page's CSP forbids eval; Playwright's waits evaluate strings, so the test lifts it.
    context = await browser.new_context(viewport={"width": 1280, "height": 1000}, bypass_csp=True)
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    await log_in(page, base, accounts["technician"])
    await page.wait_for_url(f"{base}/")
    await page.wait_for_function("document.querySelectorAll('#sensors tbody tr').length === 3")
    listed = await rows(page)
    assert {r["cells"][0] for r in listed} == set(KINDS)
    assert all(r["cells"][3].startswith("streaming") for r in listed)
    assert await page.text_content("#who") == "technician (technician)"

    # Live vitals arrive and change; the ECG strip draws samples and its pixels move.
    await page.wait_for_selector("dd[data-vital='Heart rate']")
    await page.wait_for_selector("dd[data-vital='Body temperature']")
    first_temperature = await page.text_content("dd[data-vital='Body temperature']")
    await page.wait_for_function(
        "text => document.querySelector(\"dd[data-vital='Body temperature']\").textContent"
        " !== text",
        arg=first_temperature,
    )  # the values change as the sensors send them
    canvas = page.locator("#ecg")
    await page.wait_for_function("Number(document.querySelector('#ecg').dataset.samples) > 250")
    first = await canvas.screenshot()
    drawn = int(await canvas.get_attribute("data-samples") or 0)
    await page.wait_for_function(
        f"Number(document.querySelector('#ecg').dataset.samples) > {drawn + 250}"
    )
    second = await canvas.screenshot()
    assert first != second, "the ECG strip moves"
    await page.wait_for_function("Number(document.querySelector('#pleth').dataset.samples) > 50")
    assert await page.is_visible("#pleth")
    # The gateway's facts and the checks (the radio as the running gateway sees it).
    await page.wait_for_function(
        "document.querySelector('#gateway').textContent.includes('Up for')"
    )
    assert run.gateway.identity.gateway_id in (await page.text_content("#gateway") or "")
    await page.wait_for_selector("#checks li[data-check='radio'] .level-ok")
    assert "none configured" in (await page.text_content("#uplinks") or "")
    assert "Patient/7 (configuration)" in (await page.text_content("#gateway") or "")
    await page.screenshot(path=str(tmp_path / "technician-page.png"), full_page=True)

    # Assign a patient; the nothing-to-retry button stays disabled; measure on the thermometer.
    await page.fill("#patient-reference", "Patient/42")
    await page.click("#patient-form button[type=submit]")
    await page.wait_for_function(
        "document.querySelector('#gateway').textContent.includes('Patient/42')"
    )
    assert await page.is_disabled("#retry-dead")
    thermo_row = page.locator(
        f"#sensors tbody tr[data-address='{run.sim.sensors['thermo'].address}']"
    )
    await thermo_row.get_by_role("button", name="Measure").click()
    await page.wait_for_function("document.querySelector('#status').textContent.includes('°C')")

    # Forget the thermometer (confirming the dialog), then accept it again.
    thermo = run.sim.sensors["thermo"].address
    page.on("dialog", lambda dialog: dialog.accept())
    row = page.locator(f"#sensors tbody tr[data-address='{thermo}']")
    await row.get_by_role("button", name="Forget").click()
    await wait_until(lambda: run.status("thermo").address == "", 30, "thermo forgotten")
    await page.wait_for_function(
        f"""[...document.querySelectorAll("#sensors tbody tr[data-address='{thermo}'] td")]
            .some(td => td.textContent === 'not accepted')"""
    )
    await row.get_by_role("button", name="Accept").click()
    await wait_until(lambda: run.status("thermo").state == "streaming", 30, "thermo back")
    assert run.manager.registry.source(thermo) == "accepted"


async def test_a_clinician_is_refused_the_technician_page_and_actions(
    browser: Browser, gateway: tuple[Running, dict[str, dict[str, str]], str]
) -> None:
    run, accounts, base = gateway
    page = await (await browser.new_context(bypass_csp=True)).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    await log_in(page, base, accounts["clinician"])
    await page.wait_for_url(f"{base}/review")  # not the technician's page: the clinician's own
    await page.goto(f"{base}/")
    assert "may not GET /" in (await page.text_content("body") or "")
    me = await page.evaluate("fetch('/api/me').then(r => r.json())")
    assert me["role"] == "clinician"
    thermo = run.sim.sensors["thermo"].address
    status = await page.evaluate(
        f"""fetch('/api/sensors/{thermo}/accept', {{method: 'POST',
              headers: {{'X-CSRF-Token': '{me["csrf_token"]}'}}}}).then(r => r.status)"""
    )
    assert status == 403


async def test_the_technician_retries_what_the_fhir_server_refused(
    browser: Browser, tmp_path: Path
) -> None:
    """A FHIR server that refuses every Bundle (422) makes outbox items dead; the page's button
    puts them back in the queue and the gateway sends them again."""
    received: list[int] = []

    async def refuse(request: web.Request) -> web.Response:
        received.append(len(await request.read()))
        outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]}
        return web.json_response(outcome, status=422)

    server_app = web.Application()
    server_app.router.add_post("/fhir", refuse)
    runner = web.AppRunner(server_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    directory = UserDirectory(tmp_path)
    accounts = ensure_demo_users(directory, tmp_path)
    directory.close()
    try:
        async with running_gateway(
            tmp_path,
            ["thermo"],
            seed=22,
            overrides={"thermo.interval_s": 1.0},
            http={"enabled": True, "port": 0},
            https={"base_url": f"http://127.0.0.1:{port}/fhir"},
            assistant={"enabled": False},
            patient={"reference": "Patient/7"},
        ) as run:
            store = run.gateway.store
            assert store is not None
            await wait_until(lambda: len(received) >= 2, 30, "refused Bundles")
            base = f"http://127.0.0.1:{run.gateway.http_port}"
            page = await (await browser.new_context(bypass_csp=True)).new_page()
            page.set_default_timeout(TIMEOUT_MS)
            await log_in(page, base, accounts["technician"])
            await page.wait_for_url(f"{base}/")
            await page.wait_for_function("!document.querySelector('#retry-dead').disabled")
            assert "refused" in (await page.text_content("#uplinks") or "")
            before = len(received)
            await page.click("#retry-dead")
            said = "document.querySelector('#status').textContent"
            await page.wait_for_function(f"{said}.includes('Retry refused items: done')")
            await wait_until(lambda: len(received) > before, 30, "the Bundles sent again")
    finally:
        await runner.cleanup()
