"""The recent log and the diagnostics bundle: everything a support engineer needs, and no patient
data or secret in it."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import aiohttp

from gateway.config import load_settings
from gateway.logbuffer import RecentLog, redact
from gateway.web.diagnostics import REDACTED, redacted_settings
from tests.harness import running_gateway, wait_until

TOKEN = "diagnostics-service-token-0123456789"
MQTT_PASSWORD = "broker-password-that-must-not-leak"
PATIENT = "Patient/sensitive-7"


def test_patient_references_are_taken_out_of_log_lines() -> None:
    assert redact(f"claimed 3 readings for {PATIENT}") == "claimed 3 readings for [patient]"
    assert redact("id urn:oid:2.16.840.1.113883.2.4.6.3|123456782 set") == "id [patient] set"
    log = RecentLog(keep=2)
    logger = logging.getLogger("test.recent")
    logger.addHandler(log)
    logger.setLevel(logging.INFO)
    try:
        for n in range(3):
            logger.info("line %d for %s", n, PATIENT)
    finally:
        logger.removeHandler(log)
    assert len(log.tail(10)) == 2
    assert log.tail(1)[0].endswith("line 2 for [patient]")


def test_the_settings_lose_their_secrets_and_the_patient(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        mqtt={"url": "mqtts://broker:8883", "username": "gw", "password": MQTT_PASSWORD},
        http={"token": TOKEN},
        patient={"reference": PATIENT},
    )
    shown = redacted_settings(settings)
    text = json.dumps(shown)
    assert MQTT_PASSWORD not in text
    assert TOKEN not in text
    assert "sensitive-7" not in text
    assert shown["mqtt"]["password"] == REDACTED
    assert shown["mqtt"]["username"] == "gw"
    assert shown["mqtt"]["url"] == "mqtts://broker:8883"


async def test_the_bundle_from_a_running_gateway(tmp_path: Path) -> None:
    http = {"enabled": True, "port": 0, "token": TOKEN}
    async with running_gateway(
        tmp_path,
        ["thermo"],
        seed=51,
        http=http,
        assistant={"enabled": False},
        patient={"reference": PATIENT},
        mqtt={"url": "mqtt://127.0.0.1:9", "username": "gw", "password": MQTT_PASSWORD},
    ) as run:
        await wait_until(lambda: run.status("thermo").observations > 0, 30, "thermo data")
        logging.getLogger("gateway.test").warning("a line for %s", PATIENT)
        base = f"http://127.0.0.1:{run.gateway.http_port}"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(base, headers=headers) as session:
            async with session.get("/api/logs?lines=50") as answer:
                lines = (await answer.json())["lines"]
            async with session.get("/api/diagnostics") as answer:
                assert answer.status == 200
                assert answer.content_type == "application/zip"
                assert "attachment" in answer.headers["Content-Disposition"]
                body = await answer.read()
    assert any("a line for [patient]" in line for line in lines)
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert set(archive.namelist()) == {
        "configuration.json",
        "checks.json",
        "versions.json",
        "gateway.json",
        "sensors.json",
        "metrics.txt",
        "log.txt",
    }
    everything = b"".join(archive.read(name) for name in archive.namelist())
    for secret in (MQTT_PASSWORD, TOKEN, "sensitive-7"):
        assert secret.encode() not in everything, secret
    checks = json.loads(archive.read("checks.json"))
    assert checks[0]["name"] == "radio"
    assert checks[0]["level"] == "ok"
    assert json.loads(archive.read("sensors.json"))[0]["kind"] == "thermo"
    assert json.loads(archive.read("versions.json"))["libraries"]["bumble"]
    assert b"bedside_sensor_up" in archive.read("metrics.txt")
    assert json.loads(archive.read("gateway.json"))["patient"]["reference"] == REDACTED
