"""The simulated sensor: one Bumble ``Device`` (a GATT server) on its own controller.

``Sensor`` holds what every sensor kind shares: the Device Information, Battery and Current Time
services, connectable advertising of the kind's service UUIDs and name, one central at a time,
subscription tracking, notify/indicate helpers that never block on a lost link, the device clock,
fault injection and the statistics the tests compare. The kinds (``firmware_sim.devices``) add
their own services and measurement loops.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ClassVar, Final

from bumble import gatt
from bumble.att import ATT_Error
from bumble.core import UUID
from bumble.device import (
    AdvertisingEventProperties,
    AdvertisingParameters,
    AdvertisingSet,
    AdvertisingType,
    Connection,
    Device,
)
from bumble.hci import Address, OwnAddressType
from bumble.keys import JsonKeyStore
from bumble.transport.common import TransportSink, TransportSource

from firmware_sim import characteristics as ch
from firmware_sim.bluetooth import (
    AD_APPEARANCE,
    AD_COMPLETE_16_BIT_UUIDS,
    AD_COMPLETE_LOCAL_NAME,
    AD_FLAGS,
    AD_FLAGS_LE_GENERAL_NO_BREDR,
    ATT_INVALID_ATTRIBUTE_LENGTH,
    ATT_OUT_OF_RANGE,
    ATT_VALUE_NOT_SUPPORTED,
    LEGACY_ADVERTISING_MAX,
    ad_structure,
    uuid16,
)
from firmware_sim.clock import DeviceClock
from firmware_sim.context import SensorContext, SensorStats
from firmware_sim.faults import CORRUPTION_COUNTERS, Builder, Corruption, PacketFaults
from firmware_sim.management import Management
from firmware_sim.security import SecurityLevel, link_is_secure, pairing_config
from firmware_sim.security import permissions as security_permissions

logger = logging.getLogger(__name__)

# -- Vendor "start measurement now" service: what device_profiles/*.toml name for measure-on-demand
VENDOR_SERVICE: Final = "9a1c0001-5b3e-4f6a-8d2c-7e4b1f0a9c01"
VENDOR_START_MEASUREMENT: Final = "9a1c0002-5b3e-4f6a-8d2c-7e4b1f0a9c01"
VENDOR_START: Final = b"\x01"

NAME_SUFFIX_DIGITS: Final = 4  # "Bedside BP 1C83": the address's last four hex digits
SERIAL_SUFFIX_DIGITS: Final = 6  # "BS-BP300-A41C83": its last six

BOOT_OFFSET: Final = dt.timedelta(hours=4)  # the unset clock has been running for a while
DISCONNECT_TIMEOUT_S: Final = 2.0
MAX_CATCH_UP_INTERVALS: Final = 5

MANUFACTURER: Final = "Bedside Devices (simulated)"
HARDWARE_REVISION: Final = "rev C"
FACTORY_VERSION: Final = "1.4.2"  # the MCUboot image a sensor starts with
FIRMWARE_BUILD: Final = "(Zephyr 3.7.0, bedside-sim)"  # after the version in DIS
SOFTWARE_REVISION: Final = "bedside-sim 0.1.0"


class Sensor(abc.ABC):
    """Base class of the four kinds; see the module docstring."""

    KIND: ClassVar[str]
    LABEL: ClassVar[str]
    MODEL: ClassVar[str]
    PRODUCT_ID: ClassVar[int]
    APPEARANCE: ClassVar[int]
    ADVERTISED_SERVICES: ClassVar[tuple[int, ...]]

    def __init__(
        self, context: SensorContext, hci_source: TransportSource, hci_sink: TransportSink
    ) -> None:
        self.kind = self.KIND
        self.address = context.address
        suffix = context.address.replace(":", "")[-NAME_SUFFIX_DIGITS:]
        self.name = f"Bedside {self.LABEL} {suffix}"
        self.stats = SensorStats()
        self.scenario = context.scenario
        self.timeline = context.timeline
        self._index = context.index
        self._start_time = context.start_time
        self._loop = asyncio.get_running_loop()
        self.clock = DeviceClock(
            self._loop.time,
            BOOT_OFFSET,
            context.start_time,
            drift_ppm=context.scenario.clock_drift_ppm,
        )
        error_s = context.scenario.clock_set_error_s
        if error_s is not None:  # set long ago, in UTC wall time (the gateway's default zone)
            true_now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            self.clock.set(true_now + dt.timedelta(seconds=error_s), ch.ADJUST_REASON_MANUAL)
        self.security = SecurityLevel(context.scenario.security.level(self.KIND))
        self.connection: Connection | None = None
        self._subscriptions: dict[int, tuple[bool, bool]] = {}
        self._faults = PacketFaults(context.scenario.faults)
        self._battery = float(context.scenario.faults.battery_start)
        self._dropping = False
        self._stopping = False
        self._advertising_paused_until = 0.0
        self._advertising_set: AdvertisingSet | None = None
        self._runner: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._disconnected = asyncio.Event()
        self._disconnected.set()
        self.device = Device.with_hci(self.name, Address(context.address), hci_source, hci_sink)
        if context.bonds_file is not None:
            self.device.keystore = JsonKeyStore(self.address, str(context.bonds_file))
        if self.security is not SecurityLevel.NONE:
            passkey = context.scenario.security.passkey
            self.device.pairing_config_factory = lambda _connection: pairing_config(
                self.name, self.security, passkey
            )
        self.battery_char = self.characteristic(
            ch.BATTERY_LEVEL,
            gatt.Characteristic.Properties.READ | gatt.Characteristic.Properties.NOTIFY,
            read=lambda _conn: ch.battery_level(self.battery),
        )
        self.current_time_char = self.characteristic(
            ch.CURRENT_TIME,
            gatt.Characteristic.Properties.READ
            | gatt.Characteristic.Properties.WRITE
            | gatt.Characteristic.Properties.NOTIFY,
            read=lambda _conn: ch.current_time(self.clock.now(), self.clock.adjust_reason),
            write=self._on_current_time_write,
        )
        self.management = Management(self, FACTORY_VERSION)
        self.device.add_services(
            [
                self._device_information_service(),
                gatt.Service(uuid16(0x180F), [self.battery_char]),
                gatt.Service(uuid16(0x1805), [self.current_time_char]),
                *self.services(),
                self.management.service,
            ]
        )
        self.device.on("connection", self._on_connection)
        self.device.on("characteristic_subscription", self._on_subscription)

    # -- to be provided by the kinds ---------------------------------------------------------------
    @abc.abstractmethod
    def services(self) -> Sequence[gatt.Service]:
        """The kind's GATT services (called once, while the sensor is built)."""

    @abc.abstractmethod
    def loops(self) -> Sequence[Callable[[], Coroutine[Any, Any, None]]]:
        """The kind's measurement loops, run for the sensor's lifetime."""

    def burst_packet(self) -> tuple[gatt.Characteristic[bytes], bytes] | None:
        """A valid notification to repeat in a burst (None: the kind has none)."""
        return None

    def on_disconnected(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Reset per-connection state (e.g. live observation mode); nothing by default."""

    # -- public API --------------------------------------------------------------------------------
    @property
    def battery(self) -> int:
        return max(0, min(100, round(self._battery)))

    @property
    def connected(self) -> bool:
        return self.connection is not None

    def sim_time(self) -> float:
        """Seconds of simulated time (shared by all sensors of a simulator)."""
        return self._loop.time() - self._start_time

    async def start(self) -> None:
        await self.device.power_on()
        await self._start_advertising()
        self._runner = asyncio.create_task(self._run(), name=f"{self.name}: run")

    async def stop(self) -> None:
        """Stop loops, drop the link, stop advertising, power off; re-raises a loop's failure."""
        self._stopping = True
        failure: BaseException | None = None
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # noqa: BLE001 - re-raised below once the sensor is off
                failure = exc
        await self._cancel_background()
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.connection.disconnect(), DISCONNECT_TIMEOUT_S)
        await self._stop_advertising()
        await self.device.power_off()
        await self._cancel_background()
        if failure is not None:
            raise failure

    async def disconnect(self) -> bool:
        """Drop the link from the sensor's side (as a sensor going out of range would)."""
        return await self._drop_link(pause_s=0.0)

    async def restart(self, pause_s: float, boot: Callable[[], str]) -> None:
        """A reset: ``boot`` runs (MCUboot), the link drops, advertising resumes after pause_s."""
        outcome = boot()
        await self._drop_link(pause_s)
        logger.info("%s: reset, MCUboot: %s", self.name, outcome)

    # -- GATT helpers ------------------------------------------------------------------------------
    def characteristic(
        self,
        uuid: int | str,
        properties: gatt.Characteristic.Properties,
        value: bytes | None = None,
        *,
        read: Callable[[Connection], bytes] | None = None,
        write: Callable[[Connection, bytes], None] | None = None,
    ) -> gatt.Characteristic[bytes]:
        permissions = gatt.Characteristic.Permissions(0)
        if properties & gatt.Characteristic.Properties.READ:
            permissions |= gatt.Characteristic.Permissions.READABLE
        if properties & (
            gatt.Characteristic.Properties.WRITE
            | gatt.Characteristic.Properties.WRITE_WITHOUT_RESPONSE
        ):
            permissions |= gatt.Characteristic.Permissions.WRITEABLE
        permissions |= security_permissions(
            self.security,
            readable=bool(permissions & gatt.Characteristic.Permissions.READABLE),
            writeable=bool(permissions & gatt.Characteristic.Permissions.WRITEABLE),
        )
        attribute_value: gatt.CharacteristicValue[bytes] | bytes | None = value
        if read is not None or write is not None:
            attribute_value = gatt.CharacteristicValue(read=read, write=write)
        return gatt.Characteristic(
            uuid16(uuid) if isinstance(uuid, int) else UUID(uuid),
            properties,
            permissions,
            attribute_value,
        )

    def _device_information_service(self) -> gatt.Service:
        read = gatt.Characteristic.Properties.READ
        address = bytes.fromhex(self.address.replace(":", ""))
        serial = f"{self.MODEL}-{address.hex().upper()[-SERIAL_SUFFIX_DIGITS:]}"
        values = (
            (ch.MANUFACTURER_NAME, MANUFACTURER.encode()),
            (ch.MODEL_NUMBER, self.MODEL.encode()),
            (ch.SERIAL_NUMBER, serial.encode()),
            (ch.HARDWARE_REVISION, HARDWARE_REVISION.encode()),
            (ch.SOFTWARE_REVISION, SOFTWARE_REVISION.encode()),
            (ch.SYSTEM_ID, ch.system_id(address)),
            (ch.PNP_ID, ch.pnp_id(self.PRODUCT_ID, 0x0142)),
        )
        firmware = self.characteristic(  # the image MCUboot booted (firmware_sim/management.py)
            ch.FIRMWARE_REVISION,
            read,
            read=lambda _conn: f"{self.management.version} {FIRMWARE_BUILD}".encode(),
        )
        return gatt.Service(
            uuid16(0x180A),
            [*(self.characteristic(uuid, read, value) for uuid, value in values), firmware],
        )

    def vendor_service(self) -> gatt.Service:
        """The vendor "start a measurement now" service (bp required; thermo and spo2 too)."""
        start = self.characteristic(
            VENDOR_START_MEASUREMENT,
            gatt.Characteristic.Properties.WRITE,
            write=self._on_vendor_write,
        )
        return gatt.Service(UUID(VENDOR_SERVICE), [start])

    def _on_vendor_write(self, _connection: Connection, value: bytes) -> None:
        if len(value) != len(VENDOR_START):
            raise ATT_Error(ATT_INVALID_ATTRIBUTE_LENGTH)
        if value != VENDOR_START:
            raise ATT_Error(ATT_VALUE_NOT_SUPPORTED)
        self.start_on_demand()
        self.stats.on_demand += 1

    def start_on_demand(self) -> None:
        """Begin a measurement now; raise ATT_Error to reject the request."""
        raise ATT_Error(ATT_VALUE_NOT_SUPPORTED)

    def _on_current_time_write(self, _connection: Connection, value: bytes) -> None:
        if len(value) != ch.CURRENT_TIME_SIZE:
            raise ATT_Error(ATT_INVALID_ATTRIBUTE_LENGTH)
        try:
            when, reason = ch.parse_current_time(value)
        except ValueError as exc:
            raise ATT_Error(ATT_OUT_OF_RANGE) from exc
        self.clock.set(when, reason)
        self.stats.clock_writes += 1

    # -- connection and subscription state ---------------------------------------------------------
    def _on_connection(self, connection: Connection) -> None:
        self.connection = connection
        self._subscriptions.clear()
        self._disconnected.clear()
        self.stats.connections += 1
        connection.on("disconnection", lambda _reason: self._on_disconnection(connection))
        connection.on("pairing", lambda _keys: self._on_paired())
        connection.on(
            "connection_encryption_change", lambda: self._on_encryption_change(connection)
        )

    def _on_paired(self) -> None:
        self.stats.pairings += 1

    def _on_encryption_change(self, connection: Connection) -> None:
        if connection.is_encrypted:
            self.stats.encrypted_links += 1

    def _on_disconnection(self, connection: Connection) -> None:
        if self.connection is not connection:
            return
        self.connection = None
        self._subscriptions.clear()
        self._disconnected.set()
        if not self._dropping:
            self.stats.remote_disconnects += 1
        self.on_disconnected()
        self.management.on_disconnected()
        if not self._stopping:
            self.spawn(self._resume_advertising(), "resume advertising")

    def _on_subscription(
        self,
        connection: Connection,
        characteristic: gatt.Characteristic[bytes],
        notify_enabled: bool,
        indicate_enabled: bool,
    ) -> None:
        if connection is self.connection:
            self._subscriptions[characteristic.handle] = (notify_enabled, indicate_enabled)

    def subscribed(self, characteristic: gatt.Characteristic[bytes], *, indicate: bool) -> bool:
        """Whether the central enabled it; False once the sensor started dropping the link (it
        sends nothing more on a link it is closing, so nothing it counts gets lost in flight)."""
        notify_on, indicate_on = self._subscriptions.get(characteristic.handle, (False, False))
        if self.connection is None or self._dropping:
            return False
        if not link_is_secure(self.connection, self.security):
            return False  # the client configuration is kept; the data waits for a secure link
        return indicate_on if indicate else notify_on

    def subscribed_any(self, characteristic: gatt.Characteristic[bytes]) -> bool:
        return self.subscribed(characteristic, indicate=False) or self.subscribed(
            characteristic, indicate=True
        )

    @property
    def att_mtu(self) -> int:
        return self.connection.att_mtu if self.connection is not None else 23

    # -- sending -----------------------------------------------------------------------------------
    async def notify(self, characteristic: gatt.Characteristic[bytes], value: bytes) -> bool:
        connection = self.connection
        if connection is None or not self.subscribed(characteristic, indicate=False):
            return False
        await self.device.notify_subscriber(connection, characteristic, value)
        self.stats.notifications += 1
        return True

    async def indicate(self, characteristic: gatt.Characteristic[bytes], value: bytes) -> bool:
        """Indicate and wait for the confirmation; False when not subscribed or the link drops."""
        connection = self.connection
        if connection is None or not self.subscribed(characteristic, indicate=True):
            return False
        indication = asyncio.ensure_future(
            self.device.indicate_subscriber(connection, characteristic, value)
        )
        link_lost = asyncio.ensure_future(self._disconnected.wait())
        try:
            await asyncio.wait({indication, link_lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            link_lost.cancel()
            if not indication.done():
                indication.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link_lost
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await indication
        if indication.cancelled() or indication.exception() is not None:
            return False
        self.stats.indications += 1
        return True

    async def send_or_notify(
        self, characteristic: gatt.Characteristic[bytes], value: bytes
    ) -> bool:
        """Notify when notifications are enabled, else indicate (for notify|indicate chars)."""
        if self.subscribed(characteristic, indicate=False):
            return await self.notify(characteristic, value)
        return await self.indicate(characteristic, value)

    async def send_measurement(
        self, characteristic: gatt.Characteristic[bytes], build: Builder, *, indicate: bool
    ) -> bool:
        """Send one measurement packet, applying the scenario's packet faults."""
        if not self.subscribed(characteristic, indicate=indicate):
            return False
        value, applied = build(self.management.corruption(self._faults.next()))
        sent = await (self.indicate if indicate else self.notify)(characteristic, value)
        if sent and applied is not Corruption.NONE:
            counter = CORRUPTION_COUNTERS[applied]
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        return sent

    # -- advertising -------------------------------------------------------------------------------
    def advertised_services(self) -> tuple[int, ...]:
        return self.ADVERTISED_SERVICES

    def advertising_data(self) -> bytes:
        uuids = b"".join(u.to_bytes(2, "little") for u in self.advertised_services())
        data = (
            ad_structure(AD_FLAGS, bytes([AD_FLAGS_LE_GENERAL_NO_BREDR]))
            + ad_structure(AD_COMPLETE_16_BIT_UUIDS, uuids)
            + ad_structure(AD_COMPLETE_LOCAL_NAME, self.name.encode())
        )
        if len(data) > LEGACY_ADVERTISING_MAX:
            raise ValueError(f"{self.name}: advertising data {len(data)} bytes > 31")
        return data

    def scan_response_data(self) -> bytes:
        return ad_structure(AD_APPEARANCE, self.APPEARANCE.to_bytes(2, "little"))

    async def _start_advertising(self) -> None:
        interval = self.scenario.advertising_interval_ms
        if not self.device.supports_le_extended_advertising:
            await self.device.start_advertising(
                advertising_type=AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE,
                advertising_data=self.advertising_data(),
                scan_response_data=self.scan_response_data(),
                advertising_interval_min=interval,
                advertising_interval_max=interval,
            )
            return
        if self._advertising_set is None:
            self._advertising_set = await self.device.create_advertising_set(
                advertising_parameters=AdvertisingParameters(
                    advertising_event_properties=AdvertisingEventProperties.from_advertising_type(
                        AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE
                    ),
                    primary_advertising_interval_min=interval,
                    primary_advertising_interval_max=interval,
                    own_address_type=OwnAddressType.RANDOM,
                ),
                random_address=self.device.random_address,
                advertising_data=self.advertising_data(),
                scan_response_data=self.scan_response_data(),
                auto_start=True,
                auto_restart=False,
            )
        elif not self._advertising_set.enabled:
            await self._advertising_set.start()

    async def _stop_advertising(self) -> None:
        with contextlib.suppress(Exception):
            if self._advertising_set is not None:
                if self._advertising_set.enabled:
                    await self._advertising_set.stop()
            elif self.device.is_advertising:
                await self.device.stop_advertising()

    async def _resume_advertising(self) -> None:
        delay = self._advertising_paused_until - self._loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if self.connection is None and not self._stopping:
            await self._start_advertising()

    async def _drop_link(self, pause_s: float) -> bool:
        connection = self.connection
        if connection is None:
            return False
        self._advertising_paused_until = self._loop.time() + pause_s
        self._dropping = True
        try:
            await connection.disconnect()
        finally:
            self._dropping = False
        self.stats.disconnects += 1
        if pause_s > 0:
            self.stats.advertising_pauses += 1
        return True

    # -- lifetime ----------------------------------------------------------------------------------
    def spawn(self, coroutine: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine, name=f"{self.name}: {what}")
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("%s failed", task.get_name(), exc_info=exc)

    async def _cancel_background(self) -> None:
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        faults = self.scenario.faults
        loops: list[Callable[[], Coroutine[Any, Any, None]]] = list(self.loops())
        if faults.battery_drain_per_min > 0:
            loops.append(self._battery_loop)
        if faults.disconnect_every_s is not None:
            loops.append(self._disconnect_loop)
        if faults.burst_every_s is not None:
            loops.append(self._burst_loop)
        if faults.battery_change_every_s is not None:
            loops.append(self._battery_change_loop)
        async with asyncio.TaskGroup() as group:
            for loop in loops:
                group.create_task(loop(), name=f"{self.name}: {loop.__name__}")

    async def periodic(
        self, interval: float, action: Callable[[], Awaitable[None]], *, phase: float = 0.0
    ) -> None:
        """Run ``action`` every ``interval`` seconds on absolute deadlines (no drift); after a
        stall it catches up at most a few ticks."""
        deadline = self._loop.time() + phase + interval
        while True:
            await asyncio.sleep(max(0.0, deadline - self._loop.time()))
            await action()
            deadline += interval
            behind = self._loop.time() - deadline
            if behind > MAX_CATCH_UP_INTERVALS * interval:
                deadline += (behind // interval) * interval

    async def _battery_loop(self) -> None:
        faults = self.scenario.faults
        step_s = 1.0
        drain_per_step = faults.battery_drain_per_min * step_s / 60.0

        async def drain() -> None:
            before = self.battery
            self._battery = max(1.0, self._battery - drain_per_step)
            after = self.battery
            if after != before:
                if before >= faults.low_battery_threshold > after:
                    self.stats.low_battery += 1
                await self.notify(self.battery_char, ch.battery_level(after))

        await self.periodic(step_s, drain)

    async def _disconnect_loop(self) -> None:
        faults = self.scenario.faults
        every = faults.disconnect_every_s
        if every is None:  # pragma: no cover - the loop only runs when configured
            return

        async def drop() -> None:
            await self._drop_link(faults.advertising_pause_s)

        await self.periodic(every, drop, phase=(self._index * every / 4.0) % every)

    async def _battery_change_loop(self) -> None:
        faults = self.scenario.faults
        every = faults.battery_change_every_s
        if every is None:  # pragma: no cover - the loop only runs when configured
            return

        async def change() -> None:
            self.clock.power_cycle()
            self._battery = 100.0
            self.stats.battery_changes += 1
            await self._drop_link(faults.advertising_pause_s)

        await self.periodic(every, change)

    async def _burst_loop(self) -> None:
        faults = self.scenario.faults
        every = faults.burst_every_s
        if every is None:  # pragma: no cover - the loop only runs when configured
            return

        async def burst() -> None:
            packet = self.burst_packet()
            if packet is None:
                return
            characteristic, value = packet
            sent = 0
            for _ in range(faults.burst_size):
                if not await self.notify(characteristic, value):
                    break
                sent += 1
            if sent:
                self.stats.bursts += 1
                self.stats.burst_notifications += sent

        await self.periodic(every, burst, phase=self._index * 0.37)
