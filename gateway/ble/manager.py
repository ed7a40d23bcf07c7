"""Discovery and the set of sensor sessions; measure-on-demand.

:class:`SensorManager` scans with the service UUIDs of every device profile, starts one
:class:`~gateway.ble.session.DeviceSession` per accepted device (an allow-list, or everything in
demo mode) and serves ``await sensors.measure(loinc_code, timeout)`` for the assistant: from one
source, a sensor that streams the code before one whose measurement must be started, and of those
the least burdensome (``[measure] streams`` and ``burden`` of the device profiles).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bleak import BleakScanner

from gateway.ble.radio import (
    RADIO_BACKOFF,
    RADIO_ERRORS,
    RadioLostError,
    RadioState,
    RadioStatus,
    radio_trouble,
)
from gateway.ble.session import (
    DeviceSession,
    MeasurementNotAllowedError,
    MeasurementTimeoutError,
    SensorBusyError,
    SensorError,
    SensorNotConnectedError,
    SensorUnavailableError,
    SessionState,
    SessionStatus,
)
from gateway.profiles import Burden

if TYPE_CHECKING:
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData

    from gateway.ble.session import MeasurementSink
    from gateway.ble.transport import RadioLink
    from gateway.profiles import DeviceProfile

log = logging.getLogger(__name__)

READY_STATES = frozenset({SessionState.CONNECTED, SessionState.STREAMING})


@dataclass(frozen=True)
class ObservationEvent:
    """An Observation the ingest pipeline produced for a device, with its codes."""

    address: str
    codes: frozenset[str]
    resource: Mapping[str, Any]
    stored: bool = False
    """A record the sensor had stored (a RACP download), not a reading taken now."""


@dataclass
class _Waiter:
    code: str
    addresses: frozenset[str]
    future: asyncio.Future[Mapping[str, Any]] = field(repr=False)


class SensorManager:
    """Finds sensors, keeps a session per sensor, and measures on demand.

    ``radio`` opens the BLE transport (:func:`gateway.ble.transport.open_link` bound to the
    configured transport string, or :func:`~gateway.ble.transport.given_link` for backends the
    caller holds). A radio that cannot be opened or goes away is reported in :attr:`radio` and
    retried with backoff; the sessions resume on the new radio with their counters.
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
        last_record_time: Callable[[str, str], Awaitable[dt.datetime | None]] | None = None,
        tz: dt.tzinfo = dt.UTC,
    ) -> None:
        self.profiles = dict(profiles)
        self.radio = RadioStatus(transport)
        self._open_radio = radio
        self._sink = sink
        self._allow = {a.upper() for a in allow}
        self._auto_accept = auto_accept
        self._client_backend: type[Any] | None = None
        self._last_record_time = last_record_time
        self._tz = tz
        self._sessions: dict[str, DeviceSession] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._seen: dict[str, BLEDevice] = {}
        self._waiters: list[_Waiter] = []
        self._measuring: dict[str, _Running] = {}  # address → the measurement running on it
        self._tasks: asyncio.TaskGroup | None = None
        self._service_index = {
            service: profile
            for profile in self.profiles.values()
            for service in profile.match_services
        }

    # -- status -----------------------------------------------------------------------------------

    def statuses(self) -> list[SessionStatus]:
        return [s.status for s in self._sessions.values()]

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
            for waiter in self._waiters:
                waiter.future.cancel()
            for running in self._measuring.values():
                running.trigger.cancel()

    async def _run_radio(self) -> None:
        """One life of the radio: open it, scan, run the sessions until it goes away."""
        async with self._open_radio() as link:
            self._client_backend = link.backends.client
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
                    try:
                        await link.lost()
                    finally:
                        self._tasks = None
                        for task in self._running.values():
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
        if address in self._running or self._tasks is None:
            return
        session = self._sessions.get(address)
        if session is not None:  # known from before the radio was reopened
            session.rebind(device, self._client_backend)
        else:
            profile = self._profile_for(adv)
            if profile is None:
                return
            if not self._auto_accept and address not in self._allow:
                log.debug("ignoring %s (%s): not in the allow-list", address, profile.kind)
                return
            session = DeviceSession(
                device,
                profile,
                self._sink,
                client_backend=self._client_backend,
                lookup_device=lambda: self._seen.get(address),
                last_record_time=self._record_time_reader(profile),
                clock=lambda: dt.datetime.now(self._tz),
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

    # -- measure on demand ------------------------------------------------------------------------

    def can_measure(self) -> dict[str, list[str]]:
        """LOINC code → addresses of ready sensors that can measure it on demand (not those a
        person must use, ``[measure] method = "manual"``)."""
        out: dict[str, list[str]] = {}
        for address, session in self._sessions.items():
            if session.status.state in READY_STATES and session.profile.on_demand:
                for code in session.profile.loinc:
                    out.setdefault(code, []).append(address)
        return out

    def observation_ingested(self, event: ObservationEvent) -> None:
        """Called by the ingest pipeline for every stored Observation; resolves waiters and ends
        the measurement running on that sensor once it delivered one of its codes. Records the
        sensor had stored (downloaded on reconnect) answer nobody: a request wants a reading
        taken now, not an old one."""
        if event.stored:
            return
        for waiter in list(self._waiters):
            if (
                event.address in waiter.addresses
                and waiter.code in event.codes
                and not waiter.future.done()
            ):
                waiter.future.set_result(event.resource)
        running = self._measuring.get(event.address)
        if running is not None and running.codes & event.codes:
            del self._measuring[event.address]

    async def measure(
        self,
        loinc_code: str,
        timeout: float | None = None,  # noqa: ASYNC109 - the assistant's API takes a timeout
        *,
        max_burden: Burden = Burden.CUFF_INFLATION,
    ) -> Mapping[str, Any]:
        """The next Observation with ``loinc_code`` from ONE source (docs/architecture.md,
        "Measure on demand"):

        1. ready sensors that send the code on their own (``[measure] streams``, or no trigger):
           wait for the next value, start nothing;
        2. else a measurement already running on a sensor that measures the code (started by an
           earlier request, or found running: ATT 0xFE): wait for its result;
        3. else start one, on the ready sensor of least ``[measure] burden`` not above
           ``max_burden``; concurrent requests share it (one trigger write).

        ``timeout`` caps the wait, as does the chosen kind's ``[measure] timeout_s``. Raises a
        :class:`SensorError` whose ``failure`` says why: ``no_sensor``
        (:class:`SensorUnavailableError`), ``not_connected`` (:class:`SensorNotConnectedError`,
        or the trigger write failed), ``not_allowed`` (:class:`MeasurementNotAllowedError`),
        ``timeout`` (:class:`MeasurementTimeoutError`) or ``busy`` (:class:`SensorBusyError`:
        the sensor was already measuring and that gave nothing in time).
        """
        candidates = [s for s in self._sessions.values() if loinc_code in s.profile.loinc]
        if not candidates:
            raise SensorUnavailableError(f"no sensor known to the gateway measures {loinc_code}")
        if not any(s.profile.on_demand for s in candidates):
            raise MeasurementNotAllowedError(
                f"{loinc_code} is measured only when a person takes it "
                f"({', '.join(sorted({_who(s) for s in candidates}))})"
            )
        candidates = [s for s in candidates if s.profile.on_demand]
        ready = [s for s in candidates if s.status.state in READY_STATES]
        if not ready:
            first = candidates[0].status
            raise SensorNotConnectedError(first.address, first.state, first.name)
        sources, start = self._choose(loinc_code, ready, max_burden)
        limit = max(s.profile.measure.timeout_s for s in sources)
        if timeout is not None:
            limit = min(limit, timeout)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(
            loinc_code, frozenset(s.status.address for s in sources), loop.create_future()
        )
        self._waiters.append(waiter)  # before any trigger: a fast result is not missed
        running: _Running | None = None
        try:
            async with asyncio.timeout(limit):
                if start is not None:
                    running = self._running_on(start) or self._start(start)
                    await asyncio.shield(running.trigger)
                return await waiter.future
        except TimeoutError:
            who = " or ".join(_who(s) for s in sources)
            if running is not None and running.found:
                raise SensorBusyError(
                    f"{who} was already measuring and gave no {loinc_code} result within "
                    f"{limit:g} s"
                ) from None
            raise MeasurementTimeoutError(
                f"no {loinc_code} measurement from {who} within {limit:g} s"
            ) from None
        finally:
            self._waiters.remove(waiter)
            if not waiter.future.done():
                waiter.future.cancel()

    def _choose(
        self, code: str, ready: list[DeviceSession], max_burden: Burden
    ) -> tuple[list[DeviceSession], DeviceSession | None]:
        """The sources to wait on, and the one sensor whose measurement must run (or None)."""
        waitable = [s for s in ready if code in s.profile.streamed() or _trigger(s) is None]
        if waitable:
            return waitable, None
        running = [s for s in ready if self._running_on(s) is not None]
        if running:
            return running[:1], running[0]
        by_burden = sorted(ready, key=lambda s: s.profile.measure.burden.rank)
        allowed = [s for s in by_burden if s.profile.measure.burden.rank <= max_burden.rank]
        if not allowed:
            least = by_burden[0]
            raise MeasurementNotAllowedError(
                f"measuring {code} needs a {least.profile.measure.burden} on {_who(least)}, "
                "which this request may not start"
            )
        return allowed[:1], allowed[0]

    def _running_on(self, session: DeviceSession) -> _Running | None:
        """The measurement running on the sensor, unless it ended (new link, past its time)."""
        address = session.status.address
        running = self._measuring.get(address)
        if running is None:
            return None
        if (
            running.reconnects != session.status.reconnects
            or asyncio.get_running_loop().time() > running.deadline
            or (running.trigger.done() and _failed(running.trigger))
        ):
            del self._measuring[address]
            return None
        return running

    def _start(self, session: DeviceSession) -> _Running:
        """Start a measurement on the sensor, shared by every request until it delivers."""
        trigger = _trigger(session)
        assert trigger is not None
        address = session.status.address
        loop = asyncio.get_running_loop()
        running = _Running(
            codes=frozenset(session.profile.loinc),
            reconnects=session.status.reconnects,
            deadline=loop.time() + session.profile.measure.timeout_s,
        )

        async def write() -> None:
            try:
                running.found = not await session.start_measurement(*trigger)
            except SensorError:
                if self._measuring.get(address) is running:
                    del self._measuring[address]
                raise

        running.trigger = asyncio.create_task(write(), name=f"ble-measure-{address}")
        running.trigger.add_done_callback(_retrieve)
        self._measuring[address] = running
        return running


@dataclass
class _Running:
    """A measurement running on a sensor: started by a request, or found running (ATT 0xFE)."""

    codes: frozenset[str]  # the profile's codes: the first of them from the sensor ends it
    reconnects: int  # the session's reconnect count when it began: a new link ends it
    deadline: float  # loop time: past the kind's timeout it is no longer waited for
    found: bool = False  # the device was already measuring (nothing was started)
    trigger: asyncio.Task[None] = field(init=False, repr=False)


def _trigger(session: DeviceSession) -> tuple[str, bytes] | None:
    """The characteristic and value that start a measurement on this device, if it has one."""
    measure = session.profile.measure
    if measure.method != "write" or not measure.uuid or not measure.value:
        return None
    if not session.has_characteristic(measure.uuid):
        return None  # a device without the profile's trigger streams anyway: then just wait
    return measure.uuid, bytes.fromhex(measure.value)


def _who(session: DeviceSession) -> str:
    return f"{session.profile.display} ({session.status.name})"


def _failed(task: asyncio.Task[None]) -> bool:
    return task.cancelled() or task.exception() is not None


def _retrieve(task: asyncio.Task[None]) -> None:
    """The trigger's failure reaches the requests that await it; none may be left."""
    if not task.cancelled():
        task.exception()
