"""The simulator's MCUboot slots (firmware_sim/mcuboot.py) with imgtool-built images: chunked
upload and resume, the device's own image check (cross-checked with the gateway's), test, confirm,
revert on an unconfirmed reset, erase, and the refusals Zephyr answers with."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from smp.image_management import IMG_MGMT_ERR

from firmware_sim.mcuboot import Bootloader, DfuError, SlotImage, read_image
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


def upload(boot: Bootloader, data: bytes, *, start: int = 0) -> int:
    off = start
    while off < len(data):
        off = boot.upload(off, data[off : off + CHUNK], len(data) if off == 0 else None)
    return off


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
