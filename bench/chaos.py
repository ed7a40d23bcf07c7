"""Chaos benchmark: 2,000 Bundles while the broker is down for 30 s and the gateway is SIGKILLed 3×.

A gateway process (this file with ``--gateway``) makes one PHD heart-rate Observation at a time
(50 per second, deterministic identifiers), stores it and its signed Bundle in the durable outbox
and forwards over MQTT (the composition of gateway.forward.service). After every restart it
starts again from the first Observation: the store's PHD-identifier dedup skips what it already
has, as a gateway re-reading a sensor's stored records would.

This process runs the hospital side (gateway.hospital.receiver, files + dedup) and the chaos,
timed by the Bundles the broker has forwarded (a QoS 0 tap, so that the kills land mid-flush):
SIGKILL the gateway at 300, 1,200 and 1,600; stop the broker (SIGTERM, its persistence saved) for
30 s at 700. The gateway keeps making Observations during the outage, so the kills at 1,200 and
1,600 hit the flush of that backlog. Then it waits for the rest.

Every wait is bounded. A QoS 0 tap may lose messages, so a threshold also counts as reached when
the receiver (QoS 1, deduplicated) has accepted that many Bundles; when neither count moves for
``STALL_TIMEOUT_S`` the run stops. The whole run is bounded by ``RUN_TIMEOUT_S``. A run that
cannot finish still prints its JSON, with ``"goal_met": false`` and a ``"why"``.

Reports lost Bundles (goal 0) and the duplicates the receiver saw and dropped. Retry backoff is
shortened (gateway.forward.backoff.fast_policies) so the run is bounded. The broker and the test
data come from the tests' helpers (``tests/mosquitto.py``, ``tests/fixtures_mqtt.py``). Prints ONE
JSON object.
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests/

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from gateway.forward.backoff import Backoff, fast_policies
from gateway.forward.service import Forwarding, build_signer, build_uplinks, open_store
from gateway.forward.settings import ForwardSettings, MqttSettings
from gateway.forward.signing import KeyStore
from gateway.hospital.receiver import BundleReceiver, DirectorySink, MqttReceiver, SeenBundles
from gateway.store import ObservationRecord, Store, store_path
from tests.fixtures_mqtt import EFFECTIVE, GATEWAY_WHO, record, transaction_bundle
from tests.mosquitto import BrokerError, Mosquitto

TOTAL = 2000
RATE_PER_S = 50.0
KILL_AT = (300, 1200, 1600)
OUTAGE_AT = 700
OUTAGE_S = 30.0
FINISH_TIMEOUT_S = 180.0  # after the last chaos event, for the rest to arrive
STALL_TIMEOUT_S = 60.0  # no count moved for this long: something is stuck
STEP_TIMEOUT_S = 30.0  # subscribing, a process exiting after a signal
RUN_TIMEOUT_S = 900.0  # the whole run (a normal one takes ~2 min)
POLL_S = 0.05
GATEWAY_ID = "chaos"
FAST = fast_policies(base_s=0.1, cap_s=1.0)


class IncompleteError(Exception):
    """The run cannot go on; the message says why."""


# -- the gateway process -------------------------------------------------------------------------


def observation_record(i: int) -> ObservationRecord:
    """The i-th heart rate of the tests' data (deterministic identifier, time and value)."""
    effective = EFFECTIVE + dt.timedelta(seconds=i)
    return record(f"C0FFEE0000000002--147842-{i:06d}", str(60 + i % 40), effective=effective)


def bundle_factory(observations: list[dict[str, Any]]) -> dict[str, Any]:
    identifier = observations[0]["identifier"][0]["value"]
    return {"id": f"chaos-{identifier[-6:]}", **transaction_bundle(observations)}


async def gateway(data_dir: Path, url: str) -> None:
    settings = ForwardSettings(gateway_id=GATEWAY_ID, mqtt=MqttSettings(url=url))
    signer = build_signer(data_dir, GATEWAY_WHO)
    uplinks = build_uplinks(settings, policies=FAST)
    store = await open_store(data_dir, settings, signer, uplinks)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.TaskGroup() as tg:
            Forwarding(store, uplinks, settings.outbox, policies=FAST).start(tg)
            due = loop.time()
            for i in range(TOTAL):
                new = observation_record(i)
                if await store.add_observations(new.device_address, [new], bundle_factory):
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
        self.count = 0  # written by paho's thread only
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
        self.client = client
        if not subscribed.wait(STEP_TIMEOUT_S):
            self.close()
            raise IncompleteError(f"the QoS 0 tap got no SUBACK within {STEP_TIMEOUT_S:g} s")

    def _message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        if message.topic.endswith("/observations"):
            self.count += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def stop_process(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` and wait (bounded) for the process to end; SIGKILL when it does not."""
    process.send_signal(sig)
    try:
        await asyncio.to_thread(process.wait, STEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        await asyncio.to_thread(process.wait, STEP_TIMEOUT_S)


class Chaos:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "gateway"
        self.began = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self.kills = 0
        self.why: str | None = None
        key_store = KeyStore(self.data_dir)
        key_store.load_or_create()  # provisioning: the hospital gets the public key first
        self.keys = key_store.public_keys()
        self.broker = Mosquitto(root / "broker")
        self.seen = SeenBundles(root / "seen.sqlite3")
        self.receiver = BundleReceiver(self.keys, self.seen, [DirectorySink(root / "out")])
        self.published: Published | None = None
        self.log = root / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def tapped(self) -> int:
        return 0 if self.published is None else self.published.count

    def note(self, event: str) -> None:
        self.events.append(
            {
                "t_s": round(time.monotonic() - self.began, 1),
                "event": event,
                "published": self.tapped,
                "received": self.receiver.stats.accepted,
            }
        )

    async def reach(self, threshold: int) -> None:
        """Until the tap or the receiver has counted ``threshold`` Bundles (bounded).

        The tap (QoS 0) may lose messages and never get there; the receiver (QoS 1, deduplicated)
        lags it a little. Raises IncompleteError when the gateway exits by itself or when neither
        count moves for STALL_TIMEOUT_S.
        """
        last = (-1, -1)
        moved = time.monotonic()
        while self.tapped < threshold and self.receiver.stats.accepted < threshold:
            counts = (self.tapped, self.receiver.stats.accepted)
            if counts != last:
                last, moved = counts, time.monotonic()
            elif time.monotonic() - moved > STALL_TIMEOUT_S:
                raise IncompleteError(
                    f"stuck before {threshold}: the tap saw {counts[0]}, the receiver accepted "
                    f"{counts[1]}, no change for {STALL_TIMEOUT_S:g} s"
                )
            if self.process is not None and self.process.poll() is not None:
                raise IncompleteError(
                    f"the gateway exited by itself (status {self.process.returncode}); "
                    f"see {self.log.name}"
                )
            await asyncio.sleep(POLL_S)

    async def received_all(self, mqtt: MqttReceiver) -> None:
        async def until_all() -> None:
            while self.receiver.stats.accepted < TOTAL:
                mqtt.progress.clear()
                await mqtt.progress.wait()

        try:
            async with asyncio.timeout(FINISH_TIMEOUT_S):
                await until_all()
        except TimeoutError:
            self.note("gave up waiting")
            raise IncompleteError(
                f"{self.receiver.stats.accepted} of {TOTAL} Bundles arrived within "
                f"{FINISH_TIMEOUT_S:g} s of the last chaos event"
            ) from None

    async def kill_gateway(self) -> None:
        assert self.process is not None
        await stop_process(self.process, signal.SIGKILL)
        self.kills += 1
        self.note(f"gateway SIGKILLed ({self.kills})")
        self.process = start_gateway(self.data_dir, self.broker.url, self.log)

    async def outage(self) -> None:
        await asyncio.to_thread(self.broker.stop)
        self.note("broker stopped")
        await asyncio.sleep(OUTAGE_S)  # the scenario: a 30 s outage
        await asyncio.to_thread(self.broker.start)
        self.note("broker started")

    async def scenario(self, mqtt: MqttReceiver) -> None:
        try:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                await mqtt.subscribed.wait()
        except TimeoutError:
            raise IncompleteError(
                f"the receiver did not subscribe within {STEP_TIMEOUT_S:g} s"
            ) from None
        self.process = start_gateway(self.data_dir, self.broker.url, self.log)
        self.note("gateway started")
        for threshold in sorted((*KILL_AT, OUTAGE_AT)):
            # Published counts Bundles leaving the broker, duplicates included: the kills land
            # while the gateway is flushing, not after.
            await self.reach(threshold)
            await (self.outage() if threshold == OUTAGE_AT else self.kill_gateway())
        await self.received_all(mqtt)
        self.note("done")

    async def run(self) -> None:
        """The scenario, bounded by RUN_TIMEOUT_S; a reason it could not finish goes to ``why``."""
        await self.seen.open()
        receiving: asyncio.Task[None] | None = None
        try:
            await asyncio.to_thread(self.broker.start)
            self.published = await asyncio.to_thread(Published, self.broker.port)
            mqtt = MqttReceiver(
                MqttSettings(url=self.broker.url, client_id="hospital"),
                self.receiver,
                backoff=Backoff(FAST),
            )
            receiving = asyncio.create_task(mqtt.run(), name="chaos-receiver")
            async with asyncio.timeout(RUN_TIMEOUT_S):
                await self.scenario(mqtt)
        except TimeoutError:
            self.why = f"the run did not finish within {RUN_TIMEOUT_S:g} s"
        except (IncompleteError, BrokerError) as exc:
            self.why = str(exc)
        finally:
            if self.process is not None:
                await stop_process(self.process, signal.SIGTERM)
            if receiving is not None:
                receiving.cancel()
                await asyncio.wait([receiving], timeout=STEP_TIMEOUT_S)
            await self.seen.close()
            if self.published is not None:
                self.published.close()
            self.broker.stop()
        if self.why is not None:
            self.note(f"stopped: {self.why}")

    def report(self) -> dict[str, Any]:
        with Store(store_path(self.data_dir)) as store:
            outbox = store.outbox_stats().as_dict()
            stored = sum(store.observation_counts().values())
        unique = self.seen.count()
        out: dict[str, Any] = {
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
            "goal_met": self.why is None and TOTAL - unique == 0,
        }
        if self.why is not None:
            out["why"] = self.why
        out["events"] = self.events
        return out


async def chaos() -> dict[str, Any]:
    logging.getLogger("gateway").setLevel(logging.ERROR)  # one JSON object, no retry chatter
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        try:
            run = Chaos(Path(tmp))
        except BrokerError as exc:  # mosquitto missing
            return {"bench": "chaos", "bundles": TOTAL, "goal_met": False, "why": str(exc)}
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
