"""One sensor's life: connect, read, sync its clock, subscribe, download stored records, stream.

A :class:`DeviceSession` owns one BLE peripheral for the lifetime of the service: it connects with
bleak-retry-connector, follows the device profile (``device_profiles/*.toml``) and reconnects
forever with capped, jittered backoff. It only uses bleak's public API, so it runs unchanged on
BlueZ, on a USB controller through Bumble, or against the firmware simulator.

Every notification is decoded by the pure codecs; measurements go to a :class:`MeasurementSink`
(the ingest pipeline: FHIR mapping and store). A malformed notification is counted and logged at
debug level and never ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bleak import BleakClient
from bleak.exc import BleakError, BleakGATTProtocolError, BleakGATTProtocolErrorCode
from bleak_retry_connector import BleakNotFoundError, establish_connection

from gateway.backoff import BackoffPolicy
from gateway.ble.errors import MeasureFailure, SensorError, SensorNotConnectedError
from gateway.errors import BedsideError, DecodeError
from gateway.fhir.timeline import ClockAnchor
from gateway.ieee11073 import decode
from gateway.ieee11073.cts import CurrentTime
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.dis import BatteryLevel, DisString, SystemId
from gateway.ieee11073.ghs import Reassembler, StoredHealthObservation
from gateway.ieee11073.racp import (
    FilterType,
    RacpOpCode,
    RacpOperator,
    RacpResponseCode,
    RecordAccessControlPoint,
    RecordFilter,
    report_all_records,
)
from gateway.ieee11073.registry import MeasurementSource
from gateway.profiles import DeviceProfile, full_uuid

if TYPE_CHECKING:
    from bleak.backends.characteristic import BleakGATTCharacteristic
    from bleak.backends.device import BLEDevice

    from gateway.ieee11073.measurement import Measurement

log = logging.getLogger(__name__)

BLUETOOTH_BASE_SUFFIX = "-0000-1000-8000-00805f9b34fb"
CURRENT_TIME_UUID = full_uuid("2A2B")
BATTERY_LEVEL_UUID = full_uuid("2A19")
RACP_TIMEOUT_S = 30.0
LATENCY_WINDOW = 4096
RECONNECT_BACKOFF = BackoffPolicy(base_s=0.5, cap_s=30.0)


class SessionState(enum.StrEnum):
    """What a technician sees per device."""

    DISCOVERED = "discovered"
    CONNECTING = "connecting"
    PAIRING = "pairing"
    CONNECTED = "connected"
    STREAMING = "streaming"
    LOST = "lost"


@dataclass
class SessionStatus:
    """Visible state and counters of one device (the demo view and summary, benchmarks)."""

    address: str
    name: str
    kind: str
    state: SessionState = SessionState.DISCOVERED
    state_since: float = field(default_factory=time.monotonic)
    """When the session entered its state (time.monotonic())."""
    reason: str = ""
    battery: int | None = None
    info: dict[str, str] = field(default_factory=dict)
    system_id: str | None = None
    notifications: int = 0
    observations: int = 0
    decode_errors: int = 0
    ingest_errors: int = 0
    reconnects: int = 0
    stored_records: int = 0
    undated: int = 0
    """Readings without a true date (stamped by a clock never set, or stored without a time
    stamp): kept, never sent."""
    clock_anchor: ClockAnchor | None = None
    """The sensor's clock as read on connecting, before the gateway set it (None: not read)."""
    clock_synced: bool = False
    """The gateway set the sensor's clock on this connection."""
    paired: int = 0
    """Pairings made by this session (a bonded sensor reconnects without one)."""
    last_value_at: float | None = None
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    """Notification received → stored, for the most recent values (benchmarks)."""

    @property
    def clock_offset_s(self) -> float | None:
        """How far the sensor's clock was behind the gateway's when read (negative: ahead), in
        seconds; None when it was not read or never set."""
        anchor = self.clock_anchor
        if anchor is None or not anchor.clock_set:
            return None
        return round(anchor.offset(anchor.gateway_time.tzinfo or dt.UTC).total_seconds(), 3)


class MeasurementSink(Protocol):
    """Where decoded measurements go (the ingest pipeline)."""

    async def __call__(
        self, status: SessionStatus, measurements: tuple[Measurement, ...], *, stored: bool
    ) -> None: ...


def uuid16(uuid: str) -> int | None:
    """The 16-bit form of a Bluetooth-base UUID string, None for a vendor 128-bit UUID."""
    uuid = uuid.lower()
    if uuid.endswith(BLUETOOTH_BASE_SUFFIX) and uuid.startswith("0000"):
        return int(uuid[4:8], 16)
    return None


class DeviceSession:
    """Connects to one device and keeps it streaming until cancelled."""

    def __init__(
        self,
        device: BLEDevice,
        profile: DeviceProfile,
        sink: MeasurementSink,
        *,
        client_backend: type[Any] | None = None,
        lookup_device: Callable[[], BLEDevice | None] | None = None,
        last_record_time: Callable[[str], Awaitable[dt.datetime | None]] | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        on_latency: Callable[[str, float], None] | None = None,
    ) -> None:
        """``on_latency``: told (kind, seconds) of every notification → stored (metrics)."""
        self.device = device
        self.profile = profile
        self.status = SessionStatus(device.address, device.name or device.address, profile.kind)
        self._sink = sink
        self._client_backend = client_backend
        self._lookup_device = lookup_device
        self._last_record_time = last_record_time
        self._clock = clock
        self._on_latency = on_latency
        self._client: BleakClient | None = None
        self._disconnected = asyncio.Event()
        self._queue: asyncio.Queue[tuple[int | str, bytes, float]] = asyncio.Queue()
        self._reassemblers: dict[int, Reassembler[Any]] = {}
        self._racp_responses: asyncio.Queue[RecordAccessControlPoint] = asyncio.Queue()
        self._in_racp_download = False
        self._state_changed = asyncio.Event()

    # -- public -----------------------------------------------------------------------------------

    @property
    def client(self) -> BleakClient | None:
        """The connected client, or None."""
        if self._client is not None and self._client.is_connected:
            return self._client
        return None

    @property
    def link_lost(self) -> asyncio.Event:
        """Set when the current link drops (a new one for every connection)."""
        return self._disconnected

    def has_characteristic(self, uuid: str) -> bool:
        """True when the connected device exposes the characteristic."""
        client = self.client
        return client is not None and self._has(client, uuid)

    async def write(self, uuid: str, value: bytes, *, response: bool = True) -> None:
        """Write to a characteristic of the connected device (measure-on-demand triggers)."""
        client = self.client
        if client is None:
            raise SensorNotConnectedError(self.status.address, self.status.state, self.status.name)
        await client.write_gatt_char(uuid, value, response=response)

    async def start_measurement(self, uuid: str, value: bytes) -> bool:
        """Write a measure-on-demand trigger. False when the device answers that a measurement
        is already running (ATT error 0xFE "Procedure Already in Progress", Bluetooth Core
        Specification Supplement Part B §1.2): its result is on the way, nothing was started.

        Raises :class:`SensorNotConnectedError` when the link is gone, before or under the
        write, and :class:`SensorError` when the device refuses the trigger otherwise.
        """
        try:
            await self.write(uuid, value)
        except BleakGATTProtocolError as exc:
            if exc.code == BleakGATTProtocolErrorCode.PROCEDURE_ALREADY_IN_PROGRESS:
                log.debug("%s: a measurement is already in progress", self.status.name)
                return False
            log.debug("%s: trigger refused: %s", self.status.name, exc)
            raise SensorError(
                f"{self.profile.display} {self.status.name} refused to start a measurement "
                f"(ATT error 0x{int(exc.code):02X})"
            ) from exc
        except (BleakError, OSError, TimeoutError) as exc:
            log.debug("%s: trigger write failed: %s", self.status.name, exc)
            raise SensorError(
                f"the link to {self.profile.display} {self.status.name} failed while starting "
                "a measurement",
                MeasureFailure.NOT_CONNECTED,
            ) from exc
        return True

    async def wait_for_state(self, states: Collection[SessionState]) -> SessionState:
        """Return once the session is in one of ``states`` (now, or after a change)."""
        while True:
            changed = self._state_changed
            if self.status.state in states:
                return self.status.state
            await changed.wait()

    def rebind(self, device: BLEDevice, client_backend: type[Any] | None) -> None:
        """Use a new radio (the adapter was reopened): the device as it found it, its backend.

        The status and its counters carry over; call before :meth:`run` starts again."""
        self.device = device
        self._client_backend = client_backend

    def radio_lost(self, reason: str) -> None:
        """The radio under this session went away: show it, until the next :meth:`run`."""
        self._set_state(SessionState.LOST, reason)

    async def run(self) -> None:
        """Connect, stream, and reconnect forever (until cancelled)."""
        failures = 0
        while True:
            try:
                await self._connect_and_stream()
                failures = 0  # a session that streamed resets the backoff
            except asyncio.CancelledError:
                raise
            except (BleakError, BleakNotFoundError, TimeoutError, BedsideError, OSError) as exc:
                self._set_state(SessionState.LOST, f"{type(exc).__name__}: {exc}")
                log.info("%s: %s", self.status.name, self.status.reason)
            except Exception as exc:  # a bug in a stack below us: keep the other sensors going
                self._set_state(SessionState.LOST, f"unexpected {type(exc).__name__}: {exc}")
                log.exception("%s: session failed; reconnecting", self.status.name)
            finally:
                await self._close()
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                # A cancel that arrived inside a library call which turned it into its own
                # error (bleak-retry-connector does): the session was asked to stop.
                raise asyncio.CancelledError
            self.status.reconnects += 1
            failures += 1
            delay = RECONNECT_BACKOFF.delay(failures)
            log.debug("%s: reconnecting in %.1f s", self.status.name, delay)
            await asyncio.sleep(delay)
            if self._lookup_device is not None:
                self.device = self._lookup_device() or self.device

    # -- connection lifecycle ---------------------------------------------------------------------

    async def _connect_and_stream(self) -> None:
        self._set_state(SessionState.CONNECTING)
        self._disconnected.clear()
        kwargs: dict[str, Any] = {}
        if self._client_backend is not None:
            kwargs["backend"] = self._client_backend
        client = await establish_connection(
            BleakClient,
            self.device,
            self.status.name,
            disconnected_callback=self._on_disconnect,
            ble_device_callback=self._current_device,
            use_services_cache=False,
            **kwargs,
        )
        self._client = client
        self._set_state(SessionState.CONNECTED)
        pump = asyncio.create_task(self._pump(), name=f"ble-pump-{self.status.address}")
        try:
            try:
                await self._set_up(client)
            except BleakGATTProtocolError as exc:
                if exc.code not in SECURITY_ERRORS:
                    raise
                await self._pair(client, exc.code)
                await self._set_up(client)
            self._set_state(SessionState.STREAMING)
            await self._disconnected.wait()
            self._set_state(SessionState.LOST, "disconnected by the device")
        finally:
            await self._queue.join()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _set_up(self, client: BleakClient) -> None:
        """Read, sync the clock, subscribe, fetch stored records, start streaming."""
        await self._read_info(client)
        await self._read_clock(client)
        if self.profile.time_sync:
            await self._sync_time(client)
        await self._subscribe(client)
        if self.profile.stored_records is not None:
            await self._download_stored_records(client)
        if self.profile.ghs is not None:
            await self._write_if_present(
                client, self.profile.ghs.control_point, bytes.fromhex(self.profile.ghs.start)
            )

    async def _pair(self, client: BleakClient, code: int) -> None:
        """The sensor wants an encrypted (or authenticated) link: pair and bond, as the OS
        does on the first such error (LE Secure Connections; a passkey where the sensor
        shows one). A bonded sensor's later links are encrypted with the stored keys."""
        why = "authentication" if code == INSUFFICIENT_AUTHENTICATION else "encryption"
        log.info("%s: the sensor requires %s; pairing", self.status.name, why)
        self._set_state(SessionState.PAIRING, f"the sensor requires {why}")
        await client.pair()
        self.status.paired += 1
        self._set_state(SessionState.CONNECTED)

    def _current_device(self) -> BLEDevice:
        """The freshest advertisement's device (its details may change between connects)."""
        if self._lookup_device is not None:
            return self._lookup_device() or self.device
        return self.device

    def _on_disconnect(self, _client: BleakClient) -> None:
        self._disconnected.set()

    async def _close(self) -> None:
        client, self._client = self._client, None
        self._reassemblers.clear()
        if client is not None and client.is_connected:
            with contextlib.suppress(BleakError, TimeoutError, OSError):
                await client.disconnect()

    def _set_state(self, state: SessionState, reason: str = "") -> None:
        if state is not self.status.state:
            self.status.state_since = time.monotonic()
        self.status.state = state
        self.status.reason = reason
        changed, self._state_changed = self._state_changed, asyncio.Event()
        changed.set()

    def _has(self, client: BleakClient, uuid: str) -> bool:
        return client.services.get_characteristic(uuid) is not None

    async def _write_if_present(self, client: BleakClient, uuid: str, value: bytes) -> None:
        if self._has(client, uuid):
            await client.write_gatt_char(uuid, value, response=True)

    # -- steps ------------------------------------------------------------------------------------

    async def _read_info(self, client: BleakClient) -> None:
        for spec in self.profile.read:
            if not self._has(client, spec.uuid):
                continue
            data = bytes(await client.read_gatt_char(spec.uuid))
            self._handle_read(spec.uuid, data)

    def _handle_read(self, uuid: str, data: bytes) -> None:
        short = uuid16(uuid)
        if short is None:
            return
        try:
            value = decode(short, data)
        except DecodeError as exc:
            self._count_bad(exc)
            return
        except BedsideError:
            return  # a characteristic we read but have no codec for
        if isinstance(value, BatteryLevel):
            self.status.battery = value.level
        elif isinstance(value, DisString):
            self.status.info[value.NAME] = str(value)
        elif isinstance(value, SystemId):
            self.status.system_id = value.eui64

    async def _read_clock(self, client: BleakClient) -> None:
        """Read the sensor's Current Time: the coincident time stamp that places its readings on
        the gateway's timeline (PHD IG "Time-stamps and time synchronization")."""
        self.status.clock_anchor = None
        self.status.clock_synced = False
        if not self._has(client, CURRENT_TIME_UUID):
            return
        try:
            data = bytes(await client.read_gatt_char(CURRENT_TIME_UUID))
        except BleakGATTProtocolError as exc:  # read not permitted: the clock stays unknown
            log.debug("%s: Current Time not readable: %s", self.status.name, exc)
            return
        read_at = self._clock()  # after the read: within one ATT round trip
        try:
            device_time = CurrentTime.from_bytes(data).to_datetime()
        except DecodeError as exc:
            self._count_bad(exc)
            return
        if device_time is None:  # "unknown" date: a clock with a time fault
            return
        self.status.clock_anchor = ClockAnchor(device_time, read_at)
        offset = self.status.clock_anchor.offset(read_at.tzinfo or dt.UTC).total_seconds()
        log.debug("%s: sensor clock %s, %.3f s behind", self.status.name, device_time, offset)

    async def _sync_time(self, client: BleakClient) -> None:
        if self._has(client, CURRENT_TIME_UUID):
            now = self._clock()
            await client.write_gatt_char(
                CURRENT_TIME_UUID, bytes(CurrentTime.from_datetime(now)), response=True
            )
            self.status.clock_synced = True

    async def _subscribe(self, client: BleakClient) -> None:
        subscriptions = list(self.profile.subscribe)
        if self.profile.ghs is not None:
            subscriptions.append(self.profile.ghs.live_subscription)
            subscriptions.append(self.profile.ghs.control_point_subscription)
        if self.profile.stored_records is not None:
            subscriptions.append(self.profile.stored_records.racp_subscription)
        for spec in subscriptions:
            if not self._has(client, spec.uuid):
                log.debug("%s: no characteristic %s", self.status.name, spec.uuid)
                continue
            await client.start_notify(spec.uuid, self._notification_handler(spec.uuid))
        if self._has(client, BATTERY_LEVEL_UUID):
            with contextlib.suppress(BleakError):
                await client.start_notify(
                    BATTERY_LEVEL_UUID, self._notification_handler(BATTERY_LEVEL_UUID)
                )

    def _notification_handler(
        self, uuid: str
    ) -> Callable[[BleakGATTCharacteristic, bytearray], None]:
        key: int | str = uuid16(uuid) or uuid

        def on_value(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            self.status.notifications += 1
            self._queue.put_nowait((key, bytes(data), time.monotonic()))

        return on_value

    async def _download_stored_records(self, client: BleakClient) -> None:
        """RACP: report stored records at or after the newest one stored (all when none is).

        A sensor that does not support the time filter answers with an error response code; the
        gateway then asks for all records (the store drops those it already has).
        """
        spec = self.profile.stored_records
        assert spec is not None
        if not self._has(client, spec.racp):
            return
        since = None
        if self._last_record_time is not None:
            since = await self._last_record_time(self.status.address)
        if since is not None:  # the device's clock runs in the gateway's zone (time sync)
            since = since.astimezone(self._clock().tzinfo)
        code = await self._racp(client, spec.racp, report_records_since(since))
        if since is not None and code in RACP_FILTER_UNSUPPORTED:
            log.debug("%s: time filter not supported (%s); asking for all", self.status.name, code)
            code = await self._racp(client, spec.racp, report_records_since(None))
        log.info("%s: stored records download: %s", self.status.name, code)

    async def _racp(
        self, client: BleakClient, uuid: str, request: RecordAccessControlPoint
    ) -> RacpResponseCode | int | None:
        """Write one RACP request and wait for its response code (records arrive before it)."""
        while not self._racp_responses.empty():
            self._racp_responses.get_nowait()
        self._in_racp_download = True
        try:
            await client.write_gatt_char(uuid, bytes(request), response=True)
            async with asyncio.timeout(RACP_TIMEOUT_S):
                response = await self._racp_responses.get()
            await self._queue.join()  # the records were queued before the response
        finally:
            self._in_racp_download = False
        return response.response_code

    # -- the notification pipeline ----------------------------------------------------------------

    async def _pump(self) -> None:
        """Decode queued notifications in arrival order and hand measurements to the sink."""
        while True:
            key, data, received = await self._queue.get()
            try:
                if await self._handle_notification(key, data):
                    latency = time.monotonic() - received
                    self.status.latencies_s.append(latency)
                    if self._on_latency is not None:
                        self._on_latency(self.status.kind, latency)
            except Exception:  # the store or mapping failed: keep the session, say it loudly
                self.status.ingest_errors += 1
                log.exception("%s: could not ingest a value of %s", self.status.name, key)
            finally:
                self._queue.task_done()

    def _decode(self, key: int, data: bytes) -> object | None:
        """The decoded value, None while a GHS observation is incomplete or the value is bad."""
        try:
            if key not in GHS_REASSEMBLERS:
                return decode(key, data)
            reassembler = self._reassemblers.get(key)
            if reassembler is None:
                reassembler = self._reassemblers[key] = GHS_REASSEMBLERS[key]()
            value = reassembler.feed(data)
        except DecodeError as exc:
            self._count_bad(exc)
            return None
        except BedsideError as exc:  # a characteristic without a codec
            log.debug("%s: %s", self.status.name, exc)
            return None
        return value.observation if isinstance(value, StoredHealthObservation) else value

    async def _handle_notification(self, key: int | str, data: bytes) -> bool:
        """Decode one value and hand its measurements to the sink; True when it stored any."""
        if not isinstance(key, int):
            return False  # vendor characteristics carry no measurements
        value = self._decode(key, data)
        if isinstance(value, RecordAccessControlPoint):
            if value.op_code is RacpOpCode.RESPONSE_CODE:
                self._racp_responses.put_nowait(value)
            return False
        if isinstance(value, BatteryLevel):
            self.status.battery = value.level
        if not isinstance(value, MeasurementSource):
            return False
        measurements = value.measurements()
        if not measurements:
            return False
        self.status.observations += len(measurements)
        self.status.last_value_at = time.monotonic()
        stored = self._in_racp_download and key == self._stored_measurement_uuid16
        if stored:
            self.status.stored_records += 1
        await self._sink(self.status, measurements, stored=stored)
        return True

    @property
    def _stored_measurement_uuid16(self) -> int | None:
        spec = self.profile.stored_records
        return uuid16(spec.measurement) if spec is not None else None

    def _count_bad(self, exc: DecodeError) -> None:
        self.status.decode_errors += 1
        log.debug("%s: malformed value: %s", self.status.name, exc)


INSUFFICIENT_AUTHENTICATION = BleakGATTProtocolErrorCode.INSUFFICIENT_AUTHENTICATION
# ATT errors that mean "pair first" (Core Specification Vol 3 Part F §3.4.1.1).
SECURITY_ERRORS = frozenset(
    {
        BleakGATTProtocolErrorCode.INSUFFICIENT_AUTHENTICATION,
        BleakGATTProtocolErrorCode.INSUFFICIENT_ENCRYPTION,
    }
)
RACP_FILTER_UNSUPPORTED = frozenset(
    {
        RacpResponseCode.OPERATOR_NOT_SUPPORTED,
        RacpResponseCode.OPERAND_NOT_SUPPORTED,
        RacpResponseCode.INVALID_OPERAND,
    }
)
GHS_REASSEMBLERS: dict[int, Callable[[], Reassembler[Any]]] = {
    0x2B8B: Reassembler.live,
    0x2BDD: Reassembler.stored,
}


def report_records_since(since: dt.datetime | None) -> RecordAccessControlPoint:
    """RACP request for records at or after ``since`` (device wall time), or all of them."""
    if since is None:
        return report_all_records()
    return RecordAccessControlPoint(
        RacpOpCode.REPORT_STORED_RECORDS,
        RacpOperator.GREATER_THAN_OR_EQUAL,
        RecordFilter(FilterType.USER_FACING_TIME, (DateTime.from_datetime(since),)),
    )
