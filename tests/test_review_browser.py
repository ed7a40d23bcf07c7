"""The clinician's page in a real browser (Debian's Chromium through Playwright): list the drafts,
edit one, order a proposal and approve it with the key file (signed in the browser with WebCrypto
Ed25519), download the PDF; reject another with a reason; a technician is refused the page."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser

from gateway.fhir.review import proposals, report_entry, signing_payload, verification_jws
from gateway.forward.signing import verify_detached
from gateway.review.keys import generate, read_private, write_private
from gateway.users import UserDirectory
from gateway.users.demo import ensure_demo_users
from tests import test_page_browser
from tests.harness import Running, running_gateway
from tests.review_env import draft_bundle
from tests.test_page_browser import CHROMIUM, TIMEOUT_MS

browser = test_page_browser.browser  # the same Chromium fixture

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it)"
)


async def test_the_clinician_edits_approves_with_the_key_file_and_rejects(
    browser: Browser, tmp_path: Path
) -> None:
    directory = UserDirectory(tmp_path)
    accounts = ensure_demo_users(directory, tmp_path)
    key = generate()
    key_file = tmp_path / "clinician.jwk"
    write_private(key_file, key)
    directory.add_key(accounts["clinician"]["username"], key.public_jwk)
    directory.close()
    async with running_gateway(
        tmp_path, ["thermo"], seed=3, http={"enabled": True, "port": 0},
        assistant={"enabled": False}, patient={"reference": "Patient/p-42"},
    ) as run:  # fmt: skip
        await _review_in_the_browser(browser, run, accounts, key_file, key.kid)


async def _review_in_the_browser(
    browser: Browser,
    run: Running,
    accounts: dict[str, dict[str, str]],
    key_file: Path,
    kid: str,
) -> None:
    reviews = run.gateway.reviews
    assert reviews is not None
    await reviews.add_draft("c1", draft_bundle("c1"))
    await reviews.add_draft("c2", draft_bundle("c2"))
    base = f"http://127.0.0.1:{run.gateway.http_port}"
    # The page's CSP forbids eval; Playwright's waits evaluate strings, so the test lifts it.
    context = await browser.new_context(viewport={"width": 1280, "height": 1000}, bypass_csp=True)
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    clinician = accounts["clinician"]
    await page.goto(f"{base}/login")
    await page.fill("#username", clinician["username"])
    await page.fill("#password", clinician["password"])
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/review")  # a clinician's home is the review page
    await page.wait_for_function("document.querySelectorAll('#drafts tbody tr').length === 2")

    await page.click("#drafts tbody tr[data-id='c1'] button")
    await page.wait_for_selector("#draft:not([hidden])")
    assert (await page.input_value("#conclusion")).startswith("Heart rate 72 /min")
    assert "not reviewed" in (await page.text_content("#ai-label") or "")
    assert "39.5 in conclusion" in (await page.text_content("#flags") or "")
    notes = await page.eval_on_selector_all(
        ".proposal", "boxes => boxes.map(b => b.querySelector('span').textContent)"
    )
    assert notes == [
        "found in formulary.md § Analgesics",
        "unverified: 'ibuprofen' is not in the retrieved formulary",
    ]

    await page.fill("#conclusion", "Heart rate 72 /min, SpO2 97 %: reviewed, no concern.")
    await page.check(".proposal[data-id='c1-1'] .med-accept")
    await page.set_input_files("#key", str(key_file))
    await page.click("#approve button[type=submit]")
    await page.wait_for_selector("#pdf")
    assert "the report is final" in (await page.text_content("#result") or "")
    pdf = await page.request.get(f"{base}/api/drafts/c1/pdf")
    assert pdf.ok
    assert (await pdf.body()).startswith(b"%PDF-")

    # the list ("to review") now holds the other draft only
    await page.wait_for_function("document.querySelectorAll('#drafts tbody tr').length === 1")
    await page.click("#drafts tbody tr[data-id='c2'] button")
    await page.wait_for_function(
        "document.querySelector('#draft-title').textContent.includes('c2')"
    )
    await page.fill("#reason", "readings of another patient")
    await page.click("#reject button[type=submit]")
    await page.wait_for_function(
        "document.querySelector('#result').textContent.includes('cancelled')"
    )

    # What the browser did, as the gateway recorded it
    approved = await reviews.get("c1")
    assert [v["action"] for v in approved["versions"]] == ["drafted", "edited", "approved"]
    final = approved["bundle"]
    report = report_entry(final)["resource"]
    assert (report["status"], report["conclusion"]) == (
        "final",
        "Heart rate 72 /min, SpO2 97 %: reviewed, no concern.",
    )
    assert proposals(final)["c1-1"]["status"] == "active"
    assert proposals(final)["c1-2"]["status"] == "cancelled"
    keys = {kid: read_private(key_file).public_key}
    assert verify_detached(verification_jws(final), signing_payload(final), keys) == kid
    assert (await reviews.get("c2"))["status"] == "cancelled"
    await context.close()

    technician = accounts["technician"]
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{base}/login?next=/review")
    await page.fill("#username", technician["username"])
    await page.fill("#password", technician["password"])
    async with page.expect_response(f"{base}/review") as answer:
        await page.click("button[type=submit]")
    assert (await answer.value).status == 403
    await context.close()
