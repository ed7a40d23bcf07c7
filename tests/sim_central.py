"""A plain Bumble central for the simulator tests: scan, connect, exchange the MTU, discover,
read, write and subscribe, exactly as the gateway's BLE layer does, on ``sim.attach_host()``."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from bumble.core import UUID
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt_client import CharacteristicProxy
from bumble.hci import Address

from firmware_sim import HostTransport, Simulator
from gateway.ieee11073.datetime import DateTime

TIMEOUT_S = 15.0
VENDOR_START = "9a1c0002-5b3e-4f6a-8d2c-7e4b1f0a9c01"
FAST = {
    "ecg.interval_s": 0.2,
    "spo2.interval_s": 0.2,
    "thermo.interval_s": 0.3,
    "thermo.intermediate_s": 0.1,
    "bp.interval_s": None,
    "bp.cycle_s": 0.5,
    "bp.cuff_update_s": 0.1,
    "advertising_interval_ms": 20,
}


def date_time(raw: bytes) -> dt.datetime:
    """A complete Date Time, decoded by the gateway's codec."""
    when = DateTime.from_bytes(raw).to_datetime()
    assert when is not None
    return when


def uuid(value: int | str) -> UUID:
    return UUID.from_16_bits(value) if isinstance(value, int) else UUID(value)


class Link:
    """A connected peer with its services discovered."""

    def __init__(self, connection: Connection, peer: Peer) -> None:
        self.connection = connection
        self.peer = peer
        self.disconnected = asyncio.Event()
        connection.on("disconnection", lambda _reason: self.disconnected.set())

    def char(self, value: int | str) -> CharacteristicProxy[bytes]:
        found = self.peer.get_characteristics_by_uuid(uuid(value))
        assert len(found) == 1, f"{value}: {len(found)} characteristics"
        return found[0]

    async def read(self, value: int | str) -> bytes:
        return await self.char(value).read_value()

    async def write(self, value: int | str, data: bytes) -> None:
        await self.char(value).write_value(data, with_response=True)

    async def subscribe(self, value: int | str, *, indicate: bool = False) -> asyncio.Queue[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        await self.peer.subscribe(self.char(value), queue.put_nowait, prefer_notify=not indicate)
        return queue


class Central:
    """The smallest useful Bumble central (see the gateway's own backend for the full one)."""

    def __init__(self, hci: HostTransport, address: str = "F0:F1:F2:F3:F4:F5") -> None:
        self.device = Device.with_hci("gateway", Address(address), hci.source, hci.sink)

    async def scan(self, addresses: set[str]) -> dict[str, Advertisement]:
        seen: dict[str, Advertisement] = {}
        found = asyncio.Event()

        def on_advertisement(advertisement: Advertisement) -> None:
            key = str(advertisement.address)
            if key in addresses and not advertisement.is_scan_response:
                seen[key] = advertisement
                if set(seen) >= addresses:
                    found.set()

        self.device.on("advertisement", on_advertisement)
        await self.device.start_scanning()
        try:
            await found.wait()
        finally:
            self.device.remove_listener("advertisement", on_advertisement)
            await self.device.stop_scanning()
        return seen

    async def connect(self, address: str, *, mtu: int | None = 247) -> Link:
        connection = await self.device.connect(Address(address))
        peer = Peer(connection)
        if mtu is not None:
            await peer.request_mtu(mtu)
        await peer.discover_services()
        for service in peer.services:
            await service.discover_characteristics()
        return Link(connection, peer)


def tasks_left() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


@asynccontextmanager
async def running(
    kinds: tuple[str, ...] = ("ecg", "spo2", "bp", "thermo"),
    scenario: str = "normal",
    overrides: Mapping[str, object] = FAST,
) -> AsyncIterator[tuple[Simulator, Central]]:
    """A simulator and a powered central; afterwards nothing may be left running."""
    async with asyncio.timeout(TIMEOUT_S * 4):
        async with Simulator(kinds, scenario, seed=1, overrides=overrides) as sim:
            central = Central(await sim.attach_host())
            await central.device.power_on()
            try:
                yield sim, central
            finally:
                # power_off() only forgets links (Device.on_flush): drop them first.
                for connection in list(central.device.connections.values()):
                    await connection.disconnect()
                await central.device.power_off()
        assert tasks_left() == []


async def next_value(queue: asyncio.Queue[bytes]) -> bytes:
    async with asyncio.timeout(TIMEOUT_S):
        return await queue.get()


async def check_racp_housekeeping(
    link: Link, racp: asyncio.Queue[bytes], stored: int, racp_uuid: int = 0x2A52
) -> None:
    """The RACP requests every record-keeping sensor answers alike (GSS "Record Access Control
    Point"): an unknown op code, an abort with nothing running, deleting the first record,
    counting the rest, deleting all, then a report that finds none. ``stored``: records before."""
    await link.write(racp_uuid, b"\x09\x01")  # unknown op code
    assert await next_value(racp) == bytes.fromhex("06000902")
    await link.write(racp_uuid, b"\x03\x00")  # abort with nothing running
    assert await next_value(racp) == bytes.fromhex("06000301")
    await link.write(racp_uuid, b"\x02\x05")  # delete the first record
    assert await next_value(racp) == bytes.fromhex("06000201")
    await link.write(racp_uuid, b"\x04\x01")  # how many are left
    assert await next_value(racp) == bytes([0x05, 0x00]) + (stored - 1).to_bytes(2, "little")
    await link.write(racp_uuid, b"\x02\x01")  # delete all
    assert await next_value(racp) == bytes.fromhex("06000201")
    await link.write(racp_uuid, b"\x01\x01")  # report all: none left
    assert await next_value(racp) == bytes.fromhex("06000106")
