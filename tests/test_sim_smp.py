"""The simulator's SMP server (firmware_sim/smp_server.py) driven with the `smp` library's own
request and response models, as `smpclient` sends and reads them: echo, an image upload in
ATT-sized pieces, test, reset after the response, confirm, erase, and errors in the v1 and v2
forms Zephyr uses."""

from __future__ import annotations

import cbor2
import pytest
from smp import image_management as img
from smp import os_management as os_mgmt
from smp.error import MGMT_ERR
from smp.header import Header, Version

from firmware_sim.mcuboot import Bootloader, read_image
from firmware_sim.smp_server import Reassembler, SmpServer
from tests.firmware_images import build_image

ATT_PAYLOAD = 244  # MTU 247 less the ATT header


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("smp-images")
    return {
        "old": build_image(directory, "1.0.0", key="ed25519").read_bytes(),
        "new": build_image(directory, "1.1.0", key="ed25519").read_bytes(),
    }


def served(images: dict[str, bytes]) -> tuple[SmpServer, list[str]]:
    resets: list[str] = []
    server = SmpServer(Bootloader(read_image(images["old"])), lambda: resets.append("reset"))
    return server, resets


def send(server: SmpServer, request: object) -> bytes:
    """Write the request in ATT-sized pieces, as a central does; the one response frame."""
    frame = bytes(request)  # type: ignore[call-overload]
    reassembler = Reassembler()
    frames = [
        f
        for at in range(0, len(frame), ATT_PAYLOAD)
        for f in reassembler.feed(frame[at : at + ATT_PAYLOAD])
    ]
    assert frames == [frame]
    response = server.handle(frame)
    server.after_response()
    return response


def test_echo_answers_with_the_request_sequence(images: dict[str, bytes]) -> None:
    server, _ = served(images)
    request = os_mgmt.EchoWriteRequest(d="bedside")
    response = os_mgmt.EchoWriteResponse.loads(send(server, request))
    assert response.r == "bedside"
    assert response.header.sequence == request.header.sequence


def test_upload_test_reset_confirm_over_smp(images: dict[str, bytes]) -> None:
    server, resets = served(images)
    data = images["new"]
    chunk = 200
    off = 0
    while off < len(data):
        request = img.ImageUploadWriteRequest(
            off=off, data=data[off : off + chunk], len=len(data) if off == 0 else None
        )
        off = img.ImageUploadWriteResponse.loads(send(server, request)).off
    assert off == len(data)
    states = img.ImageStatesReadResponse.loads(send(server, img.ImageStatesReadRequest())).images
    assert [(s.slot, s.version, s.active) for s in states] == [
        (0, "1.0.0", True),
        (1, "1.1.0", False),
    ]
    new_hash = states[1].hash
    assert new_hash == read_image(data).hash

    tested = img.ImageStatesWriteResponse.loads(
        send(server, img.ImageStatesWriteRequest(hash=new_hash, confirm=False))
    )
    assert tested.images[1].pending is True
    os_mgmt.ResetWriteResponse.loads(send(server, os_mgmt.ResetWriteRequest()))
    assert resets == ["reset"]  # after the response, as Zephyr does
    server.bootloader.reset()  # what the device does when it restarts
    running = img.ImageStatesReadResponse.loads(send(server, img.ImageStatesReadRequest())).images[
        0
    ]
    assert (running.version, running.confirmed) == ("1.1.0", False)
    send(server, img.ImageStatesWriteRequest(confirm=True))
    running = img.ImageStatesReadResponse.loads(send(server, img.ImageStatesReadRequest())).images[
        0
    ]
    assert running.confirmed is True


def test_a_corrupted_image_is_refused_in_v2_and_v1_forms(images: dict[str, bytes]) -> None:
    data = bytearray(images["new"])
    data[0x200 + 7] ^= 0x40
    for version in (Version.V2, Version.V1):
        server, _ = served(images)
        request = img.ImageUploadWriteRequest(
            off=0, data=bytes(data), len=len(data), version=version
        )
        frame = send(server, request)
        body = cbor2.loads(frame[Header.SIZE :])
        if version is Version.V2:
            error = img.ImageManagementErrorV2.loads(frame)
            assert error.err.rc is img.IMG_MGMT_ERR.INVALID_HASH
        else:
            assert body == {"rc": img.IMG_MGMT_ERR.INVALID_HASH}
        assert [s["slot"] for s in server.bootloader.states()] == [0]


def test_unknown_commands_and_bad_bodies_are_general_errors(images: dict[str, bytes]) -> None:
    server, _ = served(images)
    stats = send(server, os_mgmt.TaskStatisticsReadRequest())
    assert cbor2.loads(stats[Header.SIZE :]) == {"rc": MGMT_ERR.ENOTSUP}
    echo = bytes(os_mgmt.EchoWriteRequest(d="x"))
    broken = echo[:2] + (2).to_bytes(2, "big") + echo[4 : Header.SIZE] + b"\xa1\x61"  # cut CBOR
    assert cbor2.loads(server.handle(broken)[Header.SIZE :]) == {"rc": MGMT_ERR.EINVAL}


def test_erase_after_an_upload(images: dict[str, bytes]) -> None:
    server, _ = served(images)
    data = images["new"]
    send(server, img.ImageUploadWriteRequest(off=0, data=data, len=len(data)))
    img.ImageEraseResponse.loads(send(server, img.ImageEraseRequest()))
    assert [s["slot"] for s in server.bootloader.states()] == [0]


def test_requests_split_and_joined_across_writes() -> None:
    first = bytes(os_mgmt.EchoWriteRequest(d="a" * 300))
    second = bytes(os_mgmt.EchoWriteRequest(d="b"))
    stream = first + second
    reassembler = Reassembler()
    frames = [f for at in range(0, len(stream), 7) for f in reassembler.feed(stream[at : at + 7])]
    assert frames == [first, second]
