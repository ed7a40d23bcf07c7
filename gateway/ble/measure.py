"""Measure on demand: the next value of a code from ONE source (docs/architecture.md, "Measure
on demand").

:class:`OnDemand` works on the sensor manager's sessions: a sensor that streams the code anyway is
asked first (wait for its next value, no trigger); a sensor whose measurement must be started
(a cuff, a spot-check) only when no streaming source is ready, the least burdensome
(``[measure] burden`` of the device profiles), never more than one per request; a measurement
already running (started by an earlier request, or found running: ATT 0xFE) is waited for, and
concurrent requests for a code share one measurement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.ble.errors import (
    MeasurementNotAllowedError,
    MeasurementTimeoutError,
    SensorBusyError,
    SensorError,
    SensorNotConnectedError,
    SensorUnavailableError,
)
from gateway.ble.session import SessionState
from gateway.profiles import Burden

if TYPE_CHECKING:
    from gateway.ble.session import DeviceSession

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


class OnDemand:
    """Measurements on demand over ``sessions`` (the manager's, by address; read, never
    changed here)."""

    def __init__(self, sessions: Mapping[str, DeviceSession]) -> None:
        self._sessions = sessions
        self._waiters: list[_Waiter] = []
        self._measuring: dict[str, _Running] = {}  # address → the measurement running on it

    def close(self) -> None:
        """Cancel every waiting request and running trigger (the manager stops)."""
        for waiter in self._waiters:
            waiter.future.cancel()
        for running in self._measuring.values():
            running.trigger.cancel()

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
        return await self._take(loinc_code, sources, start, timeout)

    async def measure_from(self, session: DeviceSession) -> Mapping[str, Any]:
        """The next value of the sensor's first code, from this sensor alone: its next value
        if it streams the code, else a measurement started (or the one running) on it."""
        if not session.profile.on_demand or not session.profile.loinc:
            raise MeasurementNotAllowedError(
                f"{_who(session)} measures only when a person takes a reading on it"
            )
        status = session.status
        if status.state not in READY_STATES:
            raise SensorNotConnectedError(status.address, status.state, status.name)
        code = session.profile.loinc[0]
        streams = code in session.profile.streamed() or _trigger(session) is None
        return await self._take(code, [session], None if streams else session, None)

    async def _take(
        self,
        loinc_code: str,
        sources: list[DeviceSession],
        start: DeviceSession | None,
        timeout: float | None,  # noqa: ASYNC109 - the callers' timeout
    ) -> Mapping[str, Any]:
        """Wait for ``loinc_code`` from ``sources``, starting a measurement on ``start``."""
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
