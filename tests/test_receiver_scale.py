"""The hospital side past one process: receivers sharing the load through an MQTT v5 shared
subscription (one SIGKILLed mid-stream and started again: every Bundle reaches the sink exactly
once), and a key directory that changes under running receivers (a gateway provisioned, a key
revoked). Real mosquitto, the installed `bedside receive`."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt import publish
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.forward.errors import KeyFormatError
from gateway.forward.signing import SigningKey
from gateway.hospital.keyring import REVOKED_DIR, KeyDirectory
from gateway.hospital.receiver import BundleReceiver, DirectorySink, Outcome, Rejection
from tests import fixtures_mqtt
from tests.harness import wait_until
from tests.mosquitto import Mosquitto
from tests.processes import BEDSIDE
from tests.test_receiver import seen_at, signed

broker = fixtures_mqtt.broker
BUNDLES = 300
BATCH = 20


def _jwk(key: SigningKey) -> str:
    return json.dumps(key.public_jwk)


def _publish(broker: Mosquitto, messages: list[tuple[str, bytes]], gateway: str = "gw-1") -> None:
    batch = []
    for bundle_id, payload in messages:
        properties = Properties(PacketTypes.PUBLISH)
        properties.UserProperty = ("bundle-id", bundle_id)
        batch.append(
            {
                "topic": f"bedside/{gateway}/observations",
                "payload": payload,
                "qos": 1,
                "properties": properties,
            }
        )
    publish.multiple(
        batch, hostname="127.0.0.1", port=broker.port, protocol=MQTTProtocolVersion.MQTTv5
    )


def _receiver(broker: Mosquitto, name: str, out: Path, keys: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            str(BEDSIDE), "receive", "--mqtt", broker.url, "--group", "hospital",
            "--client-id", name, "--out", str(out), "--state", str(out / "seen.sqlite3"),
            "--keys", str(keys),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


async def _subscribed(process: subprocess.Popen[str]) -> None:
    """Until the receiver says the broker confirmed its subscriptions."""
    assert process.stderr is not None
    async with asyncio.timeout(30):
        while "subscribed to $share/hospital/" not in (
            line := await asyncio.to_thread(process.stderr.readline)
        ):
            assert line, "the receiver ended before subscribing"


def _files(out: Path) -> set[str]:
    return {p.stem for p in out.glob("*.json")} if out.is_dir() else set()


async def _stop(process: subprocess.Popen[str]) -> dict[str, Any]:
    process.send_signal(signal.SIGTERM)
    stdout, stderr = await asyncio.to_thread(process.communicate, None, 30)
    assert process.returncode == 0, stderr
    return dict(json.loads(stdout.strip().splitlines()[-1]))


async def test_three_receivers_share_the_load_and_a_killed_one_loses_nothing(
    tmp_path: Path, broker: Mosquitto
) -> None:
    key = SigningKey.generate()
    keys, out = tmp_path / "keys", tmp_path / "received"
    keys.mkdir()
    (keys / "gw-1.jwk").write_text(_jwk(key))
    names = ("r1", "r2", "r3")
    receivers = {name: _receiver(broker, name, out, keys) for name in names}
    try:
        for process in receivers.values():
            await _subscribed(process)
        warm = [signed(f"warm-{i}", key) for i in range(30)]
        await asyncio.to_thread(_publish, broker, warm)
        await wait_until(lambda: len(_files(out)) == len(warm), 30, "the warm-up Bundles")

        messages = [signed(f"load-{i}", key) for i in range(BUNDLES)]
        for start in range(0, BUNDLES, BATCH):
            await asyncio.to_thread(_publish, broker, messages[start : start + BATCH])
            if start == BUNDLES // 3:  # mid-stream: one receiver dies without a goodbye
                receivers["r2"].kill()
                await asyncio.to_thread(receivers["r2"].communicate, None, 10)
            if start == 2 * BUNDLES // 3:  # … and its supervisor starts it again
                receivers["r2"] = _receiver(broker, "r2", out, keys)
                await _subscribed(receivers["r2"])
        wanted = {bundle_id for bundle_id, _ in warm + messages}
        await wait_until(lambda: _files(out) == wanted, 60, "every Bundle at the sink")
    finally:
        stats = {}
        for name, process in receivers.items():
            if process.poll() is None:
                stats[name] = await _stop(process)
    # exactly once: one file per Bundle id, nothing else; each member took a share
    assert _files(out) == wanted
    assert all(s["accepted"] > 0 for s in stats.values()), stats
    assert sum(s["rejected"] for s in stats.values()) == 0

    # stopped in order, the members left the group: a new member alone gets everything after
    last = _receiver(broker, "r4", out, keys)
    try:
        await _subscribed(last)
        later = [signed(f"later-{i}", key) for i in range(40)]
        await asyncio.to_thread(_publish, broker, later)
        await wait_until(
            lambda: _files(out) == wanted | {i for i, _ in later}, 30, "the later Bundles"
        )
    finally:
        assert (await _stop(last))["accepted"] == len(later)


async def test_the_key_directory_is_reloaded_and_revoked_keys_refused(tmp_path: Path) -> None:
    first, second = SigningKey.generate(), SigningKey.generate()
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "first.jwk").write_text(_jwk(first))
    now = [0.0]
    directory = KeyDirectory(keys, clock=lambda: now[0], interval_s=1.0)
    async with seen_at(tmp_path / "seen.sqlite3") as seen:
        receiver = BundleReceiver(directory, seen, [DirectorySink(tmp_path / "out")])
        topic = "bedside/gw-2/observations"

        bundle_id, payload = signed("from-second", second)
        assert await receiver.handle(topic, payload, bundle_id) is Outcome.REJECTED
        (keys / "second.jwk").write_text(_jwk(second))  # a new gateway provisioned
        now[0] += 1.5
        bundle_id, payload = signed("from-second-again", second)
        assert await receiver.handle(topic, payload, bundle_id) is Outcome.ACCEPTED

        (keys / REVOKED_DIR).mkdir()
        shutil.move(keys / "first.jwk", keys / REVOKED_DIR / "first.jwk")  # taken out of service
        now[0] += 1.5
        bundle_id, payload = signed("from-first", first)
        assert await receiver.handle(topic, payload, bundle_id) is Outcome.REJECTED

        (keys / "broken.jwk").write_text('{"kty": "OKP"')  # half-copied: previous keys stay
        now[0] += 1.5
        bundle_id, payload = signed("still-second", second)
        assert await receiver.handle(topic, payload, bundle_id) is Outcome.ACCEPTED
    assert dict(receiver.stats.rejected) == {"unknown-key": 1, Rejection.REVOKED_KEY: 1}
    assert directory.reloads == 2


def test_a_group_name_must_be_one_topic_level(tmp_path: Path) -> None:
    (tmp_path / "k.jwk").write_text(_jwk(SigningKey.generate()))
    result = subprocess.run(
        [
            str(BEDSIDE), "receive", "--mqtt", "mqtt://127.0.0.1:9", "--group", "a/b",
            "--out", str(tmp_path / "out"), "--keys", str(tmp_path / "k.jwk"),
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "one MQTT topic level" in result.stderr


def test_no_keys_at_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFormatError, match="no such key file or directory"):
        KeyDirectory(tmp_path / "nothing-here")
