"""The simulator's SMP service over the real Bumble stack: a central writes SMP requests (the
`smp` library's models) without response and reassembles the notified responses; an
imgtool-built image is uploaded to the ECG patch, tested, the patch resets (the link drops) and
comes back running the new version in DIS and the image list, then confirms it — while the
SpO2 sensor keeps notifying; an unconfirmed test image is reverted at the next reset."""

from __future__ import annotations

import asyncio

import pytest
from smp import image_management as img
from smp import os_management as os_mgmt
from smp.header import Header

from firmware_sim import characteristics as ch
from firmware_sim.management import SMP_CHARACTERISTIC
from tests.firmware_images import build_image
from tests.sim_central import TIMEOUT_S, Central, Link, next_value, running

CHUNK = 160


class SmpLink:
    """SMP over one link: request out in ATT-sized writes, response joined from notifications."""

    def __init__(self, link: Link, notifications: asyncio.Queue[bytes]) -> None:
        self.link = link
        self.notifications = notifications

    @classmethod
    async def open(cls, link: Link) -> SmpLink:
        return cls(link, await link.subscribe(SMP_CHARACTERISTIC))

    async def request(self, message: object) -> bytes:
        frame = bytes(message)  # type: ignore[call-overload]
        size = self.link.connection.att_mtu - 3
        characteristic = self.link.char(SMP_CHARACTERISTIC)
        for at in range(0, len(frame), size):
            await characteristic.write_value(frame[at : at + size], with_response=False)
        response = await next_value(self.notifications)
        length = Header.loads(response[: Header.SIZE]).length
        while len(response) < Header.SIZE + length:
            response += await next_value(self.notifications)
        return response

    async def states(self) -> list[img.ImageState]:
        answer = await self.request(img.ImageStatesReadRequest())
        return img.ImageStatesReadResponse.loads(answer).images

    async def upload(self, data: bytes) -> None:
        off = 0
        while off < len(data):
            request = img.ImageUploadWriteRequest(
                off=off, data=data[off : off + CHUNK], len=len(data) if off == 0 else None
            )
            off = img.ImageUploadWriteResponse.loads(await self.request(request)).off


async def reconnect(central: Central, link: Link, address: str) -> Link:
    async with asyncio.timeout(TIMEOUT_S):
        await link.disconnected.wait()
    await central.scan({address})
    return await central.connect(address)


@pytest.fixture(scope="module")
def new_image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return build_image(tmp_path_factory.mktemp("ota"), "1.5.0", key="ed25519").read_bytes()


async def test_update_the_ecg_patch_while_spo2_streams(new_image: bytes) -> None:
    async with running(("ecg", "spo2")) as (sim, central):
        ecg, spo2 = sim.sensors["ecg"], sim.sensors["spo2"]
        spo2_link = await central.connect(spo2.address)
        readings = await spo2_link.subscribe(ch.PLX_CONTINUOUS)
        link = await central.connect(ecg.address)
        smp = await SmpLink.open(link)
        echo = os_mgmt.EchoWriteResponse.loads(await smp.request(os_mgmt.EchoWriteRequest(d="hi")))
        assert echo.r == "hi"
        assert [(s.slot, s.version) for s in await smp.states()] == [(0, "1.4.2")]

        await smp.upload(new_image)
        slots = await smp.states()
        assert [(s.slot, s.version) for s in slots] == [(0, "1.4.2"), (1, "1.5.0")]
        await smp.request(img.ImageStatesWriteRequest(hash=slots[1].hash, confirm=False))
        await smp.request(os_mgmt.ResetWriteRequest())
        link = await reconnect(central, link, ecg.address)
        assert await link.read(ch.FIRMWARE_REVISION) == b"1.5.0 (Zephyr 3.7.0, bedside-sim)"
        smp = await SmpLink.open(link)
        running_image = (await smp.states())[0]
        assert (running_image.version, running_image.confirmed) == ("1.5.0", False)
        await smp.request(img.ImageStatesWriteRequest(confirm=True))
        assert (await smp.states())[0].confirmed is True
        assert await next_value(readings)  # the SpO2 sensor kept notifying throughout
        assert ecg.management.resets == 1


async def test_an_unconfirmed_image_is_reverted_by_the_next_reset(new_image: bytes) -> None:
    async with running(("ecg",)) as (sim, central):
        ecg = sim.sensors["ecg"]
        link = await central.connect(ecg.address)
        smp = await SmpLink.open(link)
        await smp.upload(new_image)
        hash_ = (await smp.states())[1].hash
        await smp.request(img.ImageStatesWriteRequest(hash=hash_, confirm=False))
        await smp.request(os_mgmt.ResetWriteRequest())
        link = await reconnect(central, link, ecg.address)
        smp = await SmpLink.open(link)
        assert (await smp.states())[0].version == "1.5.0"
        await smp.request(os_mgmt.ResetWriteRequest())  # not confirmed: MCUboot reverts
        link = await reconnect(central, link, ecg.address)
        assert await link.read(ch.FIRMWARE_REVISION) == b"1.4.2 (Zephyr 3.7.0, bedside-sim)"
        smp = await SmpLink.open(link)
        assert [(s.slot, s.version, s.confirmed) for s in await smp.states()] == [
            (0, "1.4.2", True),
            (1, "1.5.0", False),
        ]
