"""A session survives what its BLE stack throws at it: it reports the loss and retries."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice

from gateway.ble.session import DeviceSession, SessionState
from gateway.profiles import load_profiles
from tests.harness import wait_until


class ExplodingClient(BaseBleakClient):
    """A bleak client backend whose connect fails with an error no BLE stack documents."""

    attempts = 0

    def __init__(self, address_or_ble_device: Any, **kwargs: Any) -> None:
        super().__init__(address_or_ble_device, **kwargs)

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        type(self).attempts += 1
        raise RuntimeError("controller firmware bug")

    # The rest of the abstract interface is never reached.
    async def disconnect(self) -> None:
        raise AssertionError

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError

    async def unpair(self) -> None:
        raise AssertionError

    @property
    def mtu_size(self) -> int:
        return 23

    @property
    def is_connected(self) -> bool:
        return False

    async def read_gatt_char(self, *args: Any, **kwargs: Any) -> bytearray:
        raise AssertionError

    async def read_gatt_descriptor(self, *args: Any, **kwargs: Any) -> bytearray:
        raise AssertionError

    async def write_gatt_char(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError

    async def write_gatt_descriptor(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError

    async def start_notify(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError

    async def stop_notify(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError


async def test_an_unexpected_stack_error_is_reported_and_retried() -> None:
    async def sink(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("nothing is measured")

    device = BLEDevice("C0:FF:EE:00:00:01", "Bedside Thermo", {})
    session = DeviceSession(device, load_profiles()["thermo"], sink, client_backend=ExplodingClient)
    task = asyncio.create_task(session.run())
    try:
        await wait_until(lambda: ExplodingClient.attempts >= 2, 10, "a second connect attempt")
        assert session.status.reconnects >= 1
        await wait_until(lambda: session.status.state == SessionState.LOST, 5, "the loss reported")
        assert session.status.reason == "unexpected RuntimeError: controller firmware bug"
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
