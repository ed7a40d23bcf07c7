"""The ingest pipeline: a session's measurements → FHIR Observations → store and outbox.

One call per notification: the pure mapping (:mod:`gateway.fhir`) builds the Observations, the
store inserts the ones it has not seen (the PHD IG identifier is the key, so stored records
downloaded twice are stored once) and, in the same transaction, enqueues their signed transaction
Bundle for every uplink. Observations that were new are announced to ``on_observation`` (the
sensor manager resolves measure-on-demand waiters with them).

Timestamps go onto the gateway's timeline with the clock anchor the session read on connecting
(PHD IG "Time-stamps and time synchronization"; :mod:`gateway.fhir.timeline`): stored records
with the anchor read before the gateway set the clock, live readings with none once it set the
clock (they are stamped by the clock it just set). A Bundle whose Observations were moved carries
the Coincident Time Stamp they refer to. A reading that cannot be dated (stamped by a clock that
was never set, or a stored record without a time stamp) is stored here and counted
(``SessionStatus.undated``) but never sent, as the IG advises.

Each notification's Observations get the patient assigned when it arrives (``patient()``, asked
once per notification) as ``subject``; with none assigned they are stored without one and their
Bundle is held back from the uplinks until a claim (docs/contracts.md, "Patient").
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.ble.measure import ObservationEvent
from gateway.fhir.bundle import transaction_bundle
from gateway.fhir.device import GatewayInfo, SensorInfo, gateway_device, sensor_device
from gateway.fhir.observation import MappingContext, PatientRef, map_measurements
from gateway.fhir.read import display_value, observation_codes
from gateway.fhir.timeline import COINCIDENT_TIME_STAMP_REFERENCE
from gateway.store.errors import StoreFullError
from gateway.store.models import ObservationRecord, TopicKind

if TYPE_CHECKING:
    from gateway.ble.session import SessionStatus
    from gateway.fhir.resource import MappedResource
    from gateway.ieee11073.measurement import Measurement
    from gateway.profiles import DeviceProfile
    from gateway.store.aio import AsyncStore

log = logging.getLogger(__name__)

SYSTEM_ID_KEY = "system_id"
REFUSAL_LOG_S = 60.0  # a full store is said at most this often


@dataclass
class Ingest:
    """Callable sink for :class:`~gateway.ble.session.DeviceSession` measurements."""

    store: AsyncStore
    gateway: GatewayInfo
    profiles: Mapping[str, DeviceProfile]
    tz: dt.tzinfo = dt.UTC
    patient: Callable[[], PatientRef | None] = lambda: None
    """The patient assigned now (None: hold the readings); see :mod:`gateway.patients`."""
    on_held: Callable[[int], None] | None = None
    """Told how many readings a held-back Bundle carries."""
    on_observation: Callable[[ObservationEvent], None] | None = None
    on_refused: Callable[[int], None] | None = None
    """Told how many readings were refused because the store is full."""
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    latest: dict[str, str] = field(default_factory=dict)
    """The newest value per code, as display text ("72 /min"), for the live views."""
    _known_devices: dict[str, SensorInfo] = field(default_factory=dict)
    _refusal_logged: float = -REFUSAL_LOG_S

    def _refused(self, status: SessionStatus, readings: int, reason: str) -> None:
        """Count readings the full store refused; say so at most once a minute."""
        if self.on_refused is not None:
            self.on_refused(readings)
        now = time.monotonic()
        if now - self._refusal_logged >= REFUSAL_LOG_S:
            self._refusal_logged = now
            log.warning("%s: reading(s) refused, the store is full: %s", status.name, reason)

    def sensor_info(self, status: SessionStatus) -> SensorInfo:
        profile = self.profiles.get(status.kind)
        info = status.info
        return SensorInfo(
            system_id=status.system_id or status.address,
            manufacturer=info.get("Manufacturer Name String"),
            model=info.get("Model Number String"),
            serial=info.get("Serial Number String"),
            hardware_revision=info.get("Hardware Revision String"),
            firmware_revision=info.get("Firmware Revision String"),
            software_revision=info.get("Software Revision String"),
            specialization=profile.specialization if profile is not None else None,
            name=status.name,
            bt_address=status.address if status.system_id else None,
        )

    async def _device_changed(self, status: SessionStatus, sensor: SensorInfo) -> None:
        """Record the sensor and publish its Device when what we know of it changed."""
        if self._known_devices.get(status.address) == sensor:
            return
        self._known_devices[status.address] = sensor
        info: dict[str, Any] = dict(status.info)
        if status.system_id:
            info[SYSTEM_ID_KEY] = status.system_id
        await self.store.upsert_device(status.address, status.kind, status.name, info)
        devices = [gateway_device(self.gateway), sensor_device(sensor)]
        # A fresh id: the same Device may be published again when what we know of it changes.
        bundle = transaction_bundle(devices, bundle_id=str(uuid.uuid4()), timestamp=self.clock())
        await self.store.enqueue_bundle(TopicKind.DEVICES, bundle)

    async def __call__(
        self, status: SessionStatus, measurements: tuple[Measurement, ...], *, stored: bool
    ) -> None:
        sensor = self.sensor_info(status)
        try:
            await self._device_changed(status, sensor)
        except StoreFullError as exc:
            self._known_devices.pop(status.address, None)  # recorded at the next reading
            self._refused(status, len(measurements), str(exc))
            return
        patient = self.patient()
        # Live readings after the gateway set the clock are stamped by the clock it just set.
        anchor = status.clock_anchor if stored or not status.clock_synced else None
        ctx = MappingContext(
            sensor, self.gateway, self.clock(), self.tz, patient, anchor=anchor, stored=stored
        )
        resources = map_measurements(measurements, ctx)
        mapped = [m for m in resources if m.update_url is None]
        companions = [m for m in resources if m.update_url is not None]  # coincident time stamp
        records = [
            ObservationRecord(
                identifier=self._key(m),
                code=(observation_codes(m.resource) or ("unknown",))[0],
                device_address=status.address,
                # the device's own time, for measurements that carry one (a PHD identifier)
                effective=m.device_time if m.if_none_exist is not None else None,
                resource=m.resource,
            )
            for m in mapped
        ]
        undated = [m for m in mapped if m.undated is not None]

        def bundle_factory(new: list[dict[str, Any]]) -> Mapping[str, Any] | None:
            chosen = [m for m in mapped if m.resource in new and m.undated is None]
            if not chosen:
                return None
            devices = [gateway_device(self.gateway), sensor_device(sensor)]
            referred = [c for c in companions if any(_refers_to(m.resource, c) for m in chosen)]
            return transaction_bundle([*devices, *referred, *chosen], timestamp=ctx.received_at)

        hold = patient is None
        try:
            new_ids = set(
                await self.store.add_observations(
                    status.address,
                    records,
                    bundle_factory,
                    patient=None if patient is None else patient.reference,
                    hold=hold,
                )
            )
        except StoreFullError as exc:
            self._refused(status, len(records), str(exc))
            return
        kept_here = sum(1 for m in undated if self._key(m) in new_ids)
        if kept_here:
            status.undated += kept_here
            log.info(
                "%s: %d reading(s) without a true date (%s): kept here, not sent",
                status.name,
                kept_here,
                undated[0].undated,
            )
        if hold and len(new_ids) > kept_here and self.store.uplinks and self.on_held is not None:
            self.on_held(len(new_ids) - kept_here)
        for m in mapped:
            text = display_value(m.resource)
            if text is not None:
                for code in observation_codes(m.resource):  # by LOINC and by MDC code
                    self.latest[code] = text
        if stored:
            log.debug("%s: %d of %d stored records new", status.name, len(new_ids), len(mapped))
        if self.on_observation is None:
            return
        for m in mapped:
            if self._key(m) in new_ids:
                codes = observation_codes(m.resource)
                event = ObservationEvent(status.address, frozenset(codes), m.resource, stored)
                self.on_observation(event)

    @staticmethod
    def _key(m: MappedResource) -> str:
        """The store key: the PHD IG identifier, or the stable urn of a live reading."""
        identifiers = m.resource.get("identifier")
        if identifiers:
            return str(identifiers[0]["value"])
        return m.full_url


def _refers_to(resource: Mapping[str, Any], companion: MappedResource) -> bool:
    """True when ``resource`` refers to ``companion`` through its coincident time stamp
    extension."""
    return any(
        e.get("url") == COINCIDENT_TIME_STAMP_REFERENCE
        and e.get("valueReference", {}).get("reference") == companion.full_url
        for e in resource.get("extension", ())
    )
