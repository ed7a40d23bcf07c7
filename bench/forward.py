"""Forwarding benchmark: signed observation Bundles through the durable outbox to mosquitto.

Four paths over the same 5,000 Bundles (transaction Bundles of one PHD Observation, ~2 kB each),
against a private mosquitto on 127.0.0.1 with no subscriber, best of ``ROUNDS`` rounds:

- ``outbox``: the durable outbox path for Bundles already signed. ``add_observations`` stores the
  Observation and its (pre-signed) Bundle in one transaction with ``synchronous=FULL``; the pump
  publishes at QoS 1 and the item is marked delivered once its PUBACK is in and committed. Timed
  from the first enqueue until the last item is recorded delivered, 64 enqueues in flight
  (several sensors at once), in-flight window 100.
- ``pipeline``: the same, but every Bundle is built, canonicalised (RFC 8785) and signed (Ed25519
  JWS) inside the transaction, as the gateway does live.
- ``flush_only``: the pump draining an outbox filled beforehand.
- ``bare_paho_qos1``: a bare paho client (its own network thread) publishing the very payload texts
  of the pipeline, QoS 1, same properties and window, until the last PUBACK.

Goal (issue 4): the durable outbox path ≥ 0.5 × bare and ≥ 1,000 Bundles/s; the pipeline with
signing is reported against the 1,000/s floor too. Prints ONE JSON object.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import platform
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.forward import fhirjson
from gateway.forward.backoff import Backoff, fast_policies
from gateway.forward.mosquitto import Mosquitto
from gateway.forward.mqtt import MqttUplink
from gateway.forward.pump import OutboxPump
from gateway.forward.settings import MqttSettings
from gateway.forward.signing import Signer, SigningKey
from gateway.store import AsyncStore, ObservationRecord, OutboxState
from gateway.store.store import BundleFactory

BUNDLES = 5000
WINDOW = 100
ENQUEUE_CONCURRENCY = 64
ROUNDS = 3
GOAL_RATIO = 0.5
GOAL_RATE = 1000.0
GATEWAY_ID = "bench"
DEVICE = "C0:FF:EE:00:00:01"
PHD_SYSTEM = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdBaseObservation"
START = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
WHO = {"type": "Device", "reference": "urn:uuid:7d5b7a3e-8a6f-5f5e-9c1e-3f1f2b0b6c01"}


def observation(identifier: str, moment: dt.datetime, value: Decimal) -> dict[str, Any]:
    """A PHD heart-rate Observation of the size gateway.fhir makes (profile, codes, device)."""
    return {
        "resourceType": "Observation",
        "meta": {
            "profile": ["http://hl7.org/fhir/uv/phd/StructureDefinition/PhdNumericObservation"]
        },
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice",
                "valueReference": {"reference": WHO["reference"]},
            }
        ],
        "identifier": [{"system": PHD_SYSTEM, "value": identifier}],
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            },
            {
                "coding": [
                    {
                        "system": "http://hl7.org/fhir/uv/phd/CodeSystem/PhdObservationCategories",
                        "code": "phd",
                    }
                ]
            },
        ],
        "code": {
            "coding": [
                {
                    "system": "urn:iso:std:iso:11073:10101",
                    "code": "147842",
                    "display": "MDC_ECG_HEART_RATE",
                },
                {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"},
            ]
        },
        "subject": {"reference": "Patient/example"},
        "effectiveDateTime": moment.isoformat().replace("+00:00", "Z"),
        "valueQuantity": {
            "value": value,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
        "device": {"reference": "urn:uuid:2b0f7e8e-1d8b-5b8e-8f1c-6a1b3c2d4e5f"},
    }


def transaction_bundle(observations: list[dict[str, Any]]) -> dict[str, Any]:
    entries = []
    for resource in observations:
        value = resource["identifier"][0]["value"]
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, value)}",
                "resource": resource,
                "request": {
                    "method": "POST",
                    "url": "Observation",
                    "ifNoneExist": f"identifier={PHD_SYSTEM}|{value}",
                },
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def records(prefix: str, count: int) -> list[ObservationRecord]:
    out = []
    for i in range(count):
        moment = START + dt.timedelta(seconds=i)
        identifier = f"C0FFEE0000000001--147842-{prefix}{i:06d}"
        resource = observation(identifier, moment, Decimal(60 + i % 40) + Decimal("0.0"))
        out.append(ObservationRecord(identifier, "8867-4", DEVICE, moment, resource))
    return out


class Presigned:
    """A BundleSigner for Bundles that carry their signature already (the ``outbox`` path)."""

    def sign_bundle(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        return dict(bundle)


class Durable:
    """A store + MQTT uplink + pump in a fresh directory."""

    def __init__(self, directory: Path, url: str, signer: Signer | Presigned) -> None:
        self.directory = directory
        self.url = url
        self.signer = signer

    async def __aenter__(self) -> Durable:
        self.store = await AsyncStore.open(
            self.directory / "gateway.sqlite3", signer=self.signer, uplinks=["mqtt"]
        )
        return self

    async def start_pump(self) -> None:
        settings = MqttSettings(url=self.url, inflight_window=WINDOW)
        self.uplink = MqttUplink(settings, GATEWAY_ID, backoff=Backoff(fast_policies()))
        self.pump = OutboxPump(self.store, self.uplink, batch_size=500)
        self.tasks = [
            asyncio.create_task(self.uplink.run(), name="bench-uplink"),
            asyncio.create_task(self.pump.run(), name="bench-pump"),
        ]
        await self.uplink.wait_connected()

    async def delivered(self, count: int) -> None:
        while self.pump.stats.recorded < count:
            self.pump.progress.clear()
            await self.pump.progress.wait()

    async def __aexit__(self, *exc: object) -> None:
        for task in getattr(self, "tasks", []):
            task.cancel()
        await asyncio.gather(*getattr(self, "tasks", []), return_exceptions=True)
        await self.store.close()


async def enqueue(
    store: AsyncStore, batch: list[ObservationRecord], factory: BundleFactory = transaction_bundle
) -> None:
    limit = asyncio.Semaphore(ENQUEUE_CONCURRENCY)

    async def one(record: ObservationRecord) -> None:
        async with limit:
            await store.add_observations(DEVICE, [record], factory)

    await asyncio.gather(*(one(record) for record in batch))


async def durable_round(
    directory: Path,
    url: str,
    signer: Signer | Presigned,
    batch: list[ObservationRecord],
    factory: BundleFactory = transaction_bundle,
) -> dict[str, Any]:
    async with Durable(directory, url, signer) as durable:
        await durable.start_pump()
        start = time.perf_counter()
        await enqueue(durable.store, batch, factory)
        await durable.delivered(BUNDLES)
        done = time.perf_counter()
        items = await durable.store.outbox_items(state=OutboxState.DELIVERED, limit=BUNDLES)
        group_commits = durable.store.group_commits
    return {
        "seconds": done - start,
        "payloads": [(item.id, item.payload) for item in items],
        "group_commits": group_commits,
    }


async def flush_round(directory: Path, url: str, signer: Signer, prefix: str) -> float:
    async with Durable(directory, url, signer) as durable:
        await enqueue(durable.store, records(prefix, BUNDLES))
        start = time.perf_counter()
        await durable.start_pump()
        await durable.delivered(BUNDLES)
        return time.perf_counter() - start


def bare_round(port: int, payloads: list[tuple[str, str]]) -> float:
    """A bare paho QoS 1 publish loop of the same payloads; seconds until the last PUBACK."""
    done = threading.Event()
    acked = 0

    def on_publish(*args: object) -> None:
        nonlocal acked
        acked += 1
        if acked == len(payloads):
            done.set()

    connected = threading.Event()
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bare-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.max_inflight_messages_set(WINDOW)
    client.on_publish = on_publish
    client.on_connect = lambda *args: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    connected.wait(10)
    topic = f"bedside/{GATEWAY_ID}/observations"
    start = time.perf_counter()
    for bundle_id, payload in payloads:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ContentType = "application/fhir+json"
        properties.PayloadFormatIndicator = 1
        properties.UserProperty = [("bundle-id", bundle_id)]
        client.publish(topic, payload.encode(), qos=1, properties=properties)
    done.wait(120)
    seconds = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return seconds


def rate(count: int, seconds: float) -> dict[str, float]:
    return {"seconds": round(seconds, 3), "bundles_per_s": round(count / seconds, 1)}


def presigned_factory(payloads: list[tuple[str, str]]) -> BundleFactory:
    """Hands out the pipeline's signed Bundles by the identifier of their Observation."""
    by_identifier = {}
    for _, payload in payloads:
        bundle = fhirjson.loads(payload)
        by_identifier[bundle["entry"][0]["resource"]["identifier"][0]["value"]] = bundle

    def factory(observations: list[dict[str, Any]]) -> dict[str, Any]:
        bundle: dict[str, Any] = by_identifier[observations[0]["identifier"][0]["value"]]
        return bundle

    return factory


async def main() -> None:
    signer = Signer(SigningKey.generate(), WHO)
    best: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, float("inf")), seconds)

    with tempfile.TemporaryDirectory(prefix="bench-forward-") as tmp:
        root = Path(tmp)
        with Mosquitto(root / "broker") as broker:
            for n in range(ROUNDS):
                batch = records(f"r{n}-", BUNDLES)
                pipeline = await durable_round(root / f"p{n}", broker.url, signer, batch)
                keep("pipeline", pipeline["seconds"])
                payloads = pipeline["payloads"]
                keep("bare", await asyncio.to_thread(bare_round, broker.port, payloads))
                outbox = await durable_round(
                    root / f"o{n}", broker.url, Presigned(), batch, presigned_factory(payloads)
                )
                assert outbox["payloads"] == payloads  # byte for byte the same Bundles
                keep("outbox", outbox["seconds"])
                keep("flush", await flush_round(root / f"f{n}", broker.url, signer, f"f{n}-"))
                group_commits = pipeline["group_commits"]
    sizes = [len(payload.encode()) for _, payload in payloads]
    rates = {name: BUNDLES / seconds for name, seconds in best.items()}
    ratio = rates["outbox"] / rates["bare"]
    print(
        json.dumps(
            {
                "bench": "forward",
                "bundles": BUNDLES,
                "payload_bytes_avg": round(sum(sizes) / len(sizes)),
                "outbox": rate(BUNDLES, best["outbox"]),
                "pipeline_with_signing": {
                    **rate(BUNDLES, best["pipeline"]),
                    "group_commits": group_commits,
                },
                "flush_only": rate(BUNDLES, best["flush"]),
                "bare_paho_qos1": rate(BUNDLES, best["bare"]),
                "ratio": round(ratio, 2),
                "ratio_pipeline": round(rates["pipeline"] / rates["bare"], 2),
                "goal_ratio": GOAL_RATIO,
                "goal_rate": GOAL_RATE,
                "goal_met": ratio >= GOAL_RATIO and rates["outbox"] >= GOAL_RATE,
                "pipeline_rate_goal_met": rates["pipeline"] >= GOAL_RATE,
                "inflight_window": WINDOW,
                "enqueue_concurrency": ENQUEUE_CONCURRENCY,
                "rounds": ROUNDS,
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
