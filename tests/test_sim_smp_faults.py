"""The firmware update path when it goes wrong, on the simulated ECG patch over Bumble with
``smpclient`` on the gateway's session transport: the link drops mid-upload and a second
``SMPClient.upload()`` continues the upload session its ``sha`` identifies (Zephyr MCUmgr, SMP
group 1 "Image upload"); a chunk arrives corrupted and the device refuses the image; an image
that "crashes" boots under test, sends only malformed measurements, and MCUboot reverts it at the
next reset. Also MCUmgr's statistics (OS task statistics; the statistics group), the
:class:`~firmware_sim.faults.SmpFaults` bookkeeping, and the scenario's ``[faults]`` ``smp_*``
settings."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bleak import BleakClient, BleakScanner
from smp import image_management as img
from smp.statistics_management import STAT_MGMT_ERR, StatisticsManagementErrorV2
from smpclient import SMPClient
from smpclient.exceptions import SMPUploadError
from smpclient.generics import success
from smpclient.requests.image_management import ImageStatesRead, ImageStatesWrite
from smpclient.requests.os_management import ResetWrite, TaskStatisticsRead
from smpclient.requests.statistics_management import GroupData, ListOfGroups
from smpclient.transport import SMPTransportDisconnected

from firmware_sim import Simulator, scenarios
from firmware_sim.faults import SmpFaults
from firmware_sim.mcuboot import CRASH_MARKER
from firmware_sim.scenarios import ScenarioError
from gateway.ble.bumble import BumbleAdapter
from gateway.errors import DecodeError
from gateway.firmware.image import inspect_image
from gateway.firmware.transport import SessionTransport
from gateway.ieee11073.hrs import HeartRateMeasurement
from tests.firmware_images import build_image
from tests.sim_central import FAST, TIMEOUT_S

HR_MEASUREMENT = "00002a37-0000-1000-8000-00805f9b34fb"
FIRMWARE_REVISION = "00002a26-0000-1000-8000-00805f9b34fb"
FIRMWARE_SIZE = 12 * 1024  # about a dozen of smpclient's 1 KiB upload requests
DROP_AT = 5000
HR_PACKETS = 5  # heart-rate notifications checked after each boot


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    directory = tmp_path_factory.mktemp("faulty-ota")
    firmware = os.urandom(FIRMWARE_SIZE)
    return build_image(directory, "1.6.0", firmware=firmware, key="ed25519").read_bytes()


@pytest.fixture(scope="module")
def crashing_image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    directory = tmp_path_factory.mktemp("crashing-ota")
    firmware = os.urandom(2048) + CRASH_MARKER + os.urandom(2048)
    return build_image(directory, "1.7.0", firmware=firmware, key="ed25519").read_bytes()


@dataclass
class Session:
    """One connection to the patch with smpclient on it; ``lost`` is set when the link drops."""

    client: BleakClient
    smp: SMPClient
    lost: asyncio.Event


@asynccontextmanager
async def patch() -> AsyncIterator[tuple[Simulator, BumbleAdapter]]:
    async with (
        asyncio.timeout(TIMEOUT_S * 4),
        Simulator(["ecg"], "normal", seed=1, overrides=FAST) as sim,
        BumbleAdapter(await sim.attach_host()) as adapter,
    ):
        yield sim, adapter


@asynccontextmanager
async def session(adapter: BumbleAdapter, address: str) -> AsyncIterator[Session]:
    """Scan for the patch (advertising again after a drop or reset), connect, start SMP."""
    device = await BleakScanner.find_device_by_address(
        address, timeout=TIMEOUT_S, backend=adapter.backends.scanner
    )
    assert device is not None
    lost = asyncio.Event()
    async with BleakClient(
        device, backend=adapter.backends.client, disconnected_callback=lambda _c: lost.set()
    ) as client:
        smp = SMPClient(SessionTransport(client), address)
        await smp.connect()
        try:
            yield Session(client, smp, lost)
        finally:
            await smp.disconnect()


async def until(event: asyncio.Event) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        await event.wait()


async def heart_rate_packets(client: BleakClient, count: int) -> list[bytes]:
    """The next ``count`` Heart Rate Measurement notifications."""
    packets: asyncio.Queue[bytes] = asyncio.Queue()

    def on_notify(_sender: Any, data: bytearray) -> None:
        packets.put_nowait(bytes(data))

    await client.start_notify(HR_MEASUREMENT, on_notify)
    try:
        async with asyncio.timeout(TIMEOUT_S):
            return [await packets.get() for _ in range(count)]
    finally:
        await client.stop_notify(HR_MEASUREMENT)


def malformed(packet: bytes) -> bool:
    try:
        HeartRateMeasurement.from_bytes(packet)
    except DecodeError:
        return True
    return False


async def upload(smp: SMPClient, image: bytes, offsets: list[int]) -> None:
    """``smp.upload(image)``, noting in ``offsets`` each offset it yields (also when it fails)."""
    async for off in smp.upload(image):
        offsets.append(off)  # noqa: PERF401 - kept up to the failure, unlike a comprehension


async def image_list(smp: SMPClient) -> list[img.ImageState]:
    states = await smp.request(ImageStatesRead())
    assert success(states)
    return states.images


# -- over Bumble ------------------------------------------------------------------------------


async def test_a_dropped_upload_resumes_where_the_device_stopped(image: bytes) -> None:
    async with patch() as (sim, adapter):
        ecg = sim.sensors["ecg"]
        ecg.management.faults = SmpFaults(drop_at_bytes=DROP_AT)
        before_drop: list[int] = []
        async with session(adapter, ecg.address) as first:
            # smpclient times the request out (TimeoutError) while the session transport's
            # receive() is not woken by a drop; SMPTransportDisconnected once it is.
            with pytest.raises((TimeoutError, SMPTransportDisconnected)):
                await upload(first.smp, image, before_drop)
            await until(first.lost)
        reached = ecg.management.bootloader.upload_offset
        assert ecg.management.faults.dropped
        assert before_drop[-1] < DROP_AT <= reached < len(image)  # the last chunk went unanswered

        async with session(adapter, ecg.address) as second:
            resumed = [off async for off in second.smp.upload(image)]  # off 0 with the same sha
            slots = await image_list(second.smp)
        assert resumed[0] == reached > before_drop[-1]
        assert resumed[-1] == len(image)
        assert [(s.slot, s.version) for s in slots] == [(0, "1.4.2"), (1, "1.6.0")]
        assert slots[1].hash == inspect_image(image).sha256
        # every chunk written once: the resuming request wrote nothing
        assert ecg.management.server.counters.upload_chunks == len(before_drop) + len(resumed)


async def test_a_corrupted_chunk_fails_the_image_check(image: bytes) -> None:
    async with patch() as (sim, adapter):
        ecg = sim.sensors["ecg"]
        ecg.management.faults = SmpFaults(corrupt_chunk=3)
        async with session(adapter, ecg.address) as link:
            with pytest.raises(SMPUploadError) as caught:
                await upload(link.smp, image, [])
            error = caught.value.args[0]
            assert isinstance(error, img.ImageManagementErrorV2)
            assert error.err.rc is img.IMG_MGMT_ERR.INVALID_HASH
            assert [(s.slot, s.version) for s in await image_list(link.smp)] == [(0, "1.4.2")]
            assert ecg.management.faults.corrupted

            offsets = [off async for off in link.smp.upload(image)]  # the fault happened once
            assert offsets[-1] == len(image)
            assert [s.version for s in await image_list(link.smp)] == ["1.4.2", "1.6.0"]


async def test_a_crashing_image_sends_malformed_measurements_until_reverted(
    crashing_image: bytes,
) -> None:
    async with patch() as (sim, adapter):
        ecg = sim.sensors["ecg"]
        async with session(adapter, ecg.address) as link:
            assert not any(malformed(p) for p in await heart_rate_packets(link.client, 2))
            offsets = [off async for off in link.smp.upload(crashing_image)]
            assert offsets[-1] == len(crashing_image)
            new_hash = (await image_list(link.smp))[1].hash
            assert success(await link.smp.request(ImageStatesWrite(hash=new_hash, confirm=False)))
            assert success(await link.smp.request(ResetWrite()))
            await until(link.lost)

        async with session(adapter, ecg.address) as link:  # MCUboot swapped it in, under test
            firmware = await link.client.read_gatt_char(FIRMWARE_REVISION)
            assert firmware == b"1.7.0 (Zephyr 3.7.0, bedside-sim)"
            running = (await image_list(link.smp))[0]
            assert (running.version, running.active, running.confirmed) == ("1.7.0", True, False)
            truncated_before = ecg.stats.truncated
            packets = await heart_rate_packets(link.client, HR_PACKETS)
            assert all(malformed(p) for p in packets)
            assert ecg.stats.truncated - truncated_before >= HR_PACKETS
            assert success(await link.smp.request(ResetWrite()))  # not confirmed: MCUboot reverts
            await until(link.lost)

        async with session(adapter, ecg.address) as link:
            firmware = await link.client.read_gatt_char(FIRMWARE_REVISION)
            assert firmware == b"1.4.2 (Zephyr 3.7.0, bedside-sim)"
            slots = await image_list(link.smp)
            assert [(s.slot, s.version, s.confirmed) for s in slots] == [
                (0, "1.4.2", True),
                (1, "1.7.0", False),
            ]
            truncated_before = ecg.stats.truncated
            packets = await heart_rate_packets(link.client, HR_PACKETS)
            assert not any(malformed(p) for p in packets)
            assert ecg.stats.truncated == truncated_before
            ble = await link.smp.request(GroupData(name="ble"))  # counted since this boot
            assert success(ble)
            assert (ble.fields["connections"], ble.fields["disconnects"]) == (1, 0)
            assert ecg.stats.connections == 3
        assert ecg.management.resets == 2


async def test_task_and_group_statistics_through_smpclient() -> None:
    async with patch() as (sim, adapter):
        ecg = sim.sensors["ecg"]
        async with session(adapter, ecg.address) as link:
            await heart_rate_packets(link.client, 1)  # the main thread measured
            tasks = await link.smp.request(TaskStatisticsRead())
            assert success(tasks)
            by_tid = sorted(tasks.tasks, key=lambda name: tasks.tasks[name].tid)
            assert by_tid == ["idle", "main", "bt_rx", "smp"]
            assert [tasks.tasks[name].tid for name in by_tid] == [0, 1, 2, 3]
            for task in tasks.tasks.values():
                assert task.stkuse is not None
                assert task.stksiz is not None
                assert 0 < task.stkuse < task.stksiz
            main, smp, idle = tasks.tasks["main"], tasks.tasks["smp"], tasks.tasks["idle"]
            assert main.cswcnt is not None
            assert 0 < main.cswcnt <= ecg.stats.measurements
            assert smp.cswcnt == 2 * 2  # woken and done for MCUmgr parameters and this request
            assert idle.runtime is not None
            assert smp.runtime is not None
            assert idle.runtime > smp.runtime > 0  # mostly idle

            groups = await link.smp.request(ListOfGroups())
            assert success(groups)
            assert groups.stat_list == ("smp", "ble")
            smp_group = await link.smp.request(GroupData(name="smp"))
            assert success(smp_group)
            counters = smp_group.fields
            # MCUmgr parameters, task statistics, group list, and this request
            assert counters["requests"] == 4
            assert counters["responses"] == 3
            assert counters["errors"] == 0
            assert counters["bytes_in"] > 4 * 8
            assert counters["bytes_out"] > counters["bytes_in"]
            ble = await link.smp.request(GroupData(name="ble"))
            assert success(ble)
            assert ble.fields["connections"] == 1
            assert ble.fields["notifications"] >= 4  # three SMP responses and a heart rate so far

            unknown = await link.smp.request(GroupData(name="flash"))
            assert isinstance(unknown, StatisticsManagementErrorV2)
            assert unknown.err.rc is STAT_MGMT_ERR.ERR_INVALID_GROUP


# -- pure: the fault bookkeeping and the scenario settings ----------------------------------


def test_smp_faults_corrupt_the_nth_chunk_once() -> None:
    faults = SmpFaults(corrupt_chunk=2)
    chunk = bytes(range(10))
    assert faults.take_chunk(chunk) == chunk
    corrupted = faults.take_chunk(chunk)
    assert [i for i, (a, b) in enumerate(zip(corrupted, chunk, strict=True)) if a != b] == [5]
    assert corrupted[5] == chunk[5] ^ 0xFF
    assert faults.corrupted
    assert faults.take_chunk(chunk) == chunk
    assert faults.chunks == 3


def test_smp_faults_drop_once_the_offset_is_reached() -> None:
    faults = SmpFaults(drop_at_bytes=1000)
    assert not faults.drop_after(999)
    assert faults.drop_after(1024)
    assert faults.dropped
    assert not faults.drop_after(2048)  # the resumed upload goes through
    assert not SmpFaults().drop_after(1 << 20)
    assert SmpFaults().take_chunk(b"abc") == b"abc"


@pytest.mark.parametrize("field", ["drop_at_bytes", "corrupt_chunk"])
def test_smp_faults_refuse_nonpositive_settings(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SmpFaults(**{field: 0})


def test_scenario_update_faults_are_validated(tmp_path: Path) -> None:
    toml = tmp_path / "ota.toml"
    toml.write_text("[faults]\nsmp_drop_at_bytes = 4096\nsmp_corrupt_chunk = 3\n", "utf-8")
    faults = scenarios.load(toml).faults
    assert (faults.smp_drop_at_bytes, faults.smp_corrupt_chunk) == (4096, 3)
    assert scenarios.load("normal").faults.smp_drop_at_bytes is None
    for key, value, message in (
        ("smp_drop_at_bytes", 0, "greater than or equal to 1"),
        ("smp_corrupt_chunk", -2, "greater than or equal to 1"),
        ("smp_corrupt_chunk", 1.5, "valid integer"),
        ("smp_drop_at_bytes", "lots", "valid integer"),
    ):
        with pytest.raises(ScenarioError, match=rf"ota\.toml: faults\.{key}: .*{message}"):
            scenarios.load(toml, {f"faults.{key}": value})


async def test_the_scenario_arms_the_sensors_update_faults() -> None:
    overrides = {**FAST, "faults.smp_drop_at_bytes": 2048, "faults.smp_corrupt_chunk": 4}
    async with (
        asyncio.timeout(TIMEOUT_S),
        Simulator(["ecg"], "normal", seed=1, overrides=overrides) as sim,
    ):
        faults = sim.sensors["ecg"].management.faults
        assert (faults.drop_at_bytes, faults.corrupt_chunk) == (2048, 4)
        assert not faults.dropped
        assert not faults.corrupted
