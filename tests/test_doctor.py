"""``bedside doctor``: each check against real parts where they run here (the simulator over
HCI/TCP, TLS and plain servers on loopback with a certificate made for the test) and with canned
answers of timedatectl/systemctl where they do not."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.config import load_settings
from gateway.doctor import (
    Level,
    check_clock,
    check_data_dir,
    check_endpoint,
    check_firmware,
    check_key,
    check_radio,
    check_timezone,
    check_watchdog,
)
from gateway.web.tls import make_self_signed
from tests.processes import bedside_sim, free_port

MIB = 2**20


async def test_the_radio_check_opens_the_transport_and_scans() -> None:
    port = free_port()
    with bedside_sim(port, "thermo"):
        settings = load_settings(ble={"transport": f"hci:tcp-client:127.0.0.1:{port}"})
        check = await check_radio(settings)
    assert check.level is Level.OK, check.line()
    assert "scanning" in check.detail
    gone = load_settings(ble={"transport": f"hci:tcp-client:127.0.0.1:{free_port()}"})
    failed = await check_radio(gone)
    assert failed.level is Level.FAIL
    assert "no Bluetooth radio" in failed.detail


@pytest.mark.parametrize(
    ("answer", "level"), [("yes\n", Level.OK), ("no\n", Level.FAIL), (None, Level.WARN)]
)
def test_the_clock_check_reads_timedatectl(answer: str | None, level: Level) -> None:
    asked: list[list[str]] = []

    def run(argv: list[str]) -> str | None:
        asked.append(argv)
        return answer

    assert check_clock(run).level is level
    assert asked == [["timedatectl", "show", "-p", "NTPSynchronized", "--value"]]


@pytest.mark.parametrize(
    ("answer", "level"),
    [("30s\n", Level.OK), ("0\n", Level.FAIL), ("infinity", Level.FAIL), (None, Level.WARN)],
)
def test_the_watchdog_check(
    answer: str | None, level: Level, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert check_watchdog(lambda _argv: answer).level is level


def test_the_watchdog_of_the_running_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert check_watchdog(lambda _argv: None).level is Level.OK


def test_the_data_directory_check(tmp_path: Path) -> None:
    assert check_data_dir(tmp_path, 1 * MIB).level is Level.OK
    assert check_data_dir(tmp_path, 2**60).level is Level.FAIL  # more than any disk
    blocker = tmp_path / "file"
    blocker.write_text("")
    failed = check_data_dir(blocker / "data", MIB)
    assert failed.level is Level.FAIL
    assert "not writable" in failed.detail


def test_the_key_check(tmp_path: Path) -> None:
    assert check_key(tmp_path).level is Level.WARN  # made at first start
    key = tmp_path / "keys" / "signing-key.pem"
    key.parent.mkdir()
    key.write_text("k")
    key.chmod(0o644)
    loose = check_key(tmp_path)
    assert loose.level is Level.FAIL
    assert loose.fix == f"chmod 600 {key}"
    key.chmod(0o600)
    assert check_key(tmp_path).level is Level.OK


def test_the_time_zone_check() -> None:
    assert check_timezone("Europe/Berlin").level is Level.OK
    assert check_timezone("Mars/Olympus").level is Level.FAIL


def certificate(tmp_path: Path, days: int) -> tuple[Path, Path]:
    made = make_self_signed(tmp_path / f"cert{days}", "localhost", days=days)
    return made.cert_file, made.key_file


async def tls_server(cert: Path, key: Path) -> AsyncIterator[int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    async with server:
        yield server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(("days", "level"), [(365, Level.OK), (10, Level.WARN)])
async def test_a_tls_endpoint_is_checked_with_its_certificate_expiry(
    tmp_path: Path, days: int, level: Level
) -> None:
    cert, key = certificate(tmp_path, days)
    async for port in tls_server(cert, key):
        check = await check_endpoint("FHIR server", f"https://localhost:{port}/r4", cert)
        assert check.level is level, check.line()
        assert f"({days - 1} days)" in check.detail or f"({days} days)" in check.detail
        refused = await check_endpoint("FHIR server", f"https://localhost:{port}/r4", None)
        assert refused.level is Level.FAIL  # a certificate no CA here vouches for
        assert "certificate refused" in refused.detail


async def test_a_plain_endpoint_is_a_warning_and_a_closed_one_a_failure() -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        plain = await check_endpoint("MQTT broker", f"mqtt://127.0.0.1:{port}")
    assert plain.level is Level.WARN
    assert "without TLS" in plain.detail
    closed = await check_endpoint("MQTT broker", f"mqtt://127.0.0.1:{free_port()}")
    assert closed.level is Level.FAIL
    assert "cannot be reached" in closed.detail


def test_the_command_prints_one_line_per_check_and_fails_on_a_failure(tmp_path: Path) -> None:
    port = free_port()  # nothing listens: the radio check fails
    env = {"BEDSIDE_BLE__TRANSPORT": f"hci:tcp-client:127.0.0.1:{port}"}
    result = CliRunner().invoke(app, ["doctor", "--data-dir", str(tmp_path), "--json"], env=env)
    assert result.exit_code == 1
    checks = json.loads(result.output)
    names = [c["name"] for c in checks]
    assert names[:4] == ["radio", "clock", "data directory", "signing key"]
    assert {"model", "time zone", "watchdog"} <= set(names)
    assert checks[0]["level"] == "fail"
    assert all(c["level"] in ("ok", "warn", "fail") for c in checks)


def test_the_firmware_repository_check(tmp_path: Path) -> None:
    from gateway.demo import demo_firmware

    assert check_firmware(None) is None
    good = check_firmware(demo_firmware(tmp_path / "firmware"))
    assert good is not None
    assert good.level is Level.OK
    assert good.detail.endswith(
        ": 5 image(s) for BS-BP300, BS-ECG100, BS-GL500, BS-OX200, BS-TH400"
    )
    (tmp_path / "firmware" / "ecg-1.5.0.bin").write_bytes(b"changed")
    bad = check_firmware(tmp_path / "firmware")
    assert bad is not None
    assert bad.level is Level.FAIL
    assert "ecg-1.5.0.bin has sha256" in bad.detail
