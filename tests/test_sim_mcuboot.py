"""The simulator's MCUboot slots (firmware_sim/mcuboot.py) with imgtool-built images: chunked
upload and resume, upload sessions identified by their ``sha`` and the ``match`` of a completed
one, the device's own image check (cross-checked with the gateway's), test, confirm, revert on an
unconfirmed reset, erase, the refusals Zephyr answers with, and the "crashing" image marker."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import pytest
from smp.image_management import IMG_MGMT_ERR

from firmware_sim.mcuboot import CRASH_MARKER, Bootloader, DfuError, SlotImage, read_image
from gateway.firmware.image import Version, inspect_image
from tests.firmware_images import build_image

CHUNK = 237  # what fits an SMP write at ATT MTU 247 after the headers, about


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("sim-images")
    return {
        "old": build_image(directory, "1.0.0", key="ed25519").read_bytes(),
        "new": build_image(directory, "1.1.0+7", key="ecdsa-p256", security_counter=2).read_bytes(),
    }


def upload(boot: Bootloader, data: bytes, *, start: int = 0, sha: bytes | None = None) -> int:
    off = start
    while off < len(data):
        first = off == 0
        off = boot.upload(
            off, data[off : off + CHUNK], len(data) if first else None, sha if first else None
        )
    return off


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def fresh(images: dict[str, bytes]) -> Bootloader:
    return Bootloader(read_image(images["old"]))


def test_the_device_and_the_gateway_read_the_same_facts(images: dict[str, bytes]) -> None:
    for data in images.values():
        device, gateway = read_image(data), inspect_image(data)
        assert device.hash == gateway.sha256
        assert Version.parse(device.version) == gateway.version


def test_upload_test_reset_confirm(images: dict[str, bytes]) -> None:
    boot = fresh(images)
    assert upload(boot, images["new"]) == len(images["new"])
    slots = boot.states()
    assert [(s["slot"], s["version"], s["active"], s["pending"]) for s in slots] == [
        (0, "1.0.0", True, False),
        (1, "1.1.0.7", False, False),
    ]
    new_hash = slots[1]["hash"]
    boot.set_state(new_hash, confirm=False)  # test
    assert boot.states()[1]["pending"] is True
    assert boot.states()[1]["permanent"] is False
    assert boot.reset() == "test"
    running = boot.states()[0]
    assert (running["version"], running["confirmed"], running["hash"]) == (
        "1.1.0.7",
        False,
        new_hash,
    )
    boot.set_state(None, confirm=True)  # the new firmware proved itself
    assert boot.states()[0]["confirmed"] is True
    assert boot.reset() == "none"
    assert boot.states()[0]["version"] == "1.1.0.7"


def test_an_unconfirmed_test_image_is_reverted_at_the_next_reset(images: dict[str, bytes]) -> None:
    boot = fresh(images)
    upload(boot, images["new"])
    boot.set_state(read_image(images["new"]).hash, confirm=False)
    assert boot.reset() == "test"
    assert boot.states()[1]["pending"] is True  # it will revert unless confirmed
    assert boot.reset() == "reverted"
    assert [(s["slot"], s["version"], s["confirmed"]) for s in boot.states()] == [
        (0, "1.0.0", True),
        (1, "1.1.0.7", False),
    ]


def test_confirming_the_secondary_swaps_for_good(images: dict[str, bytes]) -> None:
    boot = fresh(images)
    upload(boot, images["new"])
    boot.set_state(read_image(images["new"]).hash, confirm=True)
    assert boot.states()[1]["permanent"] is True
    assert boot.reset() == "permanent"
    assert boot.states()[0]["confirmed"] is True


def test_an_upload_resumes_where_the_device_stopped(images: dict[str, bytes]) -> None:
    boot = fresh(images)
    data = images["new"]
    off = boot.upload(0, data[:CHUNK], len(data))
    off = boot.upload(off, data[off : off + CHUNK])
    # the link dropped; the client comes back with an offset the device did not reach
    assert boot.upload(off + 3 * CHUNK, data[off + 3 * CHUNK : off + 4 * CHUNK]) == off
    assert boot.upload_offset == off
    assert upload(boot, data, start=off) == len(data)
    assert boot.secondary is not None
    assert boot.secondary.hash == read_image(data).hash


def test_the_device_refuses_what_zephyr_refuses(images: dict[str, bytes]) -> None:
    def code(call: Callable[[], object]) -> IMG_MGMT_ERR:
        with pytest.raises(DfuError) as caught:
            call()
        return caught.value.code

    boot = fresh(images)
    corrupted = bytearray(images["new"])
    corrupted[0x200 + 100] ^= 0x01
    assert code(lambda: upload(boot, bytes(corrupted))) is IMG_MGMT_ERR.INVALID_HASH
    assert boot.secondary is None  # the old firmware keeps running, nothing to test
    assert (
        code(lambda: boot.upload(0, b"\x00" * 64, 4096)) is IMG_MGMT_ERR.INVALID_IMAGE_HEADER_MAGIC
    )
    assert code(lambda: boot.upload(0, images["new"][:CHUNK])) is IMG_MGMT_ERR.INVALID_LENGTH
    assert (
        code(lambda: boot.upload(0, images["new"][:CHUNK], 1 << 20))
        is IMG_MGMT_ERR.INVALID_IMAGE_TOO_LARGE
    )
    short = len(images["new"]) - 10
    boot.upload(0, images["new"][:CHUNK], short)
    assert (
        code(lambda: boot.upload(CHUNK, images["new"][CHUNK:]))
        is IMG_MGMT_ERR.INVALID_IMAGE_DATA_OVERRUN
    )
    assert code(lambda: boot.set_state(b"\x01" * 32, confirm=False)) is IMG_MGMT_ERR.HASH_NOT_FOUND
    assert (
        code(lambda: boot.set_state(None, confirm=False))
        is IMG_MGMT_ERR.IMAGE_SETTING_TEST_TO_ACTIVE_DENIED
    )
    upload(boot, images["new"])
    boot.set_state(read_image(images["new"]).hash, confirm=False)
    assert code(boot.erase) is IMG_MGMT_ERR.IMAGE_ALREADY_PENDING
    assert code(lambda: upload(boot, images["new"])) is IMG_MGMT_ERR.IMAGE_ALREADY_PENDING


def test_erase_empties_the_secondary_slot(images: dict[str, bytes]) -> None:
    boot = fresh(images)
    upload(boot, images["new"])
    boot.erase()
    assert [s["slot"] for s in boot.states()] == [0]
    assert isinstance(boot.primary, SlotImage)


def test_a_truncated_image_is_refused(images: dict[str, bytes]) -> None:
    data = images["old"]
    with pytest.raises(DfuError) as caught:
        read_image(data[:-40])
    assert caught.value.code in {IMG_MGMT_ERR.INVALID_TLV, IMG_MGMT_ERR.TLV_INVALID_SIZE}
    with pytest.raises(DfuError) as caught:
        read_image(data[:16])
    assert caught.value.code is IMG_MGMT_ERR.INVALID_IMAGE_HEADER


def test_an_upload_session_continues_from_its_sha(images: dict[str, bytes]) -> None:
    boot = fresh(images)
    data, sha = images["new"], sha256(images["new"])
    off = boot.upload(0, data[:CHUNK], len(data), sha)
    off = boot.upload(off, data[off : off + CHUNK])
    assert boot.last_match is None  # not complete yet
    # the link dropped; the client starts over with off 0 and the same sha and length
    assert not boot.writes(0, len(data), sha)
    assert boot.upload(0, data[:CHUNK], len(data), sha) == off == 2 * CHUNK
    assert boot.upload_offset == off  # nothing written
    assert boot.writes(off)
    assert not boot.writes(off + CHUNK)
    assert upload(boot, data, start=off) == len(data)
    assert boot.last_match is True
    assert boot.secondary is not None
    assert boot.secondary.hash == read_image(data).hash


@pytest.mark.parametrize(
    "how", ["another sha", "another length", "no sha", "no sha before", "trimmed sha"]
)
def test_an_upload_starts_anew_unless_sha_and_length_match(
    images: dict[str, bytes], how: str
) -> None:
    boot = fresh(images)
    data, sha = images["new"], sha256(images["new"])
    first_sha = None if how == "no sha before" else sha
    boot.upload(0, data[:CHUNK], len(data), first_sha)
    boot.upload(CHUNK, data[CHUNK : 2 * CHUNK])
    again = {
        "another sha": (len(data), sha256(b"other")),
        "another length": (len(data) + 4, sha),
        "no sha": (len(data), None),
        "no sha before": (len(data), sha),
        "trimmed sha": (len(data), sha[:16]),
    }
    length, second_sha = again[how]
    assert boot.writes(0, length, second_sha)
    assert boot.upload(0, data[:CHUNK], length, second_sha) == CHUNK


def test_match_reports_whether_the_image_is_the_one_announced(images: dict[str, bytes]) -> None:
    boot = fresh(images)
    data = images["new"]
    assert upload(boot, data) == len(data)
    assert boot.last_match is None  # no sha, nothing to compare
    boot.erase()
    assert upload(boot, data, sha=sha256(b"another image")) == len(data)
    assert boot.last_match is False  # as Zephyr, reported; the image itself is sound
    assert boot.secondary is not None
    boot.erase()
    assert upload(boot, data, sha=sha256(data)[:16]) == len(data)
    assert boot.last_match is False  # a trimmed sha identifies a session, never matches
    assert boot.upload(0, data[:CHUNK], len(data)) == CHUNK
    assert boot.last_match is None  # only the call completing an upload reports it


def test_a_corrupted_chunk_fails_the_check_and_the_match(images: dict[str, bytes]) -> None:
    boot = fresh(images)
    data = bytearray(images["new"])
    sha = sha256(bytes(data))
    data[3 * CHUNK + 10] ^= 0xFF  # one byte flipped on the way, in the firmware
    with pytest.raises(DfuError) as caught:
        upload(boot, bytes(data), sha=sha)
    assert caught.value.code is IMG_MGMT_ERR.INVALID_HASH
    assert boot.last_match is False
    assert boot.secondary is None
    assert boot.upload_offset == 0  # the session is over: off 0 with the sha starts anew
    assert boot.upload(0, images["new"][:CHUNK], len(data), sha) == CHUNK


def test_a_reset_forgets_the_upload_in_progress(images: dict[str, bytes]) -> None:
    boot = fresh(images)
    data, sha = images["new"], sha256(images["new"])
    boot.upload(0, data[:CHUNK], len(data), sha)
    boot.upload(CHUNK, data[CHUNK : 2 * CHUNK])
    assert boot.reset() == "none"
    assert boot.upload_offset == 0
    assert boot.upload(2 * CHUNK, data[2 * CHUNK : 3 * CHUNK]) == 0  # start from the beginning
    assert boot.upload(0, data[:CHUNK], len(data), sha) == CHUNK  # a new session, not resumed


def test_a_sha_longer_than_sha256_is_refused(images: dict[str, bytes]) -> None:
    boot = fresh(images)
    data = images["new"]
    with pytest.raises(DfuError) as caught:
        boot.upload(0, data[:CHUNK], len(data), b"\x01" * 33)
    assert caught.value.code is IMG_MGMT_ERR.INVALID_HASH
    assert boot.upload_offset == 0


def test_the_crash_marker_in_the_firmware_makes_an_image_crash(
    tmp_path_factory: pytest.TempPathFactory, images: dict[str, bytes]
) -> None:
    directory = tmp_path_factory.mktemp("crash")
    firmware = os.urandom(1000) + CRASH_MARKER + os.urandom(1000)
    crashing = read_image(build_image(directory, "2.0.0", firmware=firmware).read_bytes())
    assert crashing.crashes
    assert crashing.firmware == firmware
    assert not read_image(images["new"]).crashes
    boot = fresh(images)
    assert not boot.primary.crashes
