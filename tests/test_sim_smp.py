"""The simulator's SMP server (firmware_sim/smp_server.py) driven with the `smp` library's own
request and response models, as `smpclient` sends and reads them: echo, an image upload in
ATT-sized pieces, test, reset after the response, confirm, erase, errors in the v1 and v2
forms Zephyr uses, upload sessions (``sha``, ``match``), the update-path faults, OS task
statistics and the statistics group."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from smp import image_management as img
from smp import os_management as os_mgmt
from smp import statistics_management as stat
from smp.error import MGMT_ERR
from smp.header import Header, Version

from firmware_sim.faults import SmpFaults
from firmware_sim.mcuboot import Bootloader, read_image
from firmware_sim.smp_server import (
    CYCLES_PER_SECOND,
    DeviceStatus,
    Reassembler,
    SmpCounters,
    SmpServer,
    task_statistics,
)
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
    pools = send(server, os_mgmt.MemoryPoolStatisticsReadRequest())
    assert cbor2.loads(pools[Header.SIZE :]) == {"rc": MGMT_ERR.ENOTSUP}
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


def upload_requests(
    data: bytes, *, chunk: int = 200, sha: bytes | None = None, start: int = 0
) -> list[img.ImageUploadWriteRequest]:
    return [
        img.ImageUploadWriteRequest(
            off=off,
            data=data[off : off + chunk],
            len=len(data) if off == 0 else None,
            sha=sha if off == 0 else None,
        )
        for off in range(start, len(data), chunk)
    ]


def upload_answer(server: SmpServer, request: img.ImageUploadWriteRequest) -> dict[str, object]:
    return dict(cbor2.loads(send(server, request)[Header.SIZE :]))


def test_an_upload_with_sha_resumes_and_answers_match(images: dict[str, bytes]) -> None:
    server, _ = served(images)
    data = images["new"]
    sha = hashlib.sha256(data).digest()
    requests = upload_requests(data, sha=sha)
    for request in requests[:3]:
        assert upload_answer(server, request) == {"off": request.off + len(request.data)}
    # a client that lost the link starts with off 0 and the sha again: it is told where to go on
    assert upload_answer(server, requests[0]) == {"off": 600}
    assert server.counters.upload_chunks == 3
    for request in requests[3:-1]:
        assert upload_answer(server, request) == {"off": request.off + len(request.data)}
    last = img.ImageUploadWriteResponse.loads(send(server, requests[-1]))  # as smpclient reads it
    assert (last.off, last.match) == (len(data), True)
    # the session is over: a chunk past off 0 is told to start from the beginning
    assert upload_answer(server, requests[-1]) == {"off": 0}

    other, _ = served(images)
    for request in upload_requests(data, sha=hashlib.sha256(b"another").digest()):
        answer = upload_answer(other, request)
    assert answer == {"off": len(data), "match": False}


def test_a_corrupted_chunk_is_refused_with_invalid_hash(images: dict[str, bytes]) -> None:
    server, _ = served(images)
    server.faults = SmpFaults(corrupt_chunk=4)
    data = images["new"]
    frames = [send(server, r) for r in upload_requests(data, sha=hashlib.sha256(data).digest())]
    error = img.ImageManagementErrorV2.loads(frames[-1])
    assert error.err.rc is img.IMG_MGMT_ERR.INVALID_HASH
    assert server.faults.corrupted
    assert [s["slot"] for s in server.bootloader.states()] == [0]
    assert (server.counters.upload_chunks, server.counters.errors) == (len(frames), 1)


def test_a_drop_is_asked_for_once_the_offset_is_reached(images: dict[str, bytes]) -> None:
    server, _ = served(images)
    server.faults = SmpFaults(drop_at_bytes=500)
    data = images["new"]
    requests = upload_requests(data, sha=hashlib.sha256(data).digest())
    dropped = []
    for request in requests:
        server.handle(bytes(request))
        dropped.append(server.take_drop())
    assert dropped == [False, False, True] + [False] * (len(requests) - 3)  # at 600 bytes
    assert not server.take_drop()  # asking clears it
    assert server.bootloader.secondary is not None
    # a request answered with the expected offset writes nothing: no chunk, no drop
    server.faults = SmpFaults(drop_at_bytes=1, corrupt_chunk=1)
    server.handle(bytes(requests[2]))
    assert not server.take_drop()
    assert server.faults.chunks == 0


def test_task_statistics_as_zephyr_reports_them(images: dict[str, bytes]) -> None:
    status = DeviceStatus(uptime_s=2.0, measurements=10, radio_events=30)
    server = SmpServer(Bootloader(read_image(images["old"])), device=lambda: status)
    tasks = os_mgmt.TaskStatisticsReadResponse.loads(
        send(server, os_mgmt.TaskStatisticsReadRequest())
    ).tasks
    assert sorted(tasks, key=lambda name: tasks[name].tid) == ["idle", "main", "bt_rx", "smp"]
    assert (tasks["idle"].prio, tasks["main"].prio, tasks["smp"].state) == (15, 0, 0x80)
    assert (tasks["main"].cswcnt, tasks["bt_rx"].cswcnt, tasks["smp"].cswcnt) == (10, 30, 2)
    busy = sum(t.runtime or 0 for name, t in tasks.items() if name != "idle")
    assert tasks["idle"].runtime == 2 * CYCLES_PER_SECOND - busy
    assert tasks["idle"].cswcnt == 42
    assert all((t.last_checkin, t.next_checkin) == (0, 0) for t in tasks.values())
    early = task_statistics(DeviceStatus(uptime_s=0.0, measurements=500), SmpCounters())
    assert early["idle"]["runtime"] == 0  # never negative


def test_statistics_groups_and_their_counters(images: dict[str, bytes]) -> None:
    status = DeviceStatus(groups={"ble": {"notifications": 7, "connections": 1}})
    server = SmpServer(Bootloader(read_image(images["old"])), device=lambda: status)
    listed = stat.ListOfGroupsResponse.loads(send(server, stat.ListOfGroupsRequest()))
    assert listed.stat_list == ("smp", "ble")
    ble = stat.GroupDataResponse.loads(send(server, stat.GroupDataRequest(name="ble")))
    assert (ble.name, ble.fields) == ("ble", {"notifications": 7, "connections": 1})
    request = stat.GroupDataRequest(name="smp")
    smp = stat.GroupDataResponse.loads(send(server, request))
    assert smp.fields["requests"] == 3
    assert smp.fields["responses"] == 2  # this one is being answered
    assert smp.fields["bytes_in"] == len(bytes(stat.ListOfGroupsRequest())) + len(
        bytes(stat.GroupDataRequest(name="ble"))
    ) + len(bytes(request))
    assert (smp.fields["errors"], smp.fields["upload_chunks"]) == (0, 0)

    unknown = send(server, stat.GroupDataRequest(name="flash"))
    error = stat.StatisticsManagementErrorV2.loads(unknown)
    assert error.err.rc is stat.STAT_MGMT_ERR.ERR_INVALID_GROUP
    legacy = send(server, stat.GroupDataRequest(name="flash", version=Version.V1))
    assert cbor2.loads(legacy[Header.SIZE :]) == {"rc": MGMT_ERR.ENOENT}  # Zephyr's translation
    unnamed = send(server, stat.GroupDataRequest(name=""))
    assert cbor2.loads(unnamed[Header.SIZE :]) == {"rc": MGMT_ERR.EINVAL}
    assert server.counters.errors == 3
    server.booted()  # statistics are RAM state
    assert server.counters == SmpCounters()
