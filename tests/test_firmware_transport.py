"""``smpclient.SMPClient`` over the gateway's own bleak connection (gateway/firmware/transport.py):
bleak on the Bumble host stack, connected to a simulated ECG patch; MCUmgr parameters, echo, an
imgtool image uploaded with smpclient's windowed upload (1 KiB requests split across ATT writes),
the image list, test and reset — all on the one connection the session would hold."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bleak import BleakClient
from smp import image_management as img
from smp import os_management as os_mgmt
from smpclient import SMPClient
from smpclient.generics import success
from smpclient.requests.image_management import ImageStatesRead, ImageStatesWrite
from smpclient.requests.os_management import EchoWrite, ResetWrite

from firmware_sim import Simulator
from gateway.firmware.image import inspect_image
from gateway.firmware.transport import SessionTransport
from tests.firmware_images import build_image
from tests.sim_central import TIMEOUT_S
from tests.test_firmware_device import patch

__all__ = ["patch"]  # the fixture: a simulated ECG patch and a bleak client connected to it


async def test_smpclient_updates_the_patch_over_the_sessions_connection(
    patch: tuple[Simulator, BleakClient, asyncio.Event], tmp_path: Path
) -> None:
    sim, client, lost = patch
    address = sim.sensors["ecg"].address
    image = build_image(tmp_path, "1.6.0", key="ed25519").read_bytes()
    transport = SessionTransport(client)
    assert transport.supported
    smp = SMPClient(transport, address)
    await smp.connect()  # subscribes, reads the MCUmgr parameters
    assert transport.max_unencoded_size == 1024  # the device's buffer, not the MTU

    echo = await smp.request(EchoWrite(d="bedside"))
    assert success(echo)
    assert echo.r == "bedside"

    offsets = [off async for off in smp.upload(image)]
    assert offsets[-1] == len(image)
    assert offsets == sorted(offsets)
    assert len(offsets) < len(image) // 600  # requests near the 1 KiB buffer

    states = await smp.request(ImageStatesRead())
    assert success(states)
    assert [(s.slot, s.version) for s in states.images] == [(0, "1.4.2"), (1, "1.6.0")]
    assert states.images[1].hash == inspect_image(image).sha256

    tested = await smp.request(ImageStatesWrite(hash=states.images[1].hash, confirm=False))
    assert isinstance(tested, img.ImageStatesWriteResponse)
    assert tested.images[1].pending is True
    reset = await smp.request(ResetWrite())
    assert isinstance(reset, os_mgmt.ResetWriteResponse)
    async with asyncio.timeout(TIMEOUT_S):
        await lost.wait()  # the patch restarts into the image under test
    await smp.disconnect()
    assert sim.sensors["ecg"].management.version == "1.6.0"
