"""Chaos benchmark: 2,000 Bundles while the broker is down for 30 s and the gateway is SIGKILLed 3×.

A gateway process (this file with ``--gateway``) makes one PHD heart-rate Observation at a time
(50 per second, deterministic identifiers), stores it and its signed Bundle in the durable outbox
and forwards over MQTT (the composition of gateway.forward.service). After every restart it
starts again from the first Observation: the store's PHD-identifier dedup skips what it already
has, as a gateway re-reading a sensor's stored records would.

This process runs the hospital side (gateway.forward.receiver, files + dedup) and the chaos,
timed by the Bundles the broker has forwarded (a QoS 0 tap, so that the kills land mid-flush):
SIGKILL the gateway at 300, 1,200 and 1,600; stop the broker (SIGTERM, its persistence saved) for
30 s at 700. The gateway keeps making Observations during the outage, so the kills at 1,200 and
1,600 hit the flush of that backlog. Then it waits for the rest.

Reports lost Bundles (goal 0) and the duplicates the receiver saw and dropped. Retry backoff is
shortened (gateway.forward.backoff.fast_policies) so the run is bounded. Prints ONE JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from gateway.forward.backoff import Backoff, fast_policies
from gateway.forward.mosquitto import Mosquitto
from gateway.forward.receiver import BundleReceiver, DirectorySink, MqttReceiver, SeenBundles
from gateway.forward.service import Forwarding, build_signer, build_uplinks, open_store
from gateway.forward.settings import ForwardSettings, MqttSettings
from gateway.forward.signing import KeyStore
from gateway.store import ObservationRecord, Store, store_path

TOTAL = 2000
RATE_PER_S = 50.0
KILL_AT = (300, 1200, 1600)
OUTAGE_AT = 700
OUTAGE_S = 30.0
FINISH_TIMEOUT_S = 180.0
GATEWAY_ID = "chaos"
DEVICE = "C0:FF:EE:00:00:02"
PHD_SYSTEM = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdBaseObservation"
START = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
WHO = {"type": "Device", "display": "Bedside Gateway chaos"}
FAST = fast_policies(base_s=0.1, cap_s=1.0)


# -- the gateway process -------------------------------------------------------------------------


def observation_record(i: int) -> ObservationRecord:
    identifier = f"C0FFEE0000000002--147842-{i:06d}"
    moment = START + dt.timedelta(seconds=i)
    resource = {
        "resourceType": "Observation",
        "identifier": [{"system": PHD_SYSTEM, "value": identifier}],
        "status": "final",
        "code": {
            "coding": [
                {"system": "urn:iso:std:iso:11073:10101", "code": "147842"},
                {"system": "http://loinc.org", "code": "8867-4"},
            ]
        },
        "effectiveDateTime": moment.isoformat().replace("+00:00", "Z"),
        "valueQuantity": {
            "value": Decimal(60 + i % 40),
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }
    return ObservationRecord(identifier, "8867-4", DEVICE, moment, resource)


def bundle_factory(observations: list[dict[str, Any]]) -> dict[str, Any]:
    identifier = observations[0]["identifier"][0]["value"]
    return {
        "resourceType": "Bundle",
        "id": f"chaos-{identifier[-6:]}",
        "type": "transaction",
        "entry": [
            {
                "resource": o,
                "request": {
                    "method": "POST",
                    "url": "Observation",
                    "ifNoneExist": f"identifier={PHD_SYSTEM}|{o['identifier'][0]['value']}",
                },
            }
            for o in observations
        ],
    }


async def gateway(data_dir: Path, url: str) -> None:
    settings = ForwardSettings(gateway_id=GATEWAY_ID, mqtt=MqttSettings(url=url))
    signer = build_signer(data_dir, WHO)
    uplinks = build_uplinks(settings, policies=FAST)
    store = await open_store(data_dir, settings, signer, uplinks)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.TaskGroup() as tg:
            Forwarding(store, uplinks, settings.outbox, policies=FAST).start(tg)
            due = loop.time()
            for i in range(TOTAL):
                if await store.add_observations(DEVICE, [observation_record(i)], bundle_factory):
                    due += 1 / RATE_PER_S  # pace new Observations only
                    await asyncio.sleep(max(0.0, due - loop.time()))
            await asyncio.Event().wait()  # keep forwarding until killed
    finally:
        await store.close()


# -- the chaos -------------------------------------------------------------------------------


def start_gateway(data_dir: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, __file__, "--gateway", str(data_dir), url],
            stdout=out,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


class Published:
    """Counts Bundles as the broker forwards them (QoS 0 tap), to time the kills mid-flush."""

    def __init__(self, port: int) -> None:
        self.count = 0
        self._changed = threading.Condition()
        subscribed = threading.Event()
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
        )
        client.on_message = self._message
        client.on_subscribe = lambda *args: subscribed.set()
        client.on_connect = lambda c, *args: c.subscribe(f"bedside/{GATEWAY_ID}/+", qos=0)
        client.reconnect_delay_set(0.1, 1)
        client.connect("127.0.0.1", port)
        client.loop_start()
        subscribed.wait(10)
        self.client = client

    def _message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        if message.topic.endswith("/observations"):
            with self._changed:
                self.count += 1
                self._changed.notify_all()

    def wait_for(self, count: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.count >= count)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Chaos:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "gateway"
        self.began = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self.kills = 0
        key_store = KeyStore(self.data_dir)
        key_store.load_or_create()  # provisioning: the hospital gets the public key first
        self.broker = Mosquitto(root / "broker")
        self.broker.start()
        self.seen = SeenBundles(root / "seen.sqlite3")
        self.receiver = BundleReceiver(
            key_store.public_keys(), self.seen, [DirectorySink(root / "out")]
        )
        self.mqtt = MqttReceiver(
            MqttSettings(url=self.broker.url, client_id="hospital"),
            self.receiver,
            backoff=Backoff(FAST),
        )
        self.published = Published(self.broker.port)
        self.log = root / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None

    def note(self, event: str) -> None:
        self.events.append(
            {
                "t_s": round(time.monotonic() - self.began, 1),
                "event": event,
                "published": self.published.count,
                "received": self.receiver.stats.accepted,
            }
        )

    async def received(self, count: int) -> None:
        while self.receiver.stats.accepted < count:
            self.mqtt.progress.clear()
            await self.mqtt.progress.wait()

    async def kill_gateway(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.process.wait)
        self.kills += 1
        self.note(f"gateway SIGKILLed ({self.kills})")
        self.process = start_gateway(self.data_dir, self.broker.url, self.log)

    async def outage(self) -> None:
        await asyncio.to_thread(self.broker.stop)
        self.note("broker stopped")
        await asyncio.sleep(OUTAGE_S)  # the scenario: a 30 s outage
        await asyncio.to_thread(self.broker.start)
        self.note("broker started")

    async def run(self) -> None:
        await self.seen.open()
        receiving = asyncio.create_task(self.mqtt.run(), name="chaos-receiver")
        try:
            await self.mqtt.subscribed.wait()
            self.process = start_gateway(self.data_dir, self.broker.url, self.log)
            self.note("gateway started")
            for threshold in sorted((*KILL_AT, OUTAGE_AT)):
                # Published counts Bundles leaving the broker, duplicates included: the kills
                # land while the gateway is flushing, not after.
                await asyncio.to_thread(self.published.wait_for, threshold)
                await (self.outage() if threshold == OUTAGE_AT else self.kill_gateway())
            try:
                async with asyncio.timeout(FINISH_TIMEOUT_S):
                    await self.received(TOTAL)
            except TimeoutError:
                self.note("gave up waiting")
            self.note("done")
        finally:
            if self.process is not None:
                self.process.send_signal(signal.SIGTERM)
                await asyncio.to_thread(self.process.wait)
            receiving.cancel()
            await asyncio.gather(receiving, return_exceptions=True)
            await self.seen.close()
            self.published.close()
            self.broker.stop()

    def report(self) -> dict[str, Any]:
        with Store(store_path(self.data_dir)) as store:
            outbox = store.outbox_stats().as_dict()
            stored = sum(store.observation_counts().values())
        unique = self.seen.count()
        return {
            "bench": "chaos",
            "bundles": TOTAL,
            "observations_stored": stored,
            "received_unique": unique,
            "files_written": len(list((self.root / "out").glob("*.json"))),
            "lost": TOTAL - unique,
            "duplicates_before_dedup": self.receiver.stats.duplicates,
            "rejected": dict(self.receiver.stats.rejected),
            "gateway_kills": self.kills,
            "broker_outage_s": OUTAGE_S,
            "outbox_at_end": outbox,
            "elapsed_s": round(time.monotonic() - self.began, 1),
            "goal_lost": 0,
            "goal_met": TOTAL - unique == 0,
            "events": self.events,
        }


async def chaos() -> dict[str, Any]:
    logging.getLogger("gateway").setLevel(logging.ERROR)  # one JSON object, no retry chatter
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        run = Chaos(Path(tmp))
        await run.run()
        return run.report()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", nargs=2, metavar=("DATA_DIR", "MQTT_URL"))
    args = parser.parse_args()
    if args.gateway:
        data_dir, url = args.gateway
        asyncio.run(gateway(Path(data_dir), url))
        return
    print(json.dumps(asyncio.run(chaos())))


if __name__ == "__main__":
    main()
