"""The hospital-side receiver: verify, deduplicate (persisted), deliver; rejections counted."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.fhir import jsonio
from gateway.forward.backoff import Backoff, fast_policies
from gateway.forward.errors import TransientDeliveryError
from gateway.forward.https import FhirClient
from gateway.forward.settings import HttpsSettings, MqttSettings
from gateway.forward.signing import SigningKey
from gateway.hospital.receiver import (
    BundleReceiver,
    DirectorySink,
    FhirSink,
    MqttReceiver,
    Outcome,
    SeenBundles,
    receive,
)
from tests import fixtures_mqtt
from tests.fixtures_mqtt import (
    FhirServer,
    Reply,
    TlsFiles,
    heart_rate,
    make_signer,
    transaction_bundle,
    until,
)
from tests.mosquitto import Mosquitto

broker = fixtures_mqtt.broker
tls_files = fixtures_mqtt.tls_files
fhir_server = fixtures_mqtt.fhir_server

KEY = SigningKey.generate()
KEYS = {KEY.kid: KEY.public_key}
TOPIC = "bedside/gw-1/observations"
TIMEOUT_S = 30.0


def signed(identifier: str, key: SigningKey = KEY) -> tuple[str, bytes]:
    bundle = transaction_bundle([heart_rate(identifier, "72.0")])
    bundle["id"] = f"b-{identifier}"
    return bundle["id"], jsonio.dumps(make_signer(key).sign_bundle(bundle)).encode()


def tampered(identifier: str) -> tuple[str, bytes]:
    bundle_id, payload = signed(identifier)
    bundle = jsonio.loads(payload)
    bundle["entry"][0]["resource"]["valueQuantity"]["value"] = 180
    return bundle_id, jsonio.dumps(bundle).encode()


def unsigned(identifier: str) -> tuple[str, bytes]:
    bundle = transaction_bundle([heart_rate(identifier, "72.0")])
    bundle["id"] = f"b-{identifier}"
    return bundle["id"], jsonio.dumps(bundle).encode()


@contextlib.asynccontextmanager
async def seen_at(path: Path) -> AsyncIterator[SeenBundles]:
    seen = SeenBundles(path)
    await seen.open()
    try:
        yield seen
    finally:
        await seen.close()


async def test_accepts_once_and_remembers_across_restarts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    bundle_id, payload = signed("a")
    async with seen_at(tmp_path / "seen.sqlite3") as seen:
        receiver = BundleReceiver(KEYS, seen, [DirectorySink(out)])
        assert await receiver.handle(TOPIC, payload, bundle_id) is Outcome.ACCEPTED
        assert await receiver.handle(TOPIC, payload, bundle_id) is Outcome.DUPLICATE
    assert (out / f"{bundle_id}.json").read_bytes() == payload  # exactly as received
    async with seen_at(tmp_path / "seen.sqlite3") as seen:  # a restarted receiver
        receiver = BundleReceiver(KEYS, seen, [DirectorySink(out)])
        assert await receiver.handle(TOPIC, payload, None) is Outcome.DUPLICATE
        assert receiver.stats.as_dict() == {
            "accepted": 0,
            "duplicates": 1,
            "rejected": 0,
            "rejected_by_reason": {},
        }
    assert seen.count() == 1


def _with(payload: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    bundle = jsonio.loads(payload)
    change(bundle)
    return jsonio.dumps(bundle).encode()


async def test_rejections_are_counted_by_reason(tmp_path: Path) -> None:
    other = SigningKey.generate()
    good_id, good = signed("g")
    cases: list[tuple[bytes, str | None, str]] = [
        (b"not json", None, "not-json"),
        (b'{"resourceType":"Observation"}', None, "not-a-bundle"),
        (b"[1]", None, "not-a-bundle"),
        (_with(good, lambda b: b.update(id="../../etc/passwd")), None, "bad-id"),
        (good, "b-other", "id-mismatch"),
        (unsigned("u")[1], "b-u", "unsigned"),
        (tampered("t")[1], "b-t", "bad-signature"),
        (signed("k", other)[1], "b-k", "unknown-key"),
        (b'{"resourceType":"Bundle","id":"x","a":1,"a":2}', None, "not-json"),
    ]
    async with seen_at(tmp_path / "seen.sqlite3") as seen:
        receiver = BundleReceiver(KEYS, seen, [DirectorySink(tmp_path / "out")])
        for payload, property_id, _ in cases:
            assert await receiver.handle(TOPIC, payload, property_id) is Outcome.REJECTED
        assert await receiver.handle(TOPIC, good, good_id) is Outcome.ACCEPTED
    assert receiver.stats.as_dict() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": len(cases),
        "rejected_by_reason": {
            "bad-id": 1,
            "bad-signature": 1,
            "id-mismatch": 1,
            "not-a-bundle": 2,
            "not-json": 2,
            "unknown-key": 1,
            "unsigned": 1,
        },
    }
    assert [p.name for p in (tmp_path / "out").iterdir()] == [f"{good_id}.json"]


async def test_forwarding_to_a_fhir_server(
    tmp_path: Path, fhir_server: FhirServer, tls_files: TlsFiles
) -> None:
    fhir_server.script = [Reply(503), Reply(422)]
    settings = HttpsSettings(base_url=fhir_server.url, ca_file=tls_files.ca_cert)
    async with seen_at(tmp_path / "seen.sqlite3") as seen, FhirClient(settings) as client:
        receiver = BundleReceiver(KEYS, seen, [FhirSink(client)])
        first_id, first = signed("a")
        with pytest.raises(TransientDeliveryError):  # 503: the MQTT loop retries later
            await receiver.handle(TOPIC, first, first_id)
        assert await receiver.handle(TOPIC, first, first_id) is Outcome.REJECTED  # 422
        assert receiver.stats.rejected == {"refused-by-sink": 1}
        assert not await seen.contains(first_id)  # not remembered: a later copy may succeed
        assert await receiver.handle(TOPIC, first, first_id) is Outcome.ACCEPTED
    assert fhir_server.accepted == [first]


async def test_unwritable_directory_is_a_transient_failure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sink = DirectorySink(out)
    out.rmdir()
    out.write_text("not a directory any more")
    with pytest.raises(TransientDeliveryError, match="cannot write"):
        await sink.deliver_many([("b-a", b"{}")])


# -- over MQTT ---------------------------------------------------------------------------------


class Publisher:
    """A plain threaded paho client publishing QoS 1 like a gateway would."""

    def __init__(self, port: int) -> None:
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, bundle_id: str | None) -> None:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ContentType = "application/fhir+json"
        if bundle_id is not None:
            properties.UserProperty = [("bundle-id", bundle_id)]
        info = self.client.publish(topic, payload, qos=1, properties=properties)
        info.wait_for_publish(TIMEOUT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(broker: Mosquitto) -> Iterator[Publisher]:
    made = Publisher(broker.port)
    yield made
    made.close()


async def test_mqtt_receiver_verifies_and_drops_duplicates(
    tmp_path: Path, broker: Mosquitto, publisher: Publisher
) -> None:
    settings = MqttSettings(url=broker.url)
    async with asyncio.timeout(TIMEOUT_S), seen_at(tmp_path / "seen.sqlite3") as seen:
        receiver = BundleReceiver(KEYS, seen, [DirectorySink(tmp_path / "out")])
        mqtt = MqttReceiver(settings, receiver, backoff=Backoff(fast_policies()))
        task = asyncio.create_task(mqtt.run())
        await mqtt.subscribed.wait()
        messages = [signed("a"), unsigned("u"), tampered("t"), signed("a"), signed("b")]
        for bundle_id, payload in messages:
            await asyncio.to_thread(publisher.publish, TOPIC, payload, bundle_id)
        await asyncio.to_thread(publisher.publish, "bedside/gw-2/drafts", signed("c")[1], None)
        await until(mqtt.progress, lambda: mqtt.handled == 6)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert receiver.stats.as_dict() == {
        "accepted": 3,
        "duplicates": 1,
        "rejected": 2,
        "rejected_by_reason": {"bad-signature": 1, "unsigned": 1},
    }
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "b-a.json",
        "b-b.json",
        "b-c.json",
    ]


class Hanging:
    """A sink that never finishes: the receiver 'crashes' while handling."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def deliver_many(self, items: object) -> dict[str, str]:
        self.entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_unhandled_message_is_redelivered_after_a_receiver_crash(
    tmp_path: Path, broker: Mosquitto, publisher: Publisher
) -> None:
    settings = MqttSettings(url=broker.url, client_id="hospital-1")
    bundle_id, payload = signed("a")
    async with asyncio.timeout(TIMEOUT_S):
        async with seen_at(tmp_path / "seen.sqlite3") as seen:
            hanging = Hanging()
            first = MqttReceiver(settings, BundleReceiver(KEYS, seen, [hanging]))
            task = asyncio.create_task(first.run())
            await first.subscribed.wait()
            await asyncio.to_thread(publisher.publish, TOPIC, payload, bundle_id)
            await hanging.entered.wait()
            task.cancel()  # gone before acknowledging
            await asyncio.gather(task, return_exceptions=True)
        async with seen_at(tmp_path / "seen.sqlite3") as seen:
            receiver = BundleReceiver(KEYS, seen, [DirectorySink(tmp_path / "out")])
            second = MqttReceiver(settings, receiver)  # same client id: same session
            task = asyncio.create_task(second.run())
            await until(second.progress, lambda: receiver.stats.accepted == 1)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert (tmp_path / "out" / f"{bundle_id}.json").read_bytes() == payload


async def test_receive_until_max_bundles(
    tmp_path: Path, broker: Mosquitto, publisher: Publisher
) -> None:
    settings = MqttSettings(url=broker.url, client_id="hospital-2")
    async with asyncio.timeout(TIMEOUT_S):
        # First contact creates the persistent session; then messages queue for it.
        async with seen_at(tmp_path / "seen.sqlite3") as seen:
            first = MqttReceiver(settings, BundleReceiver(KEYS, seen, []))
            task = asyncio.create_task(first.run())
            await first.subscribed.wait()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for name in ("a", "b", "c"):
            bundle_id, payload = signed(name)
            await asyncio.to_thread(publisher.publish, TOPIC, payload, bundle_id)
        stats = await receive(settings, KEYS, out_dir=tmp_path / "out", max_bundles=3)
    assert stats.as_dict()["accepted"] == 3
    assert json.loads((tmp_path / "out" / "b-a.json").read_text())["id"] == "b-a"


# -- hostile input -------------------------------------------------------------------------------

FUZZ_ID, FUZZ_PAYLOAD = signed("fuzz")


def _covered(payload: bytes) -> object:
    """What the signature covers: the Bundle without ``signature``."""
    bundle = jsonio.loads(payload)
    bundle.pop("signature", None)
    return bundle


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda i, b: FUZZ_PAYLOAD[:i] + bytes([b]) + FUZZ_PAYLOAD[i + 1 :],
            st.integers(0, len(FUZZ_PAYLOAD) - 1),
            st.integers(0, 255),
        ),
        st.builds(lambda n: FUZZ_PAYLOAD[:n], st.integers(0, len(FUZZ_PAYLOAD))),
    ),
    property_id=st.one_of(st.none(), st.just(FUZZ_ID), st.text(max_size=10)),
)
def test_hostile_payloads_are_rejected_never_raised(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, property_id: str | None
) -> None:
    directory = tmp_path_factory.mktemp("fuzz")

    async def run() -> Outcome:
        async with seen_at(directory / "seen.sqlite3") as seen:
            receiver = BundleReceiver(KEYS, seen, [DirectorySink(directory / "out")])
            return await receiver.handle(TOPIC, data, property_id)

    outcome = asyncio.run(run())
    assert outcome in (Outcome.ACCEPTED, Outcome.REJECTED)
    if outcome is Outcome.ACCEPTED:
        # Only a change outside the signed content (Signature.when/who text) can pass.
        assert _covered(data) == _covered(FUZZ_PAYLOAD)
