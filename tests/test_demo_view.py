"""The demo's live view: every kind the demo runs has its latest value on screen."""

from __future__ import annotations

import asyncio
import datetime as dt
from types import SimpleNamespace
from typing import Any, cast

from rich.console import Console

from gateway.ble.pairing import PasskeyBroker
from gateway.ble.session import SessionState, SessionStatus
from gateway.demo import DEMO_KINDS, VITALS, live_view
from gateway.fhir.timeline import ClockAnchor


def test_the_live_view_shows_a_vital_of_every_demo_kind() -> None:
    gateway = SimpleNamespace(
        identity=SimpleNamespace(gateway_id="gw-test"),
        manager=SimpleNamespace(statuses=list, passkeys=PasskeyBroker()),
    )
    latest = {code: f"value-{code}" for code, _ in VITALS}
    console = Console(record=True, width=200)
    console.print(live_view(cast(Any, gateway), latest, 12.0))
    text = console.export_text()
    for code, label in VITALS:
        assert label in text
        assert f"value-{code}" in text
    labels = " ".join(label for _, label in VITALS).lower()
    words = {
        "ecg": "ecg",
        "spo2": "spo2",
        "bp": "blood pressure",
        "thermo": "temperature",
        "glucose": "glucose",
    }
    assert set(DEMO_KINDS) == set(words)
    for kind in DEMO_KINDS:
        assert words[kind] in labels, kind


async def test_the_live_view_shows_the_clock_the_undated_readings_and_a_passkey_to_give() -> None:
    """A sensor 90 s slow with 3 undated readings, waiting for its passkey: the row says so and
    names the command that gives it."""
    status = SessionStatus("F0:12:34:56:78:9A", "Bedside Glucose 789A", "glucose")
    status.state = SessionState.PAIRING
    status.undated = 3
    now = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
    status.clock_anchor = ClockAnchor(dt.datetime(2026, 12, 2, 11, 58, 30), now)  # noqa: DTZ001
    passkeys = PasskeyBroker(wait_s=30)
    asking = asyncio.create_task(passkeys.passkey(status.address))
    for _ in range(10):
        if passkeys.waiting():
            break
        await asyncio.sleep(0)
    gateway = SimpleNamespace(
        identity=SimpleNamespace(gateway_id="gw-test"),
        manager=SimpleNamespace(statuses=lambda: [status], passkeys=passkeys),
    )
    console = Console(record=True, width=300)
    console.print(live_view(cast(Any, gateway), {}, 1.0))
    text = console.export_text()
    assert f"bedside sensors pair {status.address} PASSKEY" in text
    assert "+90.0 s" in text
    row = next(line for line in text.splitlines() if status.address in line)
    assert " 3 " in row
    passkeys.give(status.address, 1)
    assert await asking == 1
