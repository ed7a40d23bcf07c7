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

Goal: the durable outbox path ≥ 0.5 × bare and ≥ 1,000 Bundles/s; the pipeline with signing is
reported against the 1,000/s floor too. Every wait is bounded (``STEP_TIMEOUT_S``): a run that
cannot finish still prints its JSON, with ``"goal_met": false`` and a ``"why"``. The broker and
the test data come from the tests' helpers (``tests/mosquitto.py``, ``tests/fixtures_mqtt.py``).
Prints ONE JSON object.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests/

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.fhir import jsonio
from gateway.forward.backoff import Backoff, fast_policies
from gateway.forward.mqtt import MqttUplink
from gateway.forward.pump import OutboxPump
from gateway.forward.settings import MqttSettings
from gateway.forward.signing import Signer, SigningKey
from gateway.store import AsyncStore, BundleFactory, ObservationRecord, OutboxState
from tests.fixtures_mqtt import DEVICE, EFFECTIVE, GATEWAY_WHO, heart_rate, transaction_bundle
from tests.mosquitto import BrokerError, Mosquitto

BUNDLES = 5000
WINDOW = 100
ENQUEUE_CONCURRENCY = 64
ROUNDS = 3
GOAL_RATIO = 0.5
GOAL_RATE = 1000.0
STEP_TIMEOUT_S = 120.0  # any one step (enqueue all, deliver all, connect); normal runs take ~2 s
GATEWAY_ID = "bench"


class IncompleteError(Exception):
    """A step did not finish within its bound; the message says which."""


def observation(identifier: str, moment: dt.datetime, value: Decimal) -> dict[str, Any]:
    """The tests' PHD heart rate, with what gateway.fhir adds (gateway, subject, device, displays).

    So that the Bundles have the size of the gateway's (~2 kB).
    """
    resource = heart_rate(identifier, str(value), moment)
    resource["extension"] = [
        {
            "url": "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice",
            "valueReference": {"reference": GATEWAY_WHO["reference"]},
        }
    ]
    resource["category"].append(
        {
            "coding": [
                {
                    "system": "http://hl7.org/fhir/uv/phd/CodeSystem/PhdObservationCategories",
                    "code": "phd",
                }
            ]
        }
    )
    mdc, loinc = resource["code"]["coding"]
    mdc["display"] = "MDC_ECG_HEART_RATE"
    loinc["display"] = "Heart rate"
    resource["subject"] = {"reference": "Patient/example"}
    resource["device"] = {"reference": "urn:uuid:2b0f7e8e-1d8b-5b8e-8f1c-6a1b3c2d4e5f"}
    return resource


def records(prefix: str, count: int) -> list[ObservationRecord]:
    out = []
    for i in range(count):
        moment = EFFECTIVE + dt.timedelta(seconds=i)
        identifier = f"C0FFEE0000000001--147842-{prefix}{i:06d}"
        resource = observation(identifier, moment, Decimal(60 + i % 40) + Decimal("0.0"))
        out.append(ObservationRecord(identifier, "8867-4", DEVICE, moment, resource))
    return out


async def bounded(step: str, awaitable: Any) -> Any:
    """``awaitable`` within STEP_TIMEOUT_S, else :class:`IncompleteError` naming ``step``."""
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            return await awaitable
    except TimeoutError:
        raise IncompleteError(f"{step} did not finish within {STEP_TIMEOUT_S:g} s") from None


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
        await bounded(f"connecting to {self.url}", self.uplink.wait_connected())

    async def delivered(self, count: int) -> None:
        async def all_recorded() -> None:
            while self.pump.stats.recorded < count:
                self.pump.progress.clear()
                await self.pump.progress.wait()

        try:
            await bounded("delivery", all_recorded())
        except IncompleteError as exc:
            recorded = self.pump.stats.recorded
            raise IncompleteError(f"{exc}: {recorded} of {count} delivered") from None

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

    await bounded("enqueueing", asyncio.gather(*(one(record) for record in batch)))


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
    try:
        if not connected.wait(STEP_TIMEOUT_S):
            raise IncompleteError(f"bare paho: no CONNACK within {STEP_TIMEOUT_S:g} s")
        return _bare_publish(client, payloads, done, lambda: acked)
    finally:
        client.disconnect()
        client.loop_stop()


def _bare_publish(
    client: paho.Client,
    payloads: list[tuple[str, str]],
    done: threading.Event,
    acked: Callable[[], int],
) -> float:
    topic = f"bedside/{GATEWAY_ID}/observations"
    start = time.perf_counter()
    for bundle_id, payload in payloads:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ContentType = "application/fhir+json"
        properties.PayloadFormatIndicator = 1
        properties.UserProperty = [("bundle-id", bundle_id)]
        client.publish(topic, payload.encode(), qos=1, properties=properties)
    if not done.wait(STEP_TIMEOUT_S):
        raise IncompleteError(
            f"bare paho: {acked()} of {len(payloads)} PUBACKs within {STEP_TIMEOUT_S:g} s"
        )
    return time.perf_counter() - start


def rate(count: int, seconds: float) -> dict[str, float]:
    return {"seconds": round(seconds, 3), "bundles_per_s": round(count / seconds, 1)}


def presigned_factory(payloads: list[tuple[str, str]]) -> BundleFactory:
    """Hands out the pipeline's signed Bundles by the identifier of their Observation."""
    by_identifier = {}
    for _, payload in payloads:
        bundle = jsonio.loads(payload)
        by_identifier[bundle["entry"][0]["resource"]["identifier"][0]["value"]] = bundle

    def factory(observations: list[dict[str, Any]]) -> dict[str, Any]:
        bundle: dict[str, Any] = by_identifier[observations[0]["identifier"][0]["value"]]
        return bundle

    return factory


async def measure(best: dict[str, float], facts: dict[str, Any]) -> None:
    """Run the rounds, keeping each path's best time in ``best`` as it goes."""
    signer = Signer(SigningKey.generate(), GATEWAY_WHO)

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
                sizes = [len(payload.encode()) for _, payload in payloads]
                facts["payload_bytes_avg"] = round(sum(sizes) / len(sizes))
                facts["group_commits"] = pipeline["group_commits"]
                keep("bare", await asyncio.to_thread(bare_round, broker.port, payloads))
                outbox = await durable_round(
                    root / f"o{n}", broker.url, Presigned(), batch, presigned_factory(payloads)
                )
                if outbox["payloads"] != payloads:
                    raise IncompleteError("the outbox path did not deliver the pipeline's Bundles")
                keep("outbox", outbox["seconds"])
                keep("flush", await flush_round(root / f"f{n}", broker.url, signer, f"f{n}-"))


def report(best: dict[str, float], facts: dict[str, Any], why: str | None) -> dict[str, Any]:
    """The JSON line: every rate measured, and the goals (not met when a step failed)."""
    rates = {name: BUNDLES / seconds for name, seconds in best.items()}
    out: dict[str, Any] = {"bench": "forward", "bundles": BUNDLES, **facts}
    names = {
        "outbox": "outbox",
        "pipeline": "pipeline_with_signing",
        "flush": "flush_only",
        "bare": "bare_paho_qos1",
    }
    for name, key in names.items():
        if name in best:
            out[key] = rate(BUNDLES, best[name])
    if "pipeline" in best:
        out["pipeline_with_signing"]["group_commits"] = out.pop("group_commits", None)
    ratio = rates["outbox"] / rates["bare"] if {"outbox", "bare"} <= rates.keys() else None
    if ratio is not None:
        out["ratio"] = round(ratio, 2)
    if {"pipeline", "bare"} <= rates.keys():
        out["ratio_pipeline"] = round(rates["pipeline"] / rates["bare"], 2)
    out["goal_ratio"] = GOAL_RATIO
    out["goal_rate"] = GOAL_RATE
    out["goal_met"] = (
        why is None and ratio is not None and ratio >= GOAL_RATIO and rates["outbox"] >= GOAL_RATE
    )
    out["pipeline_rate_goal_met"] = why is None and rates.get("pipeline", 0.0) >= GOAL_RATE
    if why is not None:
        out["why"] = why
    out.update(
        inflight_window=WINDOW,
        enqueue_concurrency=ENQUEUE_CONCURRENCY,
        rounds=ROUNDS,
        python=platform.python_version(),
    )
    return out


async def main() -> None:
    best: dict[str, float] = {}
    facts: dict[str, Any] = {}
    why = None
    try:
        await measure(best, facts)
    except (IncompleteError, BrokerError) as exc:
        why = str(exc)
    print(json.dumps(report(best, facts, why)))


if __name__ == "__main__":
    asyncio.run(main())
