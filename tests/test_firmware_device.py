"""MCUmgr on one link (gateway/firmware/device.py) against a simulated ECG patch over Bumble:
slots, echo, task statistics, upload + erase, the device's refusals as one sentence, and a
request cut short by a dropped link failing at once (not at its timeout)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bleak import BleakClient, BleakScanner

from firmware_sim import Simulator
from gateway.ble.bumble import BumbleAdapter
from gateway.firmware.device import DeviceRefusedError, FirmwareLink, LinkLostError, active_slot
from gateway.firmware.image import inspect_image
from tests.firmware_images import build_image
from tests.sim_central import FAST, TIMEOUT_S

REQUEST_TIMEOUT_S = 600.0  # longer than the fixture's limit: a dropped link must not wait


@pytest.fixture
async def patch() -> AsyncIterator[tuple[Simulator, BleakClient, asyncio.Event]]:
    async with (
        asyncio.timeout(TIMEOUT_S * 4),
        Simulator(["ecg"], "normal", seed=3, overrides=FAST) as sim,
        BumbleAdapter(await sim.attach_host()) as adapter,
    ):
        address = sim.sensors["ecg"].address
        device = await BleakScanner.find_device_by_address(
            address, backend=adapter.backends.scanner
        )
        assert device is not None
        lost = asyncio.Event()
        async with BleakClient(
            device, backend=adapter.backends.client, disconnected_callback=lambda _c: lost.set()
        ) as client:
            yield sim, client, lost


async def test_slots_echo_tasks_upload_and_erase(
    patch: tuple[Simulator, BleakClient, asyncio.Event], tmp_path: Path
) -> None:
    sim, client, lost = patch
    image = build_image(tmp_path, "2.0.0").read_bytes()
    async with FirmwareLink(client, "the patch", REQUEST_TIMEOUT_S, lost) as device:
        assert device.supported
        (running,) = await device.slots()
        assert (running.slot, running.version, running.active, running.confirmed) == (
            0, "1.4.2", True, True,
        )  # fmt: skip
        assert running.as_json()["hash"] == running.hash
        assert await device.echo("bedside") == "bedside"
        tasks = await device.tasks()
        assert tasks is not None
        assert {"idle", "main"} <= set(tasks)
        assert all("stksiz" in task for task in tasks.values())

        offsets: list[int] = []
        await device.upload(image, offsets.append)
        assert offsets[-1] == len(image)
        slots = await device.slots()
        assert [(s.slot, s.version) for s in slots] == [(0, "1.4.2"), (1, "2.0.0")]
        assert slots[1].hash == inspect_image(image).hash_hex
        await device.erase()
        assert [s.slot for s in await device.slots()] == [0]
    assert active_slot(await _slots(client, lost)) is not None
    assert sim.sensors["ecg"].management.version == "1.4.2"


async def _slots(client: BleakClient, lost: asyncio.Event) -> tuple:  # type: ignore[type-arg]
    async with FirmwareLink(client, "the patch", REQUEST_TIMEOUT_S, lost) as device:
        return await device.slots()


async def test_the_devices_refusals_are_one_sentence(
    patch: tuple[Simulator, BleakClient, asyncio.Event],
) -> None:
    _, client, lost = patch
    async with FirmwareLink(client, "the patch", REQUEST_TIMEOUT_S, lost) as device:
        with pytest.raises(DeviceRefusedError) as refused:
            await device.test(b"\x01" * 32)
        assert str(refused.value) == (
            "the sensor refused to test the new image: it has no image with that hash"
        )
        with pytest.raises(DeviceRefusedError, match="cannot be set for test"):
            await device.test(bytes.fromhex((await device.slots())[0].hash))
        with pytest.raises(DeviceRefusedError, match="the file is not an MCUboot image"):
            await device.upload(b"\x00" * 2048, lambda _offset: None)


async def test_a_dropped_link_fails_the_request_at_once(
    patch: tuple[Simulator, BleakClient, asyncio.Event], tmp_path: Path
) -> None:
    sim, client, lost = patch
    ecg = sim.sensors["ecg"]
    image = build_image(tmp_path, "2.1.0").read_bytes()
    async with FirmwareLink(client, "the patch", REQUEST_TIMEOUT_S, lost) as device:

        def drop_midway(offset: int) -> None:
            if offset > len(image) // 3 and ecg.connected:
                ecg.spawn(ecg.disconnect(), "drop")

        with pytest.raises(LinkLostError, match="dropped during the upload"):
            await device.upload(image, drop_midway)
    assert lost.is_set()
