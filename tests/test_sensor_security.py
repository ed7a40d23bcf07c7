"""Bonding and encryption over Bumble with simulated sensors that demand a secure link, and the
run-time sensor list (accept, forget, leave the live view), through the manager, the API and
``bedside sensors``."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import aiohttp
from typer.testing import CliRunner

from firmware_sim import Simulator
from gateway.ble.session import SessionState
from gateway.ble.settings import BONDS_FILE
from gateway.cli import app
from gateway.web.local import API_URL_FILE
from tests.harness import Running, gateway_on, running_gateway, wait_until

STREAMING = str(SessionState.STREAMING)
PASSKEY = 246810
TOKEN = "sensor-api-test-token-0123456789"


def thermo(run: Running) -> str:
    return run.sim.sensors["thermo"].address


async def test_an_encrypted_sensor_is_paired_once_and_reconnects_encrypted_after_a_restart(
    tmp_path: Path,
) -> None:
    """Just Works pairing on the first connection; the bond (0600) outlives the gateway; the next
    gateway encrypts with it without pairing, and the sensor sends its data again."""
    overrides = {"security.encrypted": ["thermo"], "thermo.interval_s": 0.5}
    async with Simulator(["thermo"], seed=3, overrides=overrides) as sim:
        sensor = sim.sensors["thermo"]
        async with gateway_on(sim, tmp_path) as first:
            await wait_until(lambda: first.status("thermo").observations > 0, 30, "thermo data")
            assert first.status("thermo").paired == 1
            assert sensor.stats.pairings == 1
            assert first.manager.sensors()[0]["bonded"] is True
        bonds = tmp_path / BONDS_FILE
        assert stat.S_IMODE(bonds.stat().st_mode) == 0o600
        saved = json.loads(bonds.read_text())
        assert [name.split("/")[0] for name in saved["bonds"]] == [sensor.address]
        identity = saved["identity"]

        async with gateway_on(sim, tmp_path) as second:
            await wait_until(lambda: second.status("thermo").observations > 0, 30, "data again")
            assert second.status("thermo").paired == 0  # no pairing: the stored keys
            assert sensor.stats.pairings == 1
            assert sensor.stats.encrypted_links == 2
        assert json.loads(bonds.read_text())["identity"] == identity  # the same gateway


async def test_a_sensor_with_a_passkey_waits_for_it_and_a_wrong_one_fails_the_pairing(
    tmp_path: Path,
) -> None:
    overrides = {
        "security.authenticated": ["thermo"],
        "security.passkey": PASSKEY,
        "thermo.interval_s": 0.5,
    }
    async with running_gateway(tmp_path, ["thermo"], overrides=overrides, seed=4) as run:
        address = thermo(run)
        passkeys = run.manager.passkeys
        await wait_until(lambda: address in passkeys.waiting(), 30, "a passkey request")
        row = run.manager.sensors()[0]
        assert row["state"] == "pairing"
        assert row["waiting_for_passkey"] is True
        assert passkeys.give(address, "000001") is True  # wrong: the sensor shows 246810
        await wait_until(lambda: address in passkeys.waiting(), 30, "a second passkey request")
        assert run.sim.sensors["thermo"].stats.pairings == 0
        assert passkeys.give(address, f"{PASSKEY:06d}") is True
        await wait_until(lambda: run.status("thermo").observations > 0, 30, "authenticated data")
        assert run.sim.sensors["thermo"].stats.pairings == 1


async def test_sensors_are_listed_accepted_and_forgotten_through_the_api_and_the_cli(
    tmp_path: Path,
) -> None:
    """Without auto-accept nothing connects; `bedside sensors accept` makes the sensor connect at
    once and survives in sensors.json; forget ends the session, deletes the bond and keeps the
    readings; the CLI talks to the running gateway found through its data directory."""
    overrides = {"security.encrypted": ["thermo"], "thermo.interval_s": 0.5}
    http = {"enabled": True, "port": 0}  # the token: DATA_DIR/api-token, made at start
    async with running_gateway(
        tmp_path,
        ["thermo"],
        overrides=overrides,
        seed=5,
        ble={"auto_accept": False},
        http=http,
        assistant={"enabled": False},
    ) as run:
        address = thermo(run)
        await wait_until(run.manager.sensors, 30, "the sensor advertising")
        assert run.manager.sensors()[0]["state"] == "not accepted"
        assert (tmp_path / API_URL_FILE).exists()
        cli = ["--data-dir", str(tmp_path)]

        listed = await asyncio.to_thread(invoke, ["sensors", "list", "--json", *cli])
        assert json.loads(listed)[0]["accepted"] is None
        said = await asyncio.to_thread(invoke, ["sensors", "accept", address.lower(), *cli])
        assert said.strip() == f"{address}: accepted"
        await wait_until(lambda: run.status("thermo").observations > 0, 30, "accepted sensor data")
        assert json.loads((tmp_path / "sensors.json").read_text())["accepted"] == [address]
        assert run.manager.sensors()[0]["bonded"] is True

        said = await asyncio.to_thread(invoke, ["sensors", "forget", address, *cli])
        assert said.strip() == f"{address}: forgotten, bond deleted"
        assert run.manager.statuses() == []
        assert run.manager.sensors()[0]["state"] == "not accepted"
        store = run.gateway.store
        assert store is not None
        assert sum((await store.observation_counts()).values()) > 0  # the readings stay

        url = (tmp_path / API_URL_FILE).read_text().strip()
        token = (tmp_path / "api-token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(url, headers=headers) as http_client:
            async with http_client.post("/api/sensors/not-an-address/accept") as bad:
                assert bad.status == 400
                assert (await bad.json())["error"]["code"] == "invalid_address"
            async with http_client.post(
                f"/api/sensors/{address}/passkey", json={"passkey": "12345x"}
            ) as bad_key:
                assert bad_key.status == 400
                assert (await bad_key.json())["error"]["code"] == "invalid_passkey"


async def test_a_configured_sensor_cannot_be_forgotten_at_run_time(tmp_path: Path) -> None:
    http = {"enabled": True, "port": 0, "token": TOKEN}
    async with Simulator(["thermo"], seed=6) as sim:
        address = sim.sensors["thermo"].address
        ble = {"auto_accept": False, "allow": [address]}
        async with gateway_on(
            sim, tmp_path, ble=ble, http=http, assistant={"enabled": False}
        ) as run:
            args = ["sensors", "forget", address, "--data-dir", str(tmp_path)]
            result = await asyncio.to_thread(
                CliRunner().invoke, app, args, env={"BEDSIDE_HTTP__TOKEN": TOKEN}
            )
            assert result.exit_code == 2
            assert "in the configuration file (ble.allow)" in result.output
            assert run.manager.registry.allows(address)


async def test_a_lost_sensor_leaves_the_live_view_after_forget_lost_after(tmp_path: Path) -> None:
    async with running_gateway(
        tmp_path,
        ["thermo"],
        seed=7,
        overrides={"thermo.interval_s": 0.5},
        ble={"forget_lost_after": 1.0},
    ) as run:
        await wait_until(lambda: run.status("thermo").observations > 0, 30, "thermo data")
        await run.sim.sensors["thermo"].stop()  # gone: no link, no advertising
        await wait_until(lambda: run.manager.statuses() == [], 30, "the session leaving")
        store = run.gateway.store
        assert store is not None
        assert sum((await store.observation_counts()).values()) > 0


def invoke(args: list[str]) -> str:
    """``bedside ARGS`` in this process (a thread of the test: the API runs on its loop)."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output
