"""Sensor firmware on the technician's page in a real browser (Debian's Chromium through
Playwright), against the gateway and the simulator over Bumble: the version each sensor runs, the
repository's update for the ECG patch, the "update available" filter, the Update button with its
confirmation, the progress and the outcome; and the error sentence of an update the gateway
refuses."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Dialog, Page, expect

from gateway.users import UserDirectory
from gateway.users.demo import ensure_demo_users
from tests import test_page_browser
from tests.firmware_images import build_image
from tests.harness import Running, running_gateway, wait_until
from tests.sim_central import FAST
from tests.test_page_browser import CHROMIUM, log_in

KINDS = ["ecg", "spo2"]
ECG_MODEL = "BS-ECG100"
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it)"
)
browser = test_page_browser.browser  # the same Chromium fixture


def add_image(repository: Path, version: str) -> None:
    """Build an ECG patch image at ``version`` and list it in the repository's manifest."""
    image = build_image(repository, version, key="ed25519")
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    with (repository / "manifest.toml").open("a", encoding="utf-8") as manifest:
        manifest.write(
            f'[[image]]\nmodel = "{ECG_MODEL}"\nversion = "{version}"\n'
            f'file = "{image.name}"\nsha256 = "{digest}"\n\n'
        )


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Running, dict[str, str], Path, str]]:
    repository = tmp_path / "firmware"
    repository.mkdir()
    add_image(repository, "1.6.0")
    directory = UserDirectory(tmp_path)
    accounts = ensure_demo_users(directory, tmp_path)
    directory.close()
    async with running_gateway(
        tmp_path,
        KINDS,
        seed=23,
        overrides=FAST,
        firmware={"repository": str(repository), "check_s": 1.5},
        http={"enabled": True, "port": 0},
        assistant={"enabled": False},
    ) as run:
        await wait_until(
            lambda: run.states() == dict.fromkeys(KINDS, "streaming"), 30, "sensors streaming"
        )
        base = f"http://127.0.0.1:{run.gateway.http_port}"
        yield run, accounts["technician"], repository, base


@pytest.fixture
async def page(
    browser: Browser, gateway: tuple[Running, dict[str, str], Path, str]
) -> AsyncIterator[Page]:
    """The technician's page, logged in; closed before the gateway stops (an open live stream
    holds the gateway's HTTP shutdown for its full timeout)."""
    _, technician, _, base = gateway
    # The page's CSP forbids eval; Playwright's waits evaluate strings, so the test lifts it.
    context = await browser.new_context(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
    opened = await context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    await log_in(opened, base, technician)
    await opened.wait_for_url(f"{base}/")
    yield opened
    await context.close()


async def test_the_technician_updates_the_ecg_patch_from_the_page_and_sees_a_refusal(
    page: Page, gateway: tuple[Running, dict[str, str], Path, str]
) -> None:
    run, _, repository, _ = gateway
    firmware = run.gateway.firmware
    assert firmware is not None
    ecg, spo2 = run.sim.sensors["ecg"], run.sim.sensors["spo2"]
    rows = page.locator("#sensors tbody tr")
    ecg_row = page.locator(f"#sensors tbody tr[data-address='{ecg.address}']")
    spo2_row = page.locator(f"#sensors tbody tr[data-address='{spo2.address}']")
    ecg_firmware = ecg_row.locator("td.firmware")

    # What each sensor runs; the repository has 1.6.0 for the ECG patch only.
    await expect(rows).to_have_count(2)
    await expect(ecg_firmware.locator(".fw-version")).to_have_text("1.4.2")
    await expect(ecg_firmware.locator(".fw-update")).to_have_text("→ 1.6.0")
    update = ecg_row.get_by_role("button", name="Update the firmware of")
    await expect(update).to_have_accessible_name(f"Update the firmware of {ecg.name} to 1.6.0")
    await expect(spo2_row.locator("td.firmware .fw-version")).to_have_text("1.4.2")
    await expect(spo2_row.locator(".fw-update")).to_have_count(0)
    await expect(spo2_row.get_by_role("button", name="Update the firmware of")).to_have_count(0)

    # "update available" shows the ECG row only; "all" both again.
    await page.select_option("#filter", "updates")
    await expect(rows).to_have_count(1)
    await expect(rows).to_have_attribute("data-address", ecg.address)
    await page.select_option("#filter", "all")
    await expect(rows).to_have_count(2)

    # Update, confirming the question: progress while it runs, then 1.6.0 confirmed.
    questions: list[str] = []

    async def accept(dialog: Dialog) -> None:
        questions.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)
    await update.click()
    progress = ecg_row.get_by_role("progressbar", name=f"Firmware update of {ecg.name} to 1.6.0")
    await expect(progress).to_be_visible()
    await expect(ecg_firmware.locator(".fw-phase")).to_contain_text("→ 1.6.0")
    question = (
        f"Update the firmware of {ecg.name} ({ecg.address}) from 1.4.2 to 1.6.0? The sensor "
        "restarts once and misses a few seconds of data; if the new firmware fails its check, "
        "the sensor goes back to 1.4.2."
    )
    assert questions == [question]
    await page.wait_for_function(
        "label => [...document.querySelectorAll('#sensors progress')]"
        ".some(bar => bar.getAttribute('aria-label') === label && bar.value === 100)",
        arg=f"Firmware update of {ecg.name} to 1.6.0",
    )  # uploaded: testing, restarting, verifying, confirming
    outcome = ecg_firmware.locator(".fw-outcome")
    await expect(outcome).to_have_attribute("data-outcome", "confirmed")
    await expect(outcome).to_have_text(f"confirmed: {ecg.name} runs 1.6.0, confirmed")
    await expect(outcome).to_have_class("fw-outcome level-ok")
    await expect(ecg_firmware.locator(".fw-version")).to_have_text("1.6.0")
    await expect(progress).to_have_count(0)
    await expect(ecg_firmware.locator(".fw-update")).to_have_count(0)
    await expect(update).to_have_count(0)
    assert ecg.management.version == "1.6.0"
    assert ecg.management.bootloader.confirmed
    await page.select_option("#filter", "updates")
    await expect(rows).to_have_count(0)
    await page.select_option("#filter", "all")

    # 1.7.0 arrives in the repository; while the technician reads the question, an update is
    # started elsewhere: the gateway refuses the page's request and the page says why.
    add_image(repository, "1.7.0")
    firmware.reload()
    await expect(ecg_firmware.locator(".fw-update")).to_have_text("→ 1.7.0")
    await expect(outcome).to_have_attribute("data-outcome", "confirmed")  # until the next update
    page.remove_listener("dialog", accept)

    async def start_elsewhere_then_accept(dialog: Dialog) -> None:
        questions.append(dialog.message)
        firmware.start_repository_update(ecg.address, by="admin")
        await dialog.accept()

    page.on("dialog", start_elsewhere_then_accept)
    await ecg_row.get_by_role("button", name=f"Update the firmware of {ecg.name} to 1.7.0").click()
    await expect(page.locator("#status")).to_have_text(
        f"Update of {ecg.name} to 1.7.0: an update to 1.7.0 is running on {ecg.address}: "
        "wait until it ends"
    )
    assert len(questions) == 2
    # The other update shows its progress on the page all the same.
    await expect(
        ecg_row.get_by_role("progressbar", name=f"Firmware update of {ecg.name} to 1.7.0")
    ).to_be_visible()
