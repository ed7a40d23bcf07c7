"""Discovery and the set of sensor sessions; which sensors are accepted; measure-on-demand.

:class:`SensorManager` scans with the service UUIDs of every device profile, starts one
:class:`~gateway.ble.session.DeviceSession` per accepted device (the
:class:`~gateway.ble.registry.SensorRegistry`: an allow-list, run-time accept/forget, or everything
in demo mode), keeps what it saw of the others for ``bedside sensors list``, and serves
``await sensors.measure(loinc_code, timeout)`` for the assistant (:mod:`gateway.ble.measure`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from bleak import BleakScanner

from gateway.ble.errors import SensorUnavailableError
from gateway.ble.measure import READY_STATES, ObservationEvent, OnDemand
from gateway.ble.pairing import PasskeyBroker
from gateway.ble.radio import (
    RADIO_BACKOFF,
    RADIO_ERRORS,
    RadioLostError,
    RadioState,
    RadioStatus,
    radio_trouble,
)
from gateway.ble.registry import SensorRegistry, check_address
from gateway.ble.session import DeviceSession, SessionState, SessionStatus
from gateway.profiles import Burden

if TYPE_CHECKING:
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData

    from gateway.ble.session import MeasurementSink
    from gateway.ble.transport import LinkSecurity, RadioLink
    from gateway.profiles import DeviceProfile

__all__ = ["READY_STATES", "ObservationEvent", "SensorManager", "Sighting"]

log = logging.getLogger(__name__)

LINKED_STATES: Final = frozenset({SessionState.PAIRING, *READY_STATES})
SWEEP_MIN_S: Final = 1.0
SWEEP_MAX_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class Sighting:
    """The last advertisement of a sensor that matches a profile."""

    profile: DeviceProfile
    name: str
    rssi: int | None
    at: float  # time.monotonic()


class SensorManager:
    """Finds sensors, keeps a session per sensor, and measures on demand.

    ``radio`` opens the BLE transport (:func:`gateway.ble.transport.open_link` bound to the
    configured transport string, or :func:`~gateway.ble.transport.given_link` for backends the
    caller holds). A radio that cannot be opened or goes away is reported in :attr:`radio` and
    retried with backoff; the sessions resume on the new radio with their counters.

    Which sensors it connects to is the :class:`~gateway.ble.registry.SensorRegistry`'s call
    (``ble.allow``, run-time accept/forget, ``ble.auto_accept``); :meth:`accept`, :meth:`forget`
    and :meth:`sensors` serve ``bedside sensors`` and ``/api/sensors``. A session whose sensor
    has been lost and unseen for ``forget_lost_after`` seconds leaves the live view (its data
    stays; it comes back if the sensor does).
    """

    def __init__(
        self,
        profiles: Mapping[str, DeviceProfile],
        sink: MeasurementSink,
        *,
        radio: Callable[[], AbstractAsyncContextManager[RadioLink]],
        transport: str = "bluez",
        allow: Iterable[str] = (),
        auto_accept: bool = False,
        registry: SensorRegistry | None = None,
        passkeys: PasskeyBroker | None = None,
        forget_lost_after: float | None = None,
        on_latency: Callable[[str, float], None] | None = None,
        last_record_time: Callable[[str, str], Awaitable[dt.datetime | None]] | None = None,
        tz: dt.tzinfo = dt.UTC,
    ) -> None:
        """``registry`` decides which sensors to connect to (default: one in memory from
        ``allow`` and ``auto_accept``); ``passkeys`` collects the passkeys sensors ask for."""
        self.profiles = dict(profiles)
        self.radio = RadioStatus(transport)
        self.registry = registry or SensorRegistry(
            None, frozenset(a.upper() for a in allow), auto_accept
        )
        self.passkeys = passkeys or PasskeyBroker()
        self.forget_lost_after = forget_lost_after
        self._on_latency = on_latency
        self._open_radio = radio
        self._sink = sink
        self._client_backend: type[Any] | None = None
        self._security: LinkSecurity | None = None
        self._last_record_time = last_record_time
        self._tz = tz
        self._sessions: dict[str, DeviceSession] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._seen: dict[str, BLEDevice] = {}
        self._sightings: dict[str, Sighting] = {}
        self._on_demand = OnDemand(self._sessions)
        self._tasks: asyncio.TaskGroup | None = None
        self._service_index = {
            service: profile
            for profile in self.profiles.values()
            for service in profile.match_services
        }

    # -- status -----------------------------------------------------------------------------------

    def statuses(self) -> list[SessionStatus]:
        return [s.status for s in self._sessions.values()]

    def rssi(self, address: str) -> int | None:
        """The signal of the sensor's last advertisement (dBm), if one was seen."""
        seen = self._sightings.get(address.upper())
        return seen.rssi if seen is not None else None

    def session(self, address: str) -> DeviceSession | None:
        return self._sessions.get(address.upper())

    # -- running ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Scan and run sessions until cancelled, reopening the radio whenever it fails."""
        try:
            while True:
                try:
                    await self._run_radio()
                except (*RADIO_ERRORS, RadioLostError) as exc:
                    await self._radio_down(exc)
        finally:
            self._on_demand.close()

    async def _run_radio(self) -> None:
        """One life of the radio: open it, scan, run the sessions until it goes away."""
        async with self._open_radio() as link:
            self._client_backend = link.backends.client
            self._security = link.security
            if link.security is not None:
                link.security.passkeys = self.passkeys
            kwargs: dict[str, Any] = {}
            if link.backends.scanner is not None:
                kwargs["backend"] = link.backends.scanner
            scanner = BleakScanner(
                detection_callback=self._on_advertisement,
                service_uuids=sorted(self._service_index),
                **kwargs,
            )
            async with scanner:
                if self.radio.state is RadioState.DOWN:
                    log.info("Bluetooth radio on %r is back", self.radio.transport)
                self.radio.up()
                async with asyncio.TaskGroup() as tasks:
                    self._tasks = tasks
                    sweep = None
                    if self.forget_lost_after is not None:
                        sweep = tasks.create_task(
                            self._sweep_lost(self.forget_lost_after), name="ble-sweep"
                        )
                    try:
                        await link.lost()
                    finally:
                        self._tasks = None
                        for task in (*self._running.values(), sweep):
                            if task is not None:
                                task.cancel()
        raise RadioLostError("the transport closed")

    async def _radio_down(self, exc: BaseException) -> None:
        delay = RADIO_BACKOFF.delay(self.radio.failures + 1)
        reason = radio_trouble(self.radio.transport, exc)
        # One line per outage at warning; the retries that follow at debug.
        level = logging.DEBUG if self.radio.state is RadioState.DOWN else logging.WARNING
        log.log(level, "%s; retrying in %.1f s", reason, delay)
        self.radio.down(reason, delay)
        for session in self._sessions.values():
            session.radio_lost("radio down")
        await asyncio.sleep(delay)

    def _profile_for(self, adv: AdvertisementData) -> DeviceProfile | None:
        for uuid in adv.service_uuids:
            profile = self._service_index.get(uuid.lower())
            if profile is not None:
                return profile
        return None

    def _on_advertisement(self, device: BLEDevice, adv: AdvertisementData) -> None:
        address = device.address.upper()
        self._seen[address] = device
        profile = self._profile_for(adv)
        if profile is not None:
            self._sightings[address] = Sighting(
                profile, device.name or address, adv.rssi, time.monotonic()
            )
        self._start_session(address, profile)

    def _start_session(self, address: str, profile: DeviceProfile | None) -> None:
        """Run the sensor's session (made now if new) unless it runs or is not accepted."""
        device = self._seen.get(address)
        if device is None or address in self._running or self._tasks is None:
            return
        session = self._sessions.get(address)
        if session is not None:  # known from before the radio was reopened
            session.rebind(device, self._client_backend)
        else:
            if profile is None:
                return
            if not self.registry.allows(address):
                log.debug("ignoring %s (%s): not accepted", address, profile.kind)
                return
            session = DeviceSession(
                device,
                profile,
                self._sink,
                client_backend=self._client_backend,
                lookup_device=lambda: self._seen.get(address),
                last_record_time=self._record_time_reader(profile),
                clock=lambda: dt.datetime.now(self._tz),
                on_latency=self._on_latency,
            )
            self._sessions[address] = session
            log.info("found %s %s (%s)", profile.kind, device.name, address)
        task = self._tasks.create_task(session.run(), name=f"ble-session-{address}")
        self._running[address] = task
        task.add_done_callback(functools.partial(self._session_ended, address))

    def _session_ended(self, address: str, task: asyncio.Task[None]) -> None:
        if self._running.get(address) is task:
            del self._running[address]

    def _record_time_reader(
        self, profile: DeviceProfile
    ) -> Callable[[str], Awaitable[dt.datetime | None]] | None:
        """For RACP downloads: the newest stored record time of the profile's first code."""
        reader = self._last_record_time
        if reader is None or not profile.loinc:
            return None
        code = profile.loinc[0]

        async def last_record_time(address: str) -> dt.datetime | None:
            return await reader(address, code)

        return last_record_time

    # -- accepted sensors -------------------------------------------------------------------------

    def accept(self, address: str) -> bool:
        """Accept the sensor (persisted; it connects at its next advertisement, or now if it was
        seen). False when it already was accepted. Raises SensorListError for a bad address."""
        address = check_address(address)
        changed = self.registry.accept(address)
        seen = self._sightings.get(address)
        self._start_session(address, seen.profile if seen is not None else None)
        return changed

    async def forget(self, address: str) -> bool:
        """Stop accepting the sensor, end its session, leave the live view and delete its bond
        (its data stays). True when a bond was deleted. Raises SensorListError."""
        address = check_address(address)
        self.registry.forget(address)
        task = self._running.pop(address, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._sessions.pop(address, None)
        security = self._security
        bond_deleted = security is not None and await security.forget_bond(address)
        log.info("forgot %s%s", address, " and its bond" if bond_deleted else "")
        return bond_deleted

    def sensors(self) -> list[dict[str, Any]]:
        """Every sensor with a session or seen advertising, for ``bedside sensors list``:
        problems (lost, not accepted) first."""
        now = time.monotonic()
        waiting = self.passkeys.waiting()
        rows: list[dict[str, Any]] = []
        for address in sorted({*self._sessions, *self._sightings}):
            session = self._sessions.get(address)
            seen = self._sightings.get(address)
            status = session.status if session is not None else None
            row: dict[str, Any] = {
                "address": address,
                "kind": status.kind if status is not None else seen.profile.kind if seen else None,
                "name": status.name if status is not None else seen.name if seen else address,
                "accepted": self.registry.source(address),
                "state": str(status.state) if status is not None else "not accepted",
                "reason": status.reason if status is not None else "",
                "bonded": self._security is not None and self._security.bonded(address),
                "waiting_for_passkey": address in waiting,
                "rssi": seen.rssi if seen is not None else None,
                "last_seen_s": _last_seen(now, seen, status),
                "battery": status.battery if status is not None else None,
                "state_for_s": None if status is None else round(now - status.state_since),
                "counters": None if status is None else _counters(status),
                "device": None if status is None else _device_info(status),
                "measure": self._measure_info(session),
            }
            rows.append(row)
        order = {"lost": 0, "not accepted": 1}
        return sorted(rows, key=lambda r: (order.get(r["state"], 2), r["kind"] or "", r["address"]))

    @staticmethod
    def _measure_info(session: DeviceSession | None) -> dict[str, Any] | None:
        """Whether a measurement can be started on the sensor now, and what starting costs."""
        if session is None or not session.profile.on_demand:
            return None
        measure = session.profile.measure
        return {"burden": str(measure.burden), "method": measure.method}

    async def measure_on(self, address: str) -> Mapping[str, Any]:
        """Take a measurement on this sensor now (the technician's "measure" button): the next
        value of its first code from it alone, starting it where the profile says how."""
        address = check_address(address)
        session = self._sessions.get(address)
        if session is None:
            raise SensorUnavailableError(f"no session for {address}: accept the sensor first")
        return await self._on_demand.measure_from(session)

    async def _sweep_lost(self, after_s: float) -> None:
        """Sessions without a link (lost, reconnecting) whose sensor has not advertised for
        ``after_s`` seconds leave the live view."""
        while True:
            await asyncio.sleep(min(max(after_s / 4, SWEEP_MIN_S), SWEEP_MAX_S))
            now = time.monotonic()
            for address, session in list(self._sessions.items()):
                seen = self._sightings.get(address)
                last = seen.at if seen is not None else None
                if session.status.state in LINKED_STATES:  # only lost or reconnecting ones go
                    continue
                if last is not None and now - last < after_s:
                    continue
                task = self._running.pop(address, None)
                if task is not None:
                    task.cancel()
                del self._sessions[address]
                self._sightings.pop(address, None)
                log.info(
                    "%s (%s) unseen for %.0f s: left the live view",
                    session.status.name,
                    address,
                    after_s,
                )

    # -- measure on demand (gateway.ble.measure) -------------------------------------------------

    def can_measure(self) -> dict[str, list[str]]:
        """LOINC code → addresses of ready sensors that can measure it on demand."""
        return self._on_demand.can_measure()

    def observation_ingested(self, event: ObservationEvent) -> None:
        """Called by the ingest pipeline for every stored Observation (resolves requests)."""
        self._on_demand.observation_ingested(event)

    async def measure(
        self,
        loinc_code: str,
        timeout: float | None = None,  # noqa: ASYNC109 - the assistant's API takes a timeout
        *,
        max_burden: Burden = Burden.CUFF_INFLATION,
    ) -> Mapping[str, Any]:
        """The next Observation with ``loinc_code`` from ONE source; see
        :meth:`gateway.ble.measure.OnDemand.measure`."""
        return await self._on_demand.measure(loinc_code, timeout, max_burden=max_burden)


def _last_seen(now: float, seen: Sighting | None, status: SessionStatus | None) -> float | None:
    """Seconds since the sensor was last heard: an advertisement, or a value on its link."""
    heard = [
        t
        for t in (seen.at if seen else None, status.last_value_at if status else None)
        if t is not None
    ]
    return round(now - max(heard), 1) if heard else None


def _counters(status: SessionStatus) -> dict[str, int]:
    return {
        "notifications": status.notifications,
        "observations": status.observations,
        "decode_errors": status.decode_errors,
        "ingest_errors": status.ingest_errors,
        "reconnects": status.reconnects,
        "undated": status.undated,
    }


def _device_info(status: SessionStatus) -> dict[str, str | None]:
    """What the sensor's Device Information Service said."""
    info = status.info
    return {
        "manufacturer": info.get("Manufacturer Name String"),
        "model": info.get("Model Number String"),
        "serial": info.get("Serial Number String"),
        "firmware": info.get("Firmware Revision String"),
    }
