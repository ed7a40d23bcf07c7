"""MQTT uplink and receiver against a real mosquitto: plain, TLS, mTLS, outages, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.fhir import jsonio
from gateway.forward.backoff import Backoff, fast_policies
from gateway.forward.errors import ErrorClass
from gateway.forward.mqtt import MqttUplink, bundle_properties
from gateway.forward.settings import MqttSettings
from gateway.forward.signing import SigningKey
from gateway.hospital.receiver import BundleReceiver, DirectorySink, MqttReceiver, SeenBundles
from gateway.store import AsyncStore, OutboxState, TopicKind
from tests import fixtures_mqtt
from tests.fixtures_mqtt import (
    Gateway,
    TlsFiles,
    forwarding_gateway,
    make_signer,
    until,
)
from tests.mosquitto import Mosquitto

broker = fixtures_mqtt.broker
tls_broker = fixtures_mqtt.tls_broker
mtls_broker = fixtures_mqtt.mtls_broker
tls_files = fixtures_mqtt.tls_files

GATEWAY_ID = "gw-1"
TIMEOUT_S = 30.0


@contextlib.asynccontextmanager
async def gateway(
    directory: Path, settings: MqttSettings, key: SigningKey
) -> AsyncIterator[Gateway[MqttUplink]]:
    uplink = MqttUplink(settings, GATEWAY_ID, backoff=Backoff(fast_policies()))
    async with forwarding_gateway(
        directory, uplink, make_signer(key), rescan_interval_s=0.2
    ) as running:
        yield running


@contextlib.asynccontextmanager
async def receiving(
    directory: Path, settings: MqttSettings, key: SigningKey
) -> AsyncIterator[MqttReceiver]:
    seen = SeenBundles(directory / "seen.sqlite3")
    await seen.open()
    receiver = BundleReceiver({key.kid: key.public_key}, seen, [DirectorySink(directory / "out")])
    mqtt = MqttReceiver(settings, receiver, backoff=Backoff(fast_policies()))
    task = asyncio.create_task(mqtt.run(), name="test-receiver")
    try:
        await mqtt.subscribed.wait()
        yield mqtt
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await seen.close()


def accepted(mqtt: MqttReceiver) -> int:
    return mqtt.receiver.stats.accepted


class RawSubscriber:
    """A plain threaded paho client recording (topic, payload, properties, retain)."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes, Any, bool]] = queue.Queue()
        self._subscribed = threading.Event()
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
        )
        client.on_message = lambda c, u, m: self.messages.put(
            (m.topic, bytes(m.payload), m.properties, bool(m.retain))
        )
        client.on_subscribe = lambda *args: self._subscribed.set()
        client.on_connect = lambda c, *args: c.subscribe(topic, qos=1)
        client.connect("127.0.0.1", port)
        client.loop_start()
        self.client = client

    async def ready(self) -> None:
        assert await asyncio.to_thread(self._subscribed.wait, TIMEOUT_S)

    async def next(self) -> tuple[str, bytes, Any, bool]:
        return await asyncio.to_thread(self.messages.get, True, TIMEOUT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def raw_subscriber(broker: Mosquitto) -> Iterator[Callable[[str], RawSubscriber]]:
    made: list[RawSubscriber] = []

    def make(topic: str) -> RawSubscriber:
        made.append(RawSubscriber(broker.port, topic))
        return made[-1]

    yield make
    for subscriber in made:
        subscriber.close()


# -- plain ------------------------------------------------------------------------------------


async def test_bundles_reach_the_receiver_with_mqtt5_properties(
    tmp_path: Path, broker: Mosquitto, raw_subscriber: Callable[[str], RawSubscriber]
) -> None:
    key = SigningKey.generate()
    settings = MqttSettings(url=broker.url)
    raw = raw_subscriber("bedside/#")
    await raw.ready()
    async with asyncio.timeout(TIMEOUT_S), receiving(tmp_path / "rx", settings, key) as rx:
        async with gateway(tmp_path, settings, key) as gw:
            await gw.add("a", "b")
            device_bundle = {"resourceType": "Bundle", "type": "transaction", "entry": []}
            device_id = await gw.store.enqueue_bundle(TopicKind.DEVICES, device_bundle)
            await until(rx.progress, lambda: accepted(rx) == 3)
            await gw.recorded(3)
            assert await gw.store.outbox_stats() == {
                "pending": 0,
                "delivered": 3,
                "dead": 0,
                "quota_alarm": False,
            }
            items = await gw.store.outbox_items(state=OutboxState.DELIVERED)

        # Every accepted Bundle is on disk exactly as the gateway made it.
        for item in items:
            assert (tmp_path / "rx" / "out" / f"{item.id}.json").read_text() == item.payload
        assert {item.kind for item in items} == {TopicKind.OBSERVATIONS, TopicKind.DEVICES}
        assert device_id in {item.id for item in items}
        assert rx.receiver.stats.as_dict() == {
            "accepted": 3,
            "duplicates": 0,
            "rejected": 0,
            "rejected_by_reason": {},
        }

    seen: dict[str, tuple[bytes, Any, bool]] = {}
    while len([t for t in seen if t.startswith("data:")]) < 3:
        name, payload, properties, retain = await raw.next()
        if name.endswith("/status"):
            seen[f"status:{payload.decode()}"] = (payload, properties, retain)
            continue
        bundle = jsonio.loads(payload)
        assert (
            name
            == f"bedside/{GATEWAY_ID}/{'devices' if bundle['id'] == device_id else 'observations'}"
        )
        assert properties.ContentType == "application/fhir+json"
        assert properties.UserProperty == [("bundle-id", bundle["id"])]
        seen[f"data:{bundle['id']}"] = (payload, properties, retain)
    assert "status:online" in seen
    # Orderly stop: a retained "offline" replaces "online".
    while "status:offline" not in seen:
        name, payload, properties, retain = await raw.next()
        seen[f"status:{payload.decode()}"] = (payload, properties, retain)
    late = RawSubscriber(broker.port, f"bedside/{GATEWAY_ID}/status")
    try:
        name, payload, _, retain = await late.next()
        assert (name, payload, retain) == (f"bedside/{GATEWAY_ID}/status", b"offline", True)
    finally:
        late.close()


async def test_broker_down_at_start_and_back_later(tmp_path: Path, broker: Mosquitto) -> None:
    key = SigningKey.generate()
    settings = MqttSettings(url=broker.url)
    async with asyncio.timeout(TIMEOUT_S), receiving(tmp_path / "rx", settings, key) as rx:
        await asyncio.to_thread(broker.stop)  # persistent receiver session saved
        async with gateway(tmp_path, settings, key) as gw:
            await gw.add(*(f"o{i}" for i in range(20)))
            await until(gw.uplink.changed, lambda: gw.uplink.failed_attempts >= 2)
            assert gw.uplink.last_error is not None
            assert "cannot connect" in gw.uplink.last_error
            assert (await gw.store.outbox_stats())["pending"] == 20
            await asyncio.to_thread(broker.start)
            await until(rx.progress, lambda: accepted(rx) == 20)
            await gw.recorded(20)
        assert sorted(p.stem for p in (tmp_path / "rx" / "out").glob("*.json")) == sorted(
            i.id for i in await _delivered_items(tmp_path)
        )


async def _delivered_items(directory: Path) -> list[Any]:
    store = await AsyncStore.open(directory / "gateway.sqlite3")
    try:
        return await store.outbox_items(state=OutboxState.DELIVERED, limit=10_000)
    finally:
        await store.close()


async def test_broker_restarted_mid_flush(tmp_path: Path, broker: Mosquitto) -> None:
    key = SigningKey.generate()
    settings = MqttSettings(url=broker.url)
    total = 400
    async with (
        asyncio.timeout(TIMEOUT_S),
        receiving(tmp_path / "rx", settings, key) as rx,
        gateway(tmp_path, settings, key) as gw,
    ):

        async def produce() -> None:
            for i in range(total):
                await gw.add(f"o{i}")

        producer = asyncio.create_task(produce())
        await gw.recorded(100)
        await asyncio.to_thread(broker.restart)
        await producer
        await until(rx.progress, lambda: accepted(rx) == total)
        await gw.recorded(total)
        assert gw.uplink.generation >= 2  # it did reconnect
        assert (await gw.store.outbox_stats())["delivered"] == total
    assert len(list((tmp_path / "rx" / "out").glob("*.json"))) == total


# -- TLS ---------------------------------------------------------------------------------------


async def test_tls_delivery(tmp_path: Path, tls_broker: Mosquitto, tls_files: TlsFiles) -> None:
    key = SigningKey.generate()
    settings = MqttSettings(url=tls_broker.url, ca_file=tls_files.ca_cert)
    assert settings.tls
    async with (
        asyncio.timeout(TIMEOUT_S),
        receiving(tmp_path / "rx", settings, key) as rx,
        gateway(tmp_path, settings, key) as gw,
    ):
        await gw.add("a", "b", "c")
        await until(rx.progress, lambda: accepted(rx) == 3)


async def test_tls_with_an_untrusted_server_certificate_keeps_retrying(
    tmp_path: Path, tls_broker: Mosquitto
) -> None:
    settings = MqttSettings(url=tls_broker.url)  # system CAs do not know our test CA
    async with asyncio.timeout(TIMEOUT_S), gateway(tmp_path, settings, SigningKey.generate()) as gw:
        await gw.add("a")
        await until(gw.uplink.changed, lambda: gw.uplink.failed_attempts >= 2)
        assert gw.uplink.last_error is not None
        assert "certificate verify failed" in gw.uplink.last_error
        assert gw.uplink._backoff.failures(ErrorClass.TLS) >= 2
        assert (await gw.store.outbox_stats())["pending"] == 1


async def test_mtls_delivery_and_refusal(
    tmp_path: Path, mtls_broker: Mosquitto, tls_files: TlsFiles
) -> None:
    key = SigningKey.generate()
    good = MqttSettings(
        url=mtls_broker.url,
        ca_file=tls_files.ca_cert,
        cert_file=tls_files.client_cert,
        key_file=tls_files.client_key,
    )
    stranger = good.model_copy(
        update={"cert_file": tls_files.stranger_cert, "key_file": tls_files.stranger_key}
    )
    async with asyncio.timeout(TIMEOUT_S):
        # A client certificate from an unknown CA gets no session: nothing leaves the outbox.
        async with gateway(tmp_path / "stranger", stranger, key) as gw:
            await gw.add("x")
            await until(gw.uplink.changed, lambda: gw.uplink.failed_attempts >= 2)
            assert not gw.uplink.connected
            assert (await gw.store.outbox_stats())["pending"] == 1
        no_cert = good.model_copy(update={"cert_file": None, "key_file": None})
        async with gateway(tmp_path / "nocert", no_cert, key) as gw:
            await gw.add("y")
            await until(gw.uplink.changed, lambda: gw.uplink.failed_attempts >= 2)
            assert gw.uplink.generation == 0
        async with receiving(tmp_path / "rx", good, key) as rx, gateway(tmp_path, good, key) as gw:
            await gw.add("a", "b")
            await until(rx.progress, lambda: accepted(rx) == 2)


@pytest.mark.parametrize("bundle_id", ["a", "5f0c7d84-1c3c-4c1b-9b8e-0d3f0d5a6e01", "x" * 200])
def test_packed_publish_properties_equal_pahos_own(bundle_id: str) -> None:
    # MQTT 5 §3.3.2.3: what paho's Properties.pack() writes for the same three properties
    # (a 200-character id makes the property length a two-byte Variable Byte Integer).
    reference = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    reference.PayloadFormatIndicator = 1
    reference.ContentType = "application/fhir+json"
    reference.UserProperty = [("bundle-id", bundle_id)]
    assert bundle_properties(bundle_id).pack() == reference.pack()
