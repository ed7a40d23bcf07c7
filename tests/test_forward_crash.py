"""A forwarding process SIGKILLed mid-flush and restarted: every Bundle arrives, once (dedup)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from gateway.forward.backoff import Backoff, fast_policies
from gateway.forward.settings import MqttSettings
from gateway.forward.signing import KeyStore, Signer
from gateway.hospital.receiver import BundleReceiver, DirectorySink, MqttReceiver, SeenBundles
from gateway.store import Store, store_path
from tests import fixtures_mqtt
from tests.fixtures_mqtt import DEVICE, GATEWAY_WHO, record, transaction_bundle
from tests.mosquitto import Mosquitto

broker = fixtures_mqtt.broker

TOTAL = 3000
KILL_AFTER = 300
GATEWAY_ID = "gw-crash"
TIMEOUT_S = 60.0


class Counter:
    """Records messages on a topic filter from a plain threaded client."""

    def __init__(self, port: int, topic: str) -> None:
        self.payloads: list[bytes] = []
        self._changed = threading.Condition()
        subscribed = threading.Event()
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
        )
        client.on_message = self._message
        client.on_subscribe = lambda *args: subscribed.set()
        client.on_connect = lambda c, *args: c.subscribe(topic, qos=0)
        client.connect("127.0.0.1", port)
        client.loop_start()
        assert subscribed.wait(TIMEOUT_S)
        self.client = client

    @property
    def count(self) -> int:
        return len(self.payloads)

    def _message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._changed:
            self.payloads.append(bytes(message.payload))
            self._changed.notify_all()

    def wait_until(self, predicate: Callable[[list[bytes]], bool]) -> bool:
        """Block until ``predicate(payloads)`` holds (or the timeout); for asyncio.to_thread."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.payloads), TIMEOUT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def prepare(data_dir: Path) -> None:
    """A gateway data directory with TOTAL signed Bundles waiting in the outbox."""
    signer = Signer(KeyStore(data_dir).load_or_create(), GATEWAY_WHO)
    with Store(store_path(data_dir), signer=signer, uplinks=["mqtt"]) as store:
        with store.group(durable=True):
            for i in range(TOTAL):
                store.add_observations(DEVICE, [record(f"o{i:05d}")], transaction_bundle)
        assert store.outbox_stats().pending == TOTAL


def start_forwarder(data_dir: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.forward.pump_main",
                "--data-dir",
                str(data_dir),
                "--gateway-id",
                GATEWAY_ID,
                "--mqtt",
                url,
                "--fast-retry",
            ],
            stdout=out,
            stderr=out,
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


async def test_sigkill_mid_flush_loses_nothing(tmp_path: Path, broker: Mosquitto) -> None:
    data_dir = tmp_path / "gateway"
    await asyncio.to_thread(prepare, data_dir)
    keys = KeyStore(data_dir).public_keys()
    settings = MqttSettings(url=broker.url, client_id="hospital")
    counter = await asyncio.to_thread(Counter, broker.port, f"bedside/{GATEWAY_ID}/observations")
    status = await asyncio.to_thread(Counter, broker.port, f"bedside/{GATEWAY_ID}/status")
    seen = SeenBundles(tmp_path / "seen.sqlite3")
    await seen.open()
    receiver = BundleReceiver(keys, seen, [DirectorySink(tmp_path / "out")])
    mqtt = MqttReceiver(settings, receiver, backoff=Backoff(fast_policies()))
    receiving = asyncio.create_task(mqtt.run())
    log = tmp_path / "forwarder.log"
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await mqtt.subscribed.wait()
            first = start_forwarder(data_dir, broker.url, log)
            reached = await asyncio.to_thread(counter.wait_until, lambda p: len(p) >= KILL_AFTER)
            assert reached, log.read_text()
            first.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(first.wait) == -signal.SIGKILL

            with Store(store_path(data_dir)) as store:  # hot WAL of a killed writer: recovers
                stats = store.outbox_stats()
            # Mid-flush: the broker had forwarded KILL_AFTER Bundles, yet not all were recorded
            # as delivered (how many PUBACKs reached the store before the kill is up to timing,
            # possibly none on a loaded machine).
            assert stats.pending > 0, "the kill came after the flush had finished"
            assert stats.pending + stats.delivered == TOTAL
            # The broker publishes the last will once the dead client's socket closes.
            assert await asyncio.to_thread(
                status.wait_until, lambda p: p == [b"online", b"offline"]
            )

            second = start_forwarder(data_dir, broker.url, log)
            while receiver.stats.accepted < TOTAL:
                mqtt.progress.clear()
                await mqtt.progress.wait()
            second.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(second.wait) == 0, log.read_text()
    finally:
        for process in ("first", "second"):
            running = locals().get(process)
            if isinstance(running, subprocess.Popen) and running.poll() is None:
                running.kill()
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)
        await seen.close()
        counter.close()
        status.close()

    with Store(store_path(data_dir)) as store:
        assert store.outbox_stats().as_dict() == {
            "pending": 0,
            "delivered": TOTAL,
            "dead": 0,
            "quota_alarm": False,
        }
    assert len(list((tmp_path / "out").glob("*.json"))) == TOTAL
    assert receiver.stats.accepted == TOTAL
    assert receiver.stats.rejected == {}
    # Resent after the restart, some arrived twice; the receiver dropped those.
    assert counter.count >= TOTAL
    assert receiver.stats.duplicates == counter.count - TOTAL
    # online, will, online, and the orderly stop of the second process
    assert status.payloads == [b"online", b"offline", b"online", b"offline"]
