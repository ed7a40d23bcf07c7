"""The whole chain: simulator → gateway → store/outbox → mosquitto → `bedside receive`.

The receiver runs as the hospital would run it (the installed console script in its own process)
and accepts only Bundles that verify against the gateway's public key.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.fhir.read import observation_codes
from tests import fixtures_mqtt
from tests.harness import running_gateway, wait_until
from tests.mosquitto import Mosquitto

broker = fixtures_mqtt.broker
BIN = Path(sys.executable).parent
BEDSIDE = shutil.which("bedside", path=str(BIN)) or "bedside"


def _bedside(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BEDSIDE, *args], capture_output=True, text=True, timeout=60, check=False)


def _received(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(out.glob("*.json"))]


def _codes(bundles: list[dict[str, Any]]) -> set[str]:
    codes: set[str] = set()
    for bundle in bundles:
        for entry in bundle.get("entry", []):
            resource = entry["resource"]
            if resource["resourceType"] == "Observation":
                codes.update(observation_codes(resource))
    return codes


async def test_sensor_data_reaches_the_receiver_signed(tmp_path: Path, broker: Mosquitto) -> None:
    data_dir, out = tmp_path / "gateway", tmp_path / "received"
    shown = _bedside("keys", "show", "--data-dir", str(data_dir))  # creates the gateway key
    assert shown.returncode == 0, shown.stderr
    jwk = tmp_path / "gateway.jwk"
    jwk.write_text(shown.stdout.strip().splitlines()[-1], encoding="utf-8")

    receiver = subprocess.Popen(  # noqa: ASYNC220 - the receiver runs beside the test
        [BEDSIDE, "receive", "--mqtt", broker.url, "--out", str(out), "--keys", str(jwk)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        assert receiver.stderr is not None
        subscribed = await asyncio.wait_for(asyncio.to_thread(receiver.stderr.readline), 60)
        # else it could miss the Device Bundles, published once, before the first readings
        assert "subscribed to" in subscribed, subscribed
        async with running_gateway(
            data_dir,
            ["ecg", "spo2", "thermo"],
            mqtt={"url": broker.url},
            patient={"reference": "Patient/e2e"},
        ) as run:
            want = {"8867-4", "59408-5", "8310-5", "131330"}

            await wait_until(
                lambda: out.is_dir() and want <= _codes(_received(out)),
                40,
                "Observations of every sensor at the receiver",
            )
            store = run.gateway.store
            assert store is not None
            stats = await store.outbox_stats()
            assert stats["delivered"] > 0
            assert stats["dead"] == 0
    finally:
        receiver.terminate()
        _, stderr = await asyncio.to_thread(receiver.communicate, None, 20)
    assert receiver.returncode == 0, stderr

    bundles = _received(out)
    assert all(b["resourceType"] == "Bundle" and "signature" in b for b in bundles)
    device_bundles = [
        b for b in bundles if all(e["resource"]["resourceType"] == "Device" for e in b["entry"])
    ]
    assert device_bundles, "the sensors' Device Bundles were published too"
    observations = [
        e["resource"]
        for b in bundles
        for e in b["entry"]
        if e["resource"]["resourceType"] == "Observation"
    ]
    # PHD IG PhdBaseObservation.subject 1..1: the configured patient on every one
    assert observations
    assert all(o["subject"] == {"reference": "Patient/e2e"} for o in observations)
    one = next(out.glob("*.json"))
    verified = _bedside("verify", str(one), "--key", str(jwk))
    assert verified.returncode == 0, verified.stderr
