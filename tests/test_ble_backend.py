"""bleak over Bumble (gateway/ble/bumble/, gateway/ble/transport.py), over a real Bumble stack.

Sensors are Bumble devices with GATT servers on virtual controllers attached to a Bumble
``LocalLink``; the gateway side is another virtual controller on the same link, reached through an
in-memory HCI pipe (or, in one test, through Bumble's TCP transports). The gateway side is driven
only through bleak's public API and ``bleak_retry_connector.establish_connection``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import bleak_retry_connector
import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
)
from bleak.uuids import normalize_uuid_16
from bleak_retry_connector import BleakNotFoundError, establish_connection
from bumble.att import ATT_Error, Attribute
from bumble.controller import Controller
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import (
    GATT_CHARACTERISTIC_ATTRIBUTE_TYPE,
    Characteristic,
    CharacteristicValue,
    Service,
)
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ble.bumble import BleakBackends, BleakClientBumble, BleakScannerBumble, BumbleAdapter
from gateway.ble.bumble import adapter as adapter_module
from gateway.ble.bumble.advertising import (
    BASE_UUID_TAIL,
    AdvertisementFields,
    parse_ad_structures,
    uuid_from_le_bytes,
)
from gateway.ble.bumble.client import bleak_uuid
from gateway.ble.settings import hci_transport_spec
from gateway.ble.transport import BLUEZ, open_link
from gateway.errors import ConfigError

WAIT_S = 10.0  # upper bound on any event awaited below; never a fixed sleep
ADVERTISING_INTERVAL_MS = 20.0

GAP = normalize_uuid_16(0x1800)
GATT = normalize_uuid_16(0x1801)
DIS = normalize_uuid_16(0x180A)
HRS = normalize_uuid_16(0x180D)
BPS = normalize_uuid_16(0x1810)
HTS = normalize_uuid_16(0x1809)
CCCD = normalize_uuid_16(0x2902)
HEART_RATE_MEASUREMENT = normalize_uuid_16(0x2A37)
BODY_SENSOR_LOCATION = normalize_uuid_16(0x2A38)
HEART_RATE_CONTROL_POINT = normalize_uuid_16(0x2A39)
MANUFACTURER_NAME = normalize_uuid_16(0x2A29)
BLOOD_PRESSURE_MEASUREMENT = normalize_uuid_16(0x2A35)
VENDOR_SERVICE = "a3c87500-8ed3-4bdf-8a39-a01bebede295"
VENDOR_WRITE = "a3c87501-8ed3-4bdf-8a39-a01bebede295"
VENDOR_LONG = "a3c87502-8ed3-4bdf-8a39-a01bebede295"
VENDOR_SLOW = "a3c87503-8ed3-4bdf-8a39-a01bebede295"  # answers a read only when the test says so

# Published vectors (docs/standards.md): a Heart Rate Measurement and a Blood Pressure Measurement.
HRM_VECTOR = bytes.fromhex("1E5532002100")
BPM_VECTOR = bytes.fromhex("1E8A00580078000000041114293B3C00012700")
LONG_VALUE = bytes(range(256)) + bytes(44)  # 300 bytes: needs Read Blob after the first Read
MANUFACTURER = b"Bedside Test Devices"
RESET_ENERGY_EXPENDED = b"\x01"  # HRS §3.3.1: the one Heart Rate Control Point value
CONTROL_POINT_NOT_SUPPORTED = 0x80  # HRS §3.3.1.1: ATT error for any other value

HRM_ADDRESS = "F1:00:00:00:00:01"
HRM2_ADDRESS = "F1:00:00:00:00:02"
THERMO_ADDRESS = "F2:00:00:00:00:03"
ABSENT_ADDRESS = "F0:0D:00:00:00:99"

# Advertising data, AD structures as in CSS v11 Part A §1: length, type, data.
# Flags LE General Discoverable + BR/EDR not supported; complete 16-bit UUIDs 180D 1810; complete
# local name "HRM-1"; TX power -8 dBm; manufacturer data, company 0xFFFF (the SIG's test id).
HRM_ADV = bytes.fromhex("020106 05030D181018 060948524D2D31 020AF8 05FFFFFF0102")
HRM_EXPECTED = AdvertisementData(
    local_name="HRM-1",
    manufacturer_data={0xFFFF: b"\x01\x02"},
    service_data={},
    service_uuids=[HRS, BPS],
    tx_power=-8,
    rssi=-50,  # what Bumble's emulated controller reports for every advertisement
    platform_data=(),
)
# Flags; incomplete list of 128-bit UUIDs (the vendor service, little-endian); service data for
# 0x1809 with one byte; shortened local name "T1".
THERMO_ADV = (
    bytes.fromhex("020106 1106")
    + bytes.fromhex(VENDOR_SERVICE.replace("-", ""))[::-1]
    + bytes.fromhex("041609182A 03085431")
)
THERMO_EXPECTED = AdvertisementData(
    local_name="T1",
    manufacturer_data={},
    service_data={HTS: b"\x2a"},
    service_uuids=[VENDOR_SERVICE],
    tx_power=None,
    rssi=-50,
    platform_data=(),
)


# -- radio fixture ----------------------------------------------------------------------------


class InMemoryHci:
    """An HCI transport to a virtual controller, in process (what ``attach_host()`` returns)."""

    def __init__(self, controller: Controller) -> None:
        self.source = controller
        self.sink = AsyncPipeSink(controller)


@dataclass
class Sensor:
    """A peripheral: Bumble device + GATT server on its own virtual controller.

    It advertises again after every disconnection until :meth:`stop`.
    """

    address: str
    device: Device
    advertising_data: bytes
    characteristics: dict[str, Characteristic[Any]]
    writes: dict[str, asyncio.Queue[bytes]]
    subscriptions: asyncio.Queue[tuple[str, bool, bool]] = field(default_factory=asyncio.Queue)
    slow_reads: asyncio.Queue[asyncio.Future[bytes]] = field(default_factory=asyncio.Queue)
    disconnections: asyncio.Queue[int] = field(default_factory=asyncio.Queue)  # reasons
    stopped: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def advertise(self) -> None:
        await self.device.start_advertising(
            advertising_data=self.advertising_data,
            advertising_interval_min=ADVERTISING_INTERVAL_MS,
            advertising_interval_max=ADVERTISING_INTERVAL_MS,
        )

    def on_connection(self, connection: Connection) -> None:
        connection.on("disconnection", self._on_disconnection)

    def _on_disconnection(self, reason: int) -> None:
        self.disconnections.put_nowait(reason)
        if not self.stopped:
            task = asyncio.create_task(self.advertise())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def stop(self) -> None:
        self.stopped = True
        await asyncio.gather(*self.tasks)
        if self.device.is_advertising:
            await self.device.stop_advertising()

    async def disconnect_all(self) -> None:
        for connection in list(self.device.connections.values()):
            await connection.disconnect()

    async def notify(self, uuid: str, value: bytes) -> None:
        await self.device.notify_subscribers(self.characteristics[uuid], value)

    async def indicate(self, uuid: str, value: bytes) -> None:
        # Returns once the central confirmed the indication (ATT Handle Value Confirmation).
        await self.device.indicate_subscribers(self.characteristics[uuid], value)


def _bumble_uuid(uuid: str) -> UUID:
    """16-bit SIG UUIDs as 16-bit on the wire (as real sensors declare them), others as 128."""
    if uuid.endswith(BASE_UUID_TAIL) and uuid.startswith("0000"):
        return UUID(uuid[4:8])
    return UUID(uuid)


def _gatt(
    writes: dict[str, asyncio.Queue[bytes]], slow_reads: asyncio.Queue[asyncio.Future[bytes]]
) -> tuple[list[Service], dict[str, Any]]:
    props, perms = Characteristic.Properties, Characteristic.Permissions
    characteristics: dict[str, Characteristic[Any]] = {}

    def char(uuid: str, properties: Any, permissions: Any, value: Any) -> Characteristic[Any]:
        characteristics[uuid] = Characteristic(_bumble_uuid(uuid), properties, permissions, value)
        return characteristics[uuid]

    def recorder(uuid: str, accept: Callable[[bytes], bool] = bool) -> CharacteristicValue[bytes]:
        writes[uuid] = asyncio.Queue()

        def write(_connection: Connection, value: bytes) -> None:
            if not accept(value):
                raise ATT_Error(CONTROL_POINT_NOT_SUPPORTED)
            writes[uuid].put_nowait(value)

        return CharacteristicValue(write=write)

    async def slow_read(_connection: Connection) -> bytes:
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        slow_reads.put_nowait(answer)
        return await answer

    services = [
        Service(
            _bumble_uuid(HRS),
            [
                char(HEART_RATE_MEASUREMENT, props.NOTIFY, perms(0), b""),
                char(BODY_SENSOR_LOCATION, props.READ, perms.READABLE, b"\x01"),
                char(
                    HEART_RATE_CONTROL_POINT,
                    props.WRITE,
                    perms.WRITEABLE,
                    recorder(HEART_RATE_CONTROL_POINT, lambda v: v == RESET_ENERGY_EXPENDED),
                ),
            ],
        ),
        Service(
            _bumble_uuid(DIS),
            [char(MANUFACTURER_NAME, props.READ, perms.READABLE, MANUFACTURER)],
        ),
        Service(
            _bumble_uuid(BPS),
            [char(BLOOD_PRESSURE_MEASUREMENT, props.INDICATE, perms(0), b"")],
        ),
        Service(
            _bumble_uuid(VENDOR_SERVICE),
            [
                char(
                    VENDOR_WRITE,
                    props.WRITE | props.WRITE_WITHOUT_RESPONSE,
                    perms.WRITEABLE,
                    recorder(VENDOR_WRITE),
                ),
                char(VENDOR_LONG, props.READ, perms.READABLE, LONG_VALUE),
                char(VENDOR_SLOW, props.READ, perms.READABLE, CharacteristicValue(read=slow_read)),
            ],
        ),
    ]
    return services, characteristics


async def start_sensor(link: LocalLink, address: str, advertising_data: bytes) -> Sensor:
    """A sensor on its own virtual controller on ``link``, advertising."""
    controller = Controller(f"sensor-{address}", link=link)
    device = Device(
        name=address, address=Address(address), host=Host(controller, AsyncPipeSink(controller))
    )
    writes: dict[str, asyncio.Queue[bytes]] = {}
    slow_reads: asyncio.Queue[asyncio.Future[bytes]] = asyncio.Queue()
    services, characteristics = _gatt(writes, slow_reads)
    for service in services:
        device.add_service(service)
    sensor = Sensor(
        address, device, advertising_data, characteristics, writes, slow_reads=slow_reads
    )
    device.on("connection", sensor.on_connection)
    device.on(
        "characteristic_subscription",
        lambda _bearer, characteristic, notify, indicate: sensor.subscriptions.put_nowait(
            (bleak_uuid(characteristic.uuid), notify, indicate)
        ),
    )
    await device.power_on()
    await sensor.advertise()
    return sensor


@dataclass
class Radio:
    link: LocalLink
    adapter: BumbleAdapter
    sensors: list[Sensor] = field(default_factory=list)

    @property
    def scanner(self) -> type[BleakScannerBumble]:
        return self.adapter.scanner_backend

    @property
    def client(self) -> type[BleakClientBumble]:
        return self.adapter.client_backend

    async def add_sensor(self, address: str, advertising_data: bytes) -> Sensor:
        sensor = await start_sensor(self.link, address, advertising_data)
        self.sensors.append(sensor)
        return sensor

    async def find(self, address: str) -> BLEDevice:
        device = await BleakScanner.find_device_by_address(
            address, timeout=WAIT_S, backend=self.scanner
        )
        assert device is not None
        return device

    async def connect(
        self, address: str, on_disconnect: Callable[[BleakClient], None] | None = None
    ) -> BleakClient:
        return await establish_connection(
            BleakClient,
            await self.find(address),
            address,
            disconnected_callback=on_disconnect,
            backend=self.client,
        )


@pytest.fixture
async def radio() -> AsyncIterator[Radio]:
    link = LocalLink()
    gateway = Controller("gateway", link=link)
    async with BumbleAdapter(InMemoryHci(gateway)) as adapter:
        radio = Radio(link, adapter)
        yield radio
    for sensor in radio.sensors:
        await sensor.stop()


async def _next(queue: asyncio.Queue[Any]) -> Any:
    async with asyncio.timeout(WAIT_S):
        return await queue.get()


# -- transport strings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transport", "spec"),
    [
        ("bluez", None),
        ("hci:tcp-client:127.0.0.1:9411", "tcp-client:127.0.0.1:9411"),
        ("hci:usb:0", "usb:0"),
        (" hci:serial:/dev/ttyACM0,1000000 ", "serial:/dev/ttyACM0,1000000"),
    ],
)
def test_transport_strings(transport: str, spec: str | None) -> None:
    assert hci_transport_spec(transport) == spec


@pytest.mark.parametrize("transport", ["", "hci:", "hci: ", "usb:0", "BlueZ", "tcp:127.0.0.1:1"])
def test_bad_transport_strings_are_config_errors(transport: str) -> None:
    with pytest.raises(ConfigError, match="expected 'bluez' or 'hci:<Bumble transport>'"):
        hci_transport_spec(transport)


async def test_bluez_means_bleaks_default_backend() -> None:
    async with open_link("bluez") as link:
        assert link.backends == BLUEZ == BleakBackends(None, None)


async def test_unreachable_hci_transport_is_bluetooth_not_available() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BleakBluetoothNotAvailableError, match="cannot open Bluetooth HCI"):
        async with open_link(f"hci:tcp-client:127.0.0.1:{port}"):
            pass


async def test_silent_hci_transport_is_bluetooth_not_available(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(adapter_module, "POWER_ON_TIMEOUT_S", 0.2)
    accepted: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # a peer that takes the connection and never answers HCI Reset

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(BleakBluetoothNotAvailableError, match="did not power on"):
            async with open_link(f"hci:tcp-client:127.0.0.1:{port}"):
                pass
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


def test_backend_must_be_bound_to_an_adapter() -> None:
    with pytest.raises(BleakError, match="must be bound to an adapter"):
        BleakClient(HRM_ADDRESS, backend=BleakClientBumble)


# -- advertising data (pure) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Core v5.4 Vol 3, Part B §2.5.1: 16- and 32-bit UUIDs expand over the Base UUID.
        (bytes.fromhex("0D18"), "0000180d-0000-1000-8000-00805f9b34fb"),
        (bytes.fromhex("78563412"), "12345678-0000-1000-8000-00805f9b34fb"),
        (
            bytes.fromhex("9ECADC240EE5A9E093F3A3B50100406E"),  # Nordic UART service, LE order
            "6e400001-b5a3-f393-e0a9-e50e24dcca9e",
        ),
    ],
)
def test_uuid_from_le_bytes(raw: bytes, expected: str) -> None:
    assert uuid_from_le_bytes(raw) == expected


@pytest.mark.parametrize("size", [0, 1, 3, 5, 15, 17])
def test_uuid_of_other_sizes_is_rejected(size: int) -> None:
    with pytest.raises(ValueError, match="2, 4 or 16 bytes"):
        uuid_from_le_bytes(bytes(size))


def test_ad_structures_vector() -> None:
    fields = parse_ad_structures(AdvertisingData.from_bytes(HRM_ADV).ad_structures)
    assert fields.to_bleak(-50) == HRM_EXPECTED


def test_malformed_ad_structures_are_skipped_and_counted() -> None:
    structures = [
        (0x03, bytes.fromhex("0D1809")),  # 16-bit list with a dangling byte: one UUID kept
        (0x16, b"\x09"),  # service data shorter than its UUID
        (0xFF, b"\x01"),  # manufacturer data shorter than the company id
        (0x0A, b"\x01\x02"),  # TX power is one byte
        (0x08, b"sh"),  # shortened name loses to the complete one
        (0x09, b"ful\xffl\x00\x00"),  # invalid UTF-8 replaced, NUL padding cut
        (0x20, bytes.fromhex("44332211") + b"x"),  # 32-bit service data
        (0xFF, b"\x59\x00a"),  # Nordic (0x0059), replaced by the next one
        (0xFF, b"\x59\x00b"),
    ]
    assert parse_ad_structures(structures) == AdvertisementFields(
        local_name="ful\ufffdl",
        service_uuids=(HRS,),
        service_data={"11223344-0000-1000-8000-00805f9b34fb": b"x"},
        manufacturer_data={0x0059: b"b"},
        tx_power=None,
        malformed=4,
    )


def test_rssi_not_available_becomes_bleaks_no_rssi() -> None:
    # Core v5.4 Vol 4, Part E §7.7.65.2: RSSI 127 = not available.
    assert AdvertisementFields().to_bleak(127).rssi == -127


@settings(derandomize=True, max_examples=400)
@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=12))
def test_fuzz_ad_structures_never_raise(structures: list[tuple[int, bytes]]) -> None:
    fields = parse_ad_structures(structures)
    assert isinstance(fields.to_bleak(-60), AdvertisementData)


@settings(derandomize=True, max_examples=400)
@given(st.binary(max_size=62))
def test_fuzz_raw_advertising_bytes_never_raise(raw: bytes) -> None:
    # The production path: Bumble splits the report, the backend interprets the structures.
    fields = parse_ad_structures(AdvertisingData.from_bytes(raw).ad_structures)
    assert isinstance(fields.to_bleak(-60), AdvertisementData)


# -- scanning ---------------------------------------------------------------------------------


async def test_scan_with_service_filter(radio: Radio) -> None:
    await radio.add_sensor(HRM_ADDRESS, HRM_ADV)
    await radio.add_sensor(THERMO_ADDRESS, THERMO_ADV)
    filtered: dict[str, tuple[BLEDevice, AdvertisementData]] = {}
    everything: dict[str, AdvertisementData] = {}
    got_hrm, got_thermo = asyncio.Event(), asyncio.Event()

    def on_filtered(device: BLEDevice, adv: AdvertisementData) -> None:
        filtered[device.address] = (device, adv)
        got_hrm.set()

    def on_everything(device: BLEDevice, adv: AdvertisementData) -> None:
        everything[device.address] = adv
        if device.address == THERMO_ADDRESS:
            got_thermo.set()

    backend = radio.scanner
    async with (
        BleakScanner(on_filtered, [HRS.upper()], backend=backend) as scanner,
        BleakScanner(on_everything, scanning_mode="passive", backend=backend),
    ):
        async with asyncio.timeout(WAIT_S):
            await got_hrm.wait()
            await got_thermo.wait()
    # Both scanners get every advertisement in the same dispatch: the thermometer, seen by the
    # unfiltered one, was dropped by the filter.
    assert set(filtered) == {HRM_ADDRESS}
    assert set(scanner.discovered_devices_and_advertisement_data) == {HRM_ADDRESS}
    device, adv = filtered[HRM_ADDRESS]
    assert (device.address, device.name) == (HRM_ADDRESS, "HRM-1")
    assert device.details == {"source": radio.adapter.description, "bumble_address": HRM_ADDRESS}
    assert adv._replace(platform_data=()) == HRM_EXPECTED
    assert everything[THERMO_ADDRESS]._replace(platform_data=()) == THERMO_EXPECTED
    assert radio.adapter.malformed_advertisements == 0


async def test_passive_scan_alone_finds_a_sensor(radio: Radio) -> None:
    await radio.add_sensor(HRM_ADDRESS, HRM_ADV)
    device = await BleakScanner.find_device_by_filter(
        lambda _d, adv: HRS in adv.service_uuids,
        timeout=WAIT_S,
        scanning_mode="passive",
        backend=radio.scanner,
    )
    assert device is not None
    assert device.address == HRM_ADDRESS


# -- connections ------------------------------------------------------------------------------


async def test_gatt_round_trip_through_establish_connection(radio: Radio) -> None:
    sensor = await radio.add_sensor(HRM_ADDRESS, HRM_ADV)
    disconnects: list[BleakClient] = []
    client = await radio.connect(HRM_ADDRESS, disconnects.append)
    assert client.is_connected
    assert (client.name, client.backend_id) == ("HRM-1", "BleakClientBumble")
    assert client.mtu_size == 247

    services = client.services
    assert {s.uuid for s in services} == {GAP, GATT, HRS, DIS, BPS, VENDOR_SERVICE}
    hrm = services.get_characteristic(HEART_RATE_MEASUREMENT)
    assert hrm is not None
    assert (hrm.service_uuid, hrm.properties) == (HRS, ["notify"])
    assert [d.uuid for d in hrm.descriptors] == [CCCD]
    vendor_write = services.get_characteristic(VENDOR_WRITE)
    assert vendor_write is not None
    assert vendor_write.properties == ["write-without-response", "write"]
    assert vendor_write.max_write_without_response_size == 244

    assert await client.read_gatt_char(BODY_SENSOR_LOCATION) == bytearray(b"\x01")
    assert await client.read_gatt_char(MANUFACTURER_NAME) == bytearray(MANUFACTURER)
    assert await client.read_gatt_char(VENDOR_LONG) == bytearray(LONG_VALUE)
    cccd = hrm.descriptors[0]
    assert await client.read_gatt_descriptor(cccd.handle) == bytearray(b"\x00\x00")

    await client.write_gatt_char(HEART_RATE_CONTROL_POINT, RESET_ENERGY_EXPENDED, response=True)
    assert await _next(sensor.writes[HEART_RATE_CONTROL_POINT]) == RESET_ENERGY_EXPENDED
    big = bytes(range(200))  # fits one Write Command only because the MTU is 247
    await client.write_gatt_char(VENDOR_WRITE, big, response=False)
    assert await _next(sensor.writes[VENDOR_WRITE]) == big

    with pytest.raises(BleakGATTProtocolError) as refused:
        await client.write_gatt_char(HEART_RATE_CONTROL_POINT, b"\x02", response=True)
    assert refused.value.code == CONTROL_POINT_NOT_SUPPORTED

    received: asyncio.Queue[tuple[str, bytearray]] = asyncio.Queue()

    def on_value(characteristic: BleakGATTCharacteristic, data: bytearray) -> None:
        received.put_nowait((characteristic.uuid, data))

    await client.start_notify(HEART_RATE_MEASUREMENT, on_value)
    assert await _next(sensor.subscriptions) == (HEART_RATE_MEASUREMENT, True, False)
    await sensor.notify(HEART_RATE_MEASUREMENT, HRM_VECTOR)
    assert await _next(received) == (HEART_RATE_MEASUREMENT, bytearray(HRM_VECTOR))

    await client.start_notify(BLOOD_PRESSURE_MEASUREMENT, on_value)
    assert await _next(sensor.subscriptions) == (BLOOD_PRESSURE_MEASUREMENT, False, True)
    async with asyncio.timeout(WAIT_S):
        await sensor.indicate(BLOOD_PRESSURE_MEASUREMENT, BPM_VECTOR)
    assert await _next(received) == (BLOOD_PRESSURE_MEASUREMENT, bytearray(BPM_VECTOR))

    await client.stop_notify(HEART_RATE_MEASUREMENT)
    assert await _next(sensor.subscriptions) == (HEART_RATE_MEASUREMENT, False, False)

    await client.disconnect()
    assert not client.is_connected
    assert disconnects == [client]  # as bleak's BlueZ backend: also for a local disconnect
    # Core v5.4 Vol 1, Part F §2: 0x13 Remote User Terminated Connection, as the sensor sees it.
    assert await _next(sensor.disconnections) == 0x13


async def test_remote_disconnect_fires_callback_and_reconnect_works(radio: Radio) -> None:
    sensor = await radio.add_sensor(HRM_ADDRESS, HRM_ADV)
    lost: asyncio.Queue[BleakClient] = asyncio.Queue()
    client = await radio.connect(HRM_ADDRESS, lost.put_nowait)

    await sensor.disconnect_all()
    assert await _next(lost) is client
    assert not client.is_connected
    with pytest.raises(BleakError, match="Service Discovery has not been performed"):
        await client.read_gatt_char(BODY_SENSOR_LOCATION)

    await client.connect()  # the same client again: the sensor advertises again
    assert await client.read_gatt_char(BODY_SENSOR_LOCATION) == bytearray(b"\x01")
    await sensor.disconnect_all()
    assert await _next(lost) is client

    fresh = await radio.connect(HRM_ADDRESS)  # and a new client through the retry connector
    assert await fresh.read_gatt_char(MANUFACTURER_NAME) == bytearray(MANUFACTURER)
    await fresh.disconnect()
    assert lost.empty()


async def test_services_argument_limits_discovery(radio: Radio) -> None:
    await radio.add_sensor(HRM_ADDRESS, HRM_ADV)
    device = await radio.find(HRM_ADDRESS)
    async with BleakClient(device, services=["180d", VENDOR_SERVICE], backend=radio.client) as c:
        assert [s.uuid for s in c.services] == [HRS, VENDOR_SERVICE]
        assert await c.read_gatt_char(BODY_SENSOR_LOCATION) == bytearray(b"\x01")


async def test_link_lost_during_a_read_is_a_bleak_error(radio: Radio) -> None:
    sensor = await radio.add_sensor(HRM_ADDRESS, HRM_ADV)
    lost = asyncio.Event()
    client = await radio.connect(HRM_ADDRESS, lambda _c: lost.set())
    read = asyncio.create_task(client.read_gatt_char(VENDOR_SLOW))
    answer = await _next(sensor.slow_reads)  # the request is at the sensor, unanswered
    await sensor.disconnect_all()
    with pytest.raises(BleakError, match="Disconnected from F1:00:00:00:00:01 while reading"):
        async with asyncio.timeout(WAIT_S):
            await read
    assert lost.is_set()
    answer.set_result(b"too late")


async def test_malformed_gatt_database_is_a_bleak_error(radio: Radio) -> None:
    sensor = await radio.add_sensor(HRM_ADDRESS, HRM_ADV)
    # A service whose only "characteristic declaration" is 1 byte long instead of at least 5
    # (Core v5.4 Vol 3, Part G §3.3.1: properties, value handle, UUID).
    hostile = Service(_bumble_uuid(HTS), [])
    sensor.device.add_service(hostile)
    bogus = Attribute(GATT_CHARACTERISTIC_ATTRIBUTE_TYPE, Attribute.READABLE, b"\x02")
    sensor.device.gatt_server.add_attribute(bogus)
    hostile.end_group_handle = bogus.handle
    client = BleakClient(await radio.find(HRM_ADDRESS), backend=radio.client)
    with pytest.raises(BleakError, match="malformed response from the device"):
        await client.connect()
    assert not client.is_connected
    await _next(sensor.disconnections)  # the half-set-up link was dropped


async def test_absent_address_is_not_found(radio: Radio) -> None:
    await radio.add_sensor(HRM_ADDRESS, HRM_ADV)  # something else is on the air
    client = BleakClient(ABSENT_ADDRESS, timeout=0.5, backend=radio.client)
    with pytest.raises(BleakDeviceNotFoundError) as missing:
        await client.connect()
    assert missing.value.identifier == ABSENT_ADDRESS
    assert not client.is_connected


async def test_absent_device_through_retry_connector(
    radio: Radio, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bleak-retry-connector gives every attempt 20 s; shorten it so the test stays quick.
    monkeypatch.setattr(bleak_retry_connector, "BLEAK_TIMEOUT", 0.3)
    ghost = BLEDevice(
        ABSENT_ADDRESS,
        "ghost",
        {"source": radio.adapter.description, "bumble_address": ABSENT_ADDRESS},
    )
    with pytest.raises(BleakNotFoundError, match="Failed to connect after 2 attempt"):
        await establish_connection(
            BleakClient, ghost, "ghost", max_attempts=2, backend=radio.client
        )


async def test_two_sensors_connected_at_once_while_scanning(radio: Radio) -> None:
    sensors = [
        await radio.add_sensor(HRM_ADDRESS, HRM_ADV),
        await radio.add_sensor(HRM2_ADDRESS, HRM_ADV),
    ]
    await radio.add_sensor(THERMO_ADDRESS, THERMO_ADV)
    thermometer_seen = asyncio.Event()

    def on_adv(device: BLEDevice, _adv: AdvertisementData) -> None:
        if device.address == THERMO_ADDRESS:
            thermometer_seen.set()

    # The gateway keeps an active scan running while it connects (scanning pauses during each
    # LE Create Connection and resumes afterwards).
    async with BleakScanner(on_adv, backend=radio.scanner):
        clients = await asyncio.gather(radio.connect(HRM_ADDRESS), radio.connect(HRM2_ADDRESS))
        thermometer_seen.clear()
        async with asyncio.timeout(WAIT_S):
            await thermometer_seen.wait()  # the scan is running again
        received: asyncio.Queue[tuple[str, bytearray]] = asyncio.Queue()
        for client in clients:
            await client.start_notify(
                HEART_RATE_MEASUREMENT,
                lambda _ch, data, address=client.address: received.put_nowait((address, data)),
            )
        for sensor, value in zip(sensors, (b"\x00\x48", b"\x00\x50"), strict=True):
            await _next(sensor.subscriptions)
            await sensor.notify(HEART_RATE_MEASUREMENT, value)
        got = sorted([await _next(received), await _next(received)])
    assert got == [(HRM_ADDRESS, bytearray(b"\x00\x48")), (HRM2_ADDRESS, bytearray(b"\x00\x50"))]
    assert all(c.is_connected for c in clients)
    for client in clients:
        await client.disconnect()


async def test_connect_timeout_after_the_sensor_went_quiet(
    radio: Radio, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The sensor stops advertising right after the advertisement that started the connect, so
    # LE Create Connection runs into the deadline and is cancelled. Bumble's emulated controller
    # never confirms the cancel and completes the stale attempt once the sensor advertises again;
    # the adapter gives up waiting and drops that unrequested connection.
    monkeypatch.setattr(adapter_module, "CANCEL_SETTLE_S", 0.1)
    sensor = await radio.add_sensor(HRM_ADDRESS, HRM_ADV)
    device = await radio.find(HRM_ADDRESS)
    find = radio.adapter.find

    async def find_then_silence(address: str, exact: Address | None, deadline: float) -> Address:
        peer = await find(address, exact, deadline)
        await sensor.device.stop_advertising()
        return peer

    monkeypatch.setattr(radio.adapter, "find", find_then_silence)
    client = BleakClient(device, timeout=1.0, backend=radio.client)
    with pytest.raises(TimeoutError):
        await client.connect()
    assert not client.is_connected
    assert "controller did not confirm the cancelled connection" in caplog.text
    monkeypatch.setattr(radio.adapter, "find", find)

    await sensor.advertise()
    await _next(sensor.disconnections)  # the stale attempt connected and was dropped
    await client.connect()
    assert await client.read_gatt_char(BODY_SENSOR_LOCATION) == bytearray(b"\x01")
    await client.disconnect()


async def test_pairing_bonds_and_reconnects_encrypted(radio: Radio) -> None:
    sensor = await radio.add_sensor(HRM_ADDRESS, HRM_ADV)
    keystore = radio.adapter.device.keystore
    assert keystore is not None
    client = await radio.connect(HRM_ADDRESS)

    def sensor_link_encrypted() -> bool:
        (connection,) = sensor.device.connections.values()
        return bool(connection.is_encrypted)

    assert not sensor_link_encrypted()
    await client.pair()
    assert sensor_link_encrypted()
    assert await keystore.get(HRM_ADDRESS) is not None

    await client.disconnect()
    await client.connect()  # bonded: the link is encrypted again without pairing
    assert sensor_link_encrypted()
    assert await client.read_gatt_char(MANUFACTURER_NAME) == bytearray(MANUFACTURER)

    await client.unpair()
    assert not client.is_connected
    assert await keystore.get(HRM_ADDRESS) is None


# -- the TCP transport ------------------------------------------------------------------------


async def test_over_tcp_transport_and_transport_loss() -> None:
    link = LocalLink()
    sensor = await start_sensor(link, HRM_ADDRESS, HRM_ADV)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hci_server = await open_transport(f"tcp-server:127.0.0.1:{port}")
    Controller("tcp", host_source=hci_server.source, host_sink=hci_server.sink, link=link)
    lost = asyncio.Event()
    try:
        async with open_link(f"hci:tcp-client:127.0.0.1:{port}") as link:
            scanner_backend, client_backend = link.backends
            assert scanner_backend is not None
            assert client_backend is not None
            device = await BleakScanner.find_device_by_address(
                HRM_ADDRESS, timeout=WAIT_S, backend=scanner_backend
            )
            assert device is not None
            assert device.details["source"] == f"bumble:tcp-client:127.0.0.1:{port}"
            client = await establish_connection(
                BleakClient,
                device,
                "HRM-1",
                disconnected_callback=lambda _c: lost.set(),
                backend=client_backend,
            )
            assert client.mtu_size == 247
            assert await client.read_gatt_char(MANUFACTURER_NAME) == bytearray(MANUFACTURER)

            hci_server.sink.transport.close()  # the simulator side goes away
            async with asyncio.timeout(WAIT_S):
                await lost.wait()
                await link.lost()  # the radio itself reports the loss
            assert not client.is_connected
            with pytest.raises(BleakBluetoothNotAvailableError, match="transport was lost"):
                await BleakScanner(backend=scanner_backend).start()
    finally:
        await hci_server.close()
        hci_server.server.close()
        with contextlib.suppress(Exception):
            await hci_server.server.wait_closed()
        await sensor.stop()
