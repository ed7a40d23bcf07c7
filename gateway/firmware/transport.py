"""MCUmgr SMP over a sensor's existing BLE connection: an ``smpclient`` transport on the bleak
client the gateway's session already holds, so that ``smpclient.SMPClient`` (requests, image
upload with its windowing) runs without a second connection.

Zephyr's SMP Bluetooth transport: service ``8D53DC1D-1DB7-4CD3-868B-8A527460AA84``,
characteristic ``DA2E7828-FBCE-4E01-AE9E-261174997C48``; a request is written without response
in pieces of at most ATT_MTU - 3 bytes, its response notified in pieces that the 8-byte SMP
header's length joins back together.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

from bleak import BleakClient
from bleak.exc import BleakError
from smp.header import Header
from smpclient.transport import SMPTransport, SMPTransportDisconnected

SMP_SERVICE: Final = "8d53dc1d-1db7-4cd3-868b-8a527460aa84"
SMP_CHARACTERISTIC: Final = "da2e7828-fbce-4e01-ae9e-261174997c48"
ATT_HEADER: Final = 3


class SessionTransport(SMPTransport):
    """SMP on ``client`` (connected and owned by the caller: ``disconnect()`` only unsubscribes).

    ``link_lost``: set when the link drops (the session's own event), so that a request waiting
    for its response fails at once instead of at its timeout."""

    def __init__(self, client: BleakClient, link_lost: asyncio.Event | None = None) -> None:
        self._client = client
        self._link_lost = link_lost
        self._buffer = bytearray()
        self._arrived = asyncio.Condition()
        self._subscribed = False
        self._watch: asyncio.Task[None] | None = None

    @property
    def supported(self) -> bool:
        """Whether the sensor offers the SMP service (discovered with the session's services)."""
        return self._client.services.get_characteristic(SMP_CHARACTERISTIC) is not None

    async def connect(self, address: str, timeout_s: float) -> None:
        """Subscribe to the SMP characteristic (the link itself is the session's)."""
        if not self._client.is_connected:
            raise SMPTransportDisconnected(f"{address}: the sensor is not connected")
        self._buffer.clear()
        async with asyncio.timeout(timeout_s):
            await self._client.start_notify(SMP_CHARACTERISTIC, self._on_notify)
        self._subscribed = True
        if self._link_lost is not None and self._watch is None:
            self._watch = asyncio.create_task(self._wake_on_loss(self._link_lost))

    async def _wake_on_loss(self, link_lost: asyncio.Event) -> None:
        await link_lost.wait()
        async with self._arrived:
            self._arrived.notify_all()

    async def disconnect(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._subscribed and self._client.is_connected:
            with contextlib.suppress(BleakError):
                await self._client.stop_notify(SMP_CHARACTERISTIC)
        self._subscribed = False

    async def _on_notify(self, _sender: Any, data: bytearray) -> None:
        async with self._arrived:
            self._buffer += data
            self._arrived.notify_all()

    async def send(self, data: bytes) -> None:
        size = self.mtu
        try:
            for at in range(0, len(data), size):
                await self._client.write_gatt_char(
                    SMP_CHARACTERISTIC, data[at : at + size], response=False
                )
        except BleakError as exc:
            raise SMPTransportDisconnected(str(exc)) from exc

    async def receive(self) -> bytes:
        async with self._arrived:
            while True:
                if len(self._buffer) >= Header.SIZE:
                    end = Header.SIZE + Header.loads(bytes(self._buffer[: Header.SIZE])).length
                    if len(self._buffer) >= end:
                        frame = bytes(self._buffer[:end])
                        del self._buffer[:end]
                        return frame
                if not self._client.is_connected or (
                    self._link_lost is not None and self._link_lost.is_set()
                ):
                    raise SMPTransportDisconnected("the sensor disconnected mid-response")
                await self._arrived.wait()

    async def send_and_receive(self, data: bytes) -> bytes:
        await self.send(data)
        return await self.receive()

    @property
    def mtu(self) -> int:
        return max(20, int(self._client.mtu_size) - ATT_HEADER)
