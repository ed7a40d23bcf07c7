"""Radio trouble is not a crash: no BlueZ, nothing on the HCI port, a simulator that goes away.

The gateway keeps running with the radio reported down, retries with backoff, and picks the
sensors up when a radio appears, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import Gateway
from gateway.backoff import BackoffPolicy
from gateway.ble import manager as manager_module
from gateway.ble.radio import RadioLostError, RadioState, RadioStatus, radio_trouble
from gateway.config import load_settings
from tests.harness import wait_until
from tests.processes import bedside_sim, free_port

STREAMING = "streaming"
KINDS = ("spo2", "thermo")
DEVICES = ",".join(KINDS)
WAIT_S = 30.0
TOKEN = "radio-test-token-0123456789abcdef"


@pytest.fixture(autouse=True)
def fast_radio_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manager_module, "RADIO_BACKOFF", BackoffPolicy(base_s=0.1, cap_s=0.5))


@contextlib.asynccontextmanager
async def gateway_on(tmp_path: Path, transport: str) -> AsyncIterator[Gateway]:
    settings = load_settings(
        data_dir=tmp_path,
        ble={"transport": transport, "auto_accept": True},
        http={"port": 0, "token": TOKEN},
        assistant={"enabled": False},
    )
    gateway = Gateway(settings)
    task = asyncio.create_task(gateway.run(), name="gateway")
    try:
        async with asyncio.timeout(WAIT_S):
            await gateway.ready.wait()
        yield gateway
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def healthz(gateway: Gateway) -> dict[str, Any]:
    url = f"http://127.0.0.1:{gateway.http_port}/healthz"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


def streaming(gateway: Gateway) -> bool:
    assert gateway.manager is not None
    states = [str(s.state) for s in gateway.manager.statuses()]
    return len(states) == len(KINDS) and all(state == STREAMING for state in states)


async def test_nothing_on_the_hci_port_then_a_simulator_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    transport = f"hci:tcp-client:127.0.0.1:{port}"
    caplog.set_level(logging.DEBUG, logger="gateway.ble.manager")
    async with gateway_on(tmp_path, transport) as gateway:
        manager = gateway.manager
        assert manager is not None
        await wait_until(lambda: manager.radio.failures >= 3, WAIT_S, "three failed attempts")
        status = manager.radio.as_json()
        assert status["state"] == "down"
        assert status["transport"] == transport
        assert f"no Bluetooth radio on {transport!r}" in status["reason"]
        assert "bedside-sim" in status["reason"]
        assert "Traceback" not in status["reason"]
        warnings = [
            r
            for r in caplog.records
            if r.levelno >= logging.WARNING and r.name == "gateway.ble.manager"
        ]
        assert len(warnings) == 1, "one line per outage, not one per retry"
        assert "retrying in" in warnings[0].getMessage()
        assert gateway.status_line().startswith("radio down")
        health = await healthz(gateway)  # the API is served meanwhile and says why
        assert health["status"] == "ok"
        assert health["radio"]["state"] == "down"
        assert health["radio"]["reason"].startswith(f"no Bluetooth radio on {transport!r}")
        summary = await gateway.summary()
        assert summary["radio"]["state"] == "down"
        assert summary["outbox"]["pending"] == 0

        with bedside_sim(port, DEVICES, stop=signal.SIGKILL):
            await wait_until(lambda: streaming(gateway), WAIT_S, "sensors on the new radio")
            assert manager.radio.state is RadioState.UP
            assert (await healthz(gateway))["radio"] == {"state": "up", "transport": transport}

        # The simulator was killed: the radio went away, the sessions show why.
        await wait_until(
            lambda: manager.radio.state is RadioState.DOWN, WAIT_S, "the radio reported down"
        )
        assert "went away" in (manager.radio.reason or "")
        await wait_until(
            lambda: all(s.reason == "radio down" for s in manager.statuses()),
            WAIT_S,
            "sessions marked radio down",
        )
        sessions = {s.address: s for s in manager.statuses()}
        before = {s.address: s.notifications for s in manager.statuses()}

        with bedside_sim(port, DEVICES, stop=signal.SIGKILL):
            await wait_until(lambda: streaming(gateway), WAIT_S, "sensors back")
            # The same sessions resumed (their counters carry over), none were duplicated.
            assert {s.address: s for s in manager.statuses()} == sessions
            await wait_until(
                lambda: all(s.notifications > before[s.address] for s in manager.statuses()),
                WAIT_S,
                "data on the new radio",
            )


@pytest.mark.skipif(
    Path("/run/dbus/system_bus_socket").exists(),
    reason="this machine has a system D-Bus, so BlueZ may well be there",
)
async def test_no_bluez_is_a_radio_down_not_a_crash(tmp_path: Path) -> None:
    async with gateway_on(tmp_path, "bluez") as gateway:
        manager = gateway.manager
        assert manager is not None
        await wait_until(lambda: manager.radio.failures >= 1, WAIT_S, "a failed attempt")
        assert manager.radio.state is RadioState.DOWN
        reason = manager.radio.reason or ""
        assert reason.startswith("no Bluetooth radio on 'bluez'")
        assert "bluetoothd" in reason
        assert "ble.transport" in reason


def test_radio_trouble_sentences() -> None:
    lost = radio_trouble("hci:usb:0", RadioLostError("the transport closed"))
    assert lost.startswith("the Bluetooth radio on 'hci:usb:0' went away; ")
    absent = radio_trouble("bluez", FileNotFoundError(2, "No such file or directory"))
    assert absent.startswith("no Bluetooth radio on 'bluez' ([Errno 2] No such file")
    assert "set ble.transport to 'hci:usb:0'" in absent


def test_radio_status_json() -> None:
    status = RadioStatus("hci:usb:0")
    assert status.as_json() == {"state": "starting", "transport": "hci:usb:0"}
    status.down("no radio", 1.234)
    status.down("no radio", 2.0)
    assert status.as_json() == {
        "state": "down",
        "transport": "hci:usb:0",
        "reason": "no radio",
        "failures": 2,
        "retry_in_s": 2.0,
    }
    status.up()
    assert status.as_json() == {"state": "up", "transport": "hci:usb:0"}
    assert status.failures == 0
