"""Receive the gateways' signed Bundles over MQTT, verify, deduplicate, deliver.

:class:`BundleReceiver` is the transport-independent core: parse, check the Bundle id, verify the
signature against the gateway keys in force (:mod:`gateway.hospital.keyring`: a key directory
reloaded while running, revoked keys refused as such), drop duplicates by Bundle id (remembered in
a small SQLite file, so across restarts too; receivers on one host may share it), then hand the
accepted Bundle to the sinks: a directory (one ``<bundle id>.json`` file each, the bytes exactly as
received: writing one twice changes nothing) and/or a FHIR server (POST of the transaction Bundle,
whose conditional creates absorb a duplicate). Rejected Bundles are logged and counted by reason.

:class:`MqttReceiver` subscribes to ``{prefix}/+/observations|devices|drafts|audit`` at QoS 1 on
a persistent session, or with a ``group`` to the MQTT v5 shared subscriptions
``$share/{group}/{prefix}/+/…`` so that any number of receivers split the load, and acknowledges
each message (manual PUBACK) only after it was handled: a receiver crash loses nothing, the broker
redelivers (to the same session when the receiver comes back). Messages are handled one at a time
in arrival order; a sink that fails transiently (FHIR server down) is retried with backoff while
later messages wait.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.fhir import jsonio
from gateway.forward.backoff import Backoff
from gateway.forward.errors import (
    SignatureError,
    TransientDeliveryError,
    VerifyFailure,
)
from gateway.forward.https import FhirClient
from gateway.forward.mqtt import BUNDLE_ID_PROPERTY, QOS_AT_LEAST_ONCE, MqttConnection
from gateway.forward.settings import HttpsSettings, MqttSettings
from gateway.forward.signing import verify_bundle
from gateway.hospital.keyring import Keyring, StaticKeys
from gateway.hospital.sinks import DirectorySink, FhirSink, SeenBundles, Sink
from gateway.store.models import TopicKind

log = logging.getLogger(__name__)
T = TypeVar("T")

FHIR_ID: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR R4 datatype "id"
# MQTT 5 §3.1.2.11.3: unacknowledged messages the broker may send (it may allow fewer: mosquitto's
# max_inflight_messages). A batch is made durable at once, and the next one arrives meanwhile.
RECEIVE_MAXIMUM: Final = 1000
BATCH_MAX: Final = RECEIVE_MAXIMUM // 2  # messages handled (and made durable) together
SEEN_FILENAME: Final = ".bedside-received.sqlite3"


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


class Rejection(enum.StrEnum):
    """Why a message was rejected before the signature check (see also VerifyFailure)."""

    NOT_JSON = "not-json"
    NOT_A_BUNDLE = "not-a-bundle"
    BAD_ID = "bad-id"  # missing, or not a FHIR id (also keeps file names safe)
    ID_MISMATCH = "id-mismatch"  # MQTT user property bundle-id differs from Bundle.id
    REFUSED_BY_SINK = "refused-by-sink"  # the FHIR server answered 4xx
    REVOKED_KEY = "revoked-key"  # signed by a key moved to the key directory's revoked/


@dataclass(slots=True)
class ReceiverStats:
    accepted: int = 0
    duplicates: int = 0
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
        }


class BundleReceiver:
    """Verify → deduplicate → deliver; see the module text."""

    def __init__(
        self,
        keys: Mapping[str, Ed25519PublicKey] | KeySource,
        seen: SeenBundles,
        sinks: Sequence[Sink],
    ) -> None:
        self.keys: KeySource = StaticKeys(keys) if isinstance(keys, Mapping) else keys
        if not self.keys.current().allowed:
            raise ValueError("a receiver needs at least one allowed gateway key")
        self.seen = seen
        self.sinks = tuple(sinks)
        self.stats = ReceiverStats()

    def _reject(self, topic: str, reason: str, detail: str) -> Outcome:
        self.stats.rejected[reason] += 1
        log.warning("rejected a Bundle on %s: %s: %s", topic, reason, detail)
        return Outcome.REJECTED

    async def handle(self, topic: str, payload: bytes, bundle_id_property: str | None) -> Outcome:
        """Handle one message (see :meth:`handle_many`)."""
        return (await self.handle_many([(topic, payload, bundle_id_property)]))[0]

    def _check(
        self, topic: str, payload: bytes, bundle_id_property: str | None, keyring: Keyring
    ) -> Outcome | _Verified:
        """Parse and verify one message: the rejection, or what a sink gets."""
        try:
            bundle = jsonio.loads(payload)
        except jsonio.NotAnObjectError:
            bundle = {}  # valid JSON, but not a resource: rejected as not a Bundle below
        except jsonio.FhirJsonError as exc:
            return self._reject(topic, Rejection.NOT_JSON, str(exc))
        if bundle.get("resourceType") != "Bundle":
            return self._reject(topic, Rejection.NOT_A_BUNDLE, "resourceType is not Bundle")
        bundle_id = bundle.get("id")
        if not isinstance(bundle_id, str) or not FHIR_ID.fullmatch(bundle_id):
            return self._reject(
                topic, Rejection.BAD_ID, f"Bundle.id {bundle_id!r} is not a FHIR id"
            )
        if bundle_id_property is not None and bundle_id_property != bundle_id:
            return self._reject(
                topic,
                Rejection.ID_MISMATCH,
                f"user property {BUNDLE_ID_PROPERTY}={bundle_id_property!r} but id {bundle_id!r}",
            )
        try:
            kid = verify_bundle(bundle, keyring.allowed)
        except SignatureError as exc:
            if exc.reason is VerifyFailure.UNKNOWN_KEY and _signed_by(bundle, keyring.revoked):
                return self._reject(
                    topic, Rejection.REVOKED_KEY, f"Bundle {bundle_id}: its key is revoked"
                )
            return self._reject(topic, exc.reason, f"Bundle {bundle_id}: {exc.detail}")
        return _Verified(topic, bundle_id, payload, kid)

    async def handle_many(self, messages: Sequence[tuple[str, bytes, str | None]]) -> list[Outcome]:
        """Handle messages (topic, payload, ``bundle-id`` property) in order: :meth:`prepare`
        then :meth:`commit`; the outcome of each."""
        return await self.commit(self.prepare(messages))

    def prepare(self, messages: Sequence[tuple[str, bytes, str | None]]) -> list[Checked]:
        """Parse and verify (CPU only: the receiver overlaps it with the previous commit)."""
        keyring = self.keys.current()
        return [self._check(topic, payload, prop, keyring) for topic, payload, prop in messages]

    async def commit(self, checked: Sequence[Checked]) -> list[Outcome]:
        """Drop the duplicates, deliver the rest to every sink in one batch and remember them.
        Raises TransientDeliveryError when the batch should be retried (commit it again)."""
        verified = [c for c in checked if isinstance(c, _Verified)]
        seen = await self.seen.seen_among([v.bundle_id for v in verified])
        fresh: dict[str, _Verified] = {}
        outcomes: dict[int, Outcome] = {}
        for v in verified:
            if v.bundle_id in seen or v.bundle_id in fresh:
                self.stats.duplicates += 1
                log.debug("duplicate Bundle %s on %s dropped", v.bundle_id, v.topic)
                outcomes[id(v)] = Outcome.DUPLICATE
            else:
                fresh[v.bundle_id] = v
        refused: dict[str, str] = {}
        for sink in self.sinks:
            items = [(b, v.payload) for b, v in fresh.items() if b not in refused]
            refused |= await sink.deliver_many(items)
        accepted = [v for b, v in fresh.items() if b not in refused]
        await self.seen.add_all([(v.bundle_id, v.topic, v.kid) for v in accepted])
        for b, v in fresh.items():
            if b in refused:
                outcomes[id(v)] = self._reject(
                    v.topic, Rejection.REFUSED_BY_SINK, f"Bundle {b}: {refused[b]}"
                )
            else:
                self.stats.accepted += 1
                log.debug("accepted Bundle %s from %s (key %s)", b, v.topic, v.kid)
                outcomes[id(v)] = Outcome.ACCEPTED
        if accepted:  # one line per batch: at thousands a second a line each would be the load
            log.info(
                "accepted %d Bundle(s), %s … %s",
                len(accepted),
                accepted[0].bundle_id,
                accepted[-1].bundle_id,
            )
        return [c if isinstance(c, Outcome) else outcomes[id(c)] for c in checked]


@dataclass(frozen=True, slots=True)
class _Verified:
    """A message whose Bundle verified: what the sinks and the dedup store get."""

    topic: str
    bundle_id: str
    payload: bytes
    kid: str


Checked = Outcome | _Verified
"""A prepared message: its rejection, or its verified Bundle."""


def _signed_by(bundle: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> bool:
    """Whether one of ``keys`` made the Bundle's signature."""
    if not keys:
        return False
    try:
        verify_bundle(bundle, keys)
    except SignatureError:
        return False
    return True


class KeySource(Protocol):
    """The keys in force (``gateway.hospital.keyring.KeyDirectory`` reloads them)."""

    def current(self) -> Keyring: ...


@dataclass(frozen=True, slots=True)
class _Message:
    generation: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    bundle_id: str | None


def _bundle_id_property(properties: Properties | None) -> str | None:
    for name, value in getattr(properties, "UserProperty", None) or []:
        if name == BUNDLE_ID_PROPERTY:
            return str(value)
    return None


class MqttReceiver(MqttConnection):
    """Feeds a :class:`BundleReceiver` from the broker; run :meth:`run` as a task."""

    def __init__(
        self,
        settings: MqttSettings,
        receiver: BundleReceiver,
        *,
        backoff: Backoff | None = None,
        sink_backoff: Backoff | None = None,
        group: str | None = None,
    ) -> None:
        super().__init__(
            settings,
            client_id=settings.client_id or default_client_id(group),
            manual_ack=True,
            receive_maximum=RECEIVE_MAXIMUM,
            backoff=backoff,
        )
        self.receiver = receiver
        self.group = group
        self._left: asyncio.Future[None] | None = None
        share = f"$share/{group}/" if group is not None else ""
        self.topics = [f"{share}{settings.topic_prefix}/+/{kind}" for kind in TopicKind]
        self._queue: asyncio.Queue[_Message] = asyncio.Queue()
        self._sink_backoff = sink_backoff or Backoff()
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        self.subscribed = asyncio.Event()
        self.progress = asyncio.Event()  # set after every handled message
        self.handled = 0
        self.on_subscribed: Callable[[list[str]], None] | None = None  # at every (re)subscription

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._work(), name="receiver-work")
            await super().run()

    def _connected(self, session_present: bool) -> None:
        self.client.subscribe([(name, QOS_AT_LEAST_ONCE) for name in self.topics])

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        failed = [str(reason) for reason in reasons if reason.is_failure]
        if failed:
            log.error("broker refused subscriptions %s: %s", self.topics, failed)
        else:
            self.subscribed.set()
            if self.on_subscribed is not None:
                self.on_subscribed(self.topics)

    def _connection_lost(self, reason: str) -> None:
        self.subscribed.clear()

    async def _before_disconnect(self) -> None:
        """An orderly stop leaves the group: the broker stops giving this session a share (a
        crash does not: the member comes back under the same client id and drains it)."""
        if self.group is None:
            return
        self._left = asyncio.get_running_loop().create_future()
        self.client.unsubscribe(self.topics)
        await self._left

    def _on_unsubscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if self._left is not None and not self._left.done():
            self._left.set_result(None)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._queue.put_nowait(
            _Message(
                self.generation,
                message.mid,
                message.qos,
                message.topic,
                bytes(message.payload),
                _bundle_id_property(message.properties),
            )
        )

    async def _work(self) -> None:
        """Batches in arrival order: one is verified while the one before is being made durable
        (the fsyncs run in threads); each batch is acknowledged once it is."""
        pending: asyncio.Task[None] | None = None
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < BATCH_MAX and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                prepared = self.receiver.prepare([(m.topic, m.payload, m.bundle_id) for m in batch])
                if pending is not None:
                    await pending
                pending = asyncio.create_task(self._commit(batch, prepared))
        finally:
            if pending is not None:
                pending.cancel()

    async def _commit(self, batch: list[_Message], prepared: list[Checked]) -> None:
        while True:
            try:
                await self.receiver.commit(prepared)
            except TransientDeliveryError as exc:
                delay = self._sink_backoff.failure(exc.error_class, exc.retry_after)
                log.warning(
                    "delivering %d Bundle(s) failed: %s; retrying in %.1f s", len(batch), exc, delay
                )
                await asyncio.sleep(delay)
                continue
            self._sink_backoff.success()
            break
        self.handled += len(batch)
        self.progress.set()
        for message in batch:
            # An ack for a message of an earlier connection would hit another message with the
            # same packet id: skip it, the broker redelivers it and dedup drops it.
            if message.qos > 0 and message.generation == self.generation and self.connected:
                self.client.ack(message.mid, message.qos)


def default_state_path(out_dir: Path | None) -> Path:
    """Where the ids of accepted Bundles are remembered when ``--state`` is not given."""
    return (out_dir if out_dir is not None else Path.cwd()) / SEEN_FILENAME


def default_client_id(group: str | None) -> str:
    """``bedside-receiver``; in a group ``bedside-receiver-GROUP-HOST`` (several members on one
    host need ``--client-id`` each: a client id is one persistent session)."""
    if group is None:
        return "bedside-receiver"
    return f"bedside-receiver-{group}-{socket.gethostname()}"


async def receive(
    settings: MqttSettings,
    keys: Mapping[str, Ed25519PublicKey] | KeySource,
    *,
    group: str | None = None,
    out_dir: Path | None = None,
    fhir: HttpsSettings | None = None,
    state_path: Path | None = None,
    max_bundles: int | None = None,
    stop: asyncio.Event | None = None,
    backoff: Backoff | None = None,
    on_subscribed: Callable[[list[str]], None] | None = None,
) -> ReceiverStats:
    """Receive until ``stop`` is set or ``max_bundles`` were accepted; returns the counts.
    ``on_subscribed`` is told the topics whenever the broker confirmed the subscriptions."""
    if out_dir is None and fhir is None:
        raise ValueError("give an output directory and/or a FHIR base URL")
    stop = stop or asyncio.Event()
    seen = SeenBundles(state_path or default_state_path(out_dir))
    await seen.open()
    try:
        async with contextlib.AsyncExitStack() as stack:
            sinks: list[Sink] = []
            if out_dir is not None:
                sinks.append(DirectorySink(out_dir))
            if fhir is not None:
                sinks.append(FhirSink(await stack.enter_async_context(FhirClient(fhir))))
            receiver = BundleReceiver(keys, seen, sinks)
            mqtt = MqttReceiver(settings, receiver, backoff=backoff, group=group)
            mqtt.on_subscribed = on_subscribed

            def done() -> bool:
                return stop.is_set() or (
                    max_bundles is not None and receiver.stats.accepted >= max_bundles
                )

            async def wake_on_stop() -> None:
                await stop.wait()
                mqtt.progress.set()

            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(mqtt.run(), name="receiver-mqtt"),
                    tg.create_task(wake_on_stop(), name="receiver-stop"),
                ]
                while not done():
                    await mqtt.progress.wait()
                    mqtt.progress.clear()
                for task in tasks:
                    task.cancel()
            return receiver.stats
    finally:
        await seen.close()
