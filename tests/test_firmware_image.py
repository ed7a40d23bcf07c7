"""MCUboot image checks (gateway/firmware/image.py) on images built by MCUboot's imgtool: the
facts read, the hash recomputed, every way a file can be wrong refused with one sentence, and the
version order an upload follows."""

from __future__ import annotations

import contextlib
import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.firmware.image import (
    FirmwareImage,
    ImageError,
    Version,
    inspect_image,
    upload_refusal,
)
from tests.firmware_images import HEADER_SIZE, build_image

FIRMWARE = bytes(range(256)) * 16  # 4 KiB


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("images")
    return {
        "unsigned": build_image(directory, "1.2.3+4", firmware=FIRMWARE).read_bytes(),
        "ed25519": build_image(directory, "1.2.3+4", firmware=FIRMWARE, key="ed25519").read_bytes(),
        "ecdsa-counter": build_image(
            directory, "2.0.0", firmware=FIRMWARE, key="ecdsa-p256", security_counter=3
        ).read_bytes(),
    }


def hashed_length(data: bytes) -> int:
    """Header + firmware + protected TLVs, from the header's own fields (MCUboot design.md)."""
    _magic, _load, hdr_size, protect_tlv_size, img_size = struct.unpack_from("<IIHHI", data)
    return hdr_size + img_size + protect_tlv_size


@pytest.mark.parametrize(
    ("name", "version", "signature"),
    [
        ("unsigned", Version(1, 2, 3, 4), None),
        ("ed25519", Version(1, 2, 3, 4), "Ed25519"),
        ("ecdsa-counter", Version(2, 0, 0), "ECDSA P-256/P-384"),
    ],
)
def test_imgtool_images_are_read_and_their_hash_checked(
    images: dict[str, bytes], name: str, version: Version, signature: str | None
) -> None:
    data = images[name]
    image = inspect_image(data)
    assert isinstance(image, FirmwareImage)
    assert (image.version, image.signature) == (version, signature)
    assert image.firmware_size == len(FIRMWARE)
    assert image.size == len(data)
    assert image.sha256 == hashlib.sha256(data[: hashed_length(data)]).digest()
    assert image.hash_hex == image.sha256.hex()
    assert data[HEADER_SIZE : HEADER_SIZE + len(FIRMWARE)] == FIRMWARE


def test_protected_tlvs_are_inside_the_hash(images: dict[str, bytes]) -> None:
    data = images["ecdsa-counter"]
    _magic, _load, hdr_size, protect_tlv_size, img_size = struct.unpack_from("<IIHHI", data)
    assert protect_tlv_size > 0
    changed = bytearray(data)
    changed[hdr_size + img_size + protect_tlv_size - 1] ^= 0x01  # the security counter's value
    with pytest.raises(ImageError, match="corrupted"):
        inspect_image(bytes(changed))


@pytest.mark.parametrize("offset", [HEADER_SIZE, HEADER_SIZE + 2000, HEADER_SIZE + 4095])
def test_a_changed_firmware_byte_is_refused(images: dict[str, bytes], offset: int) -> None:
    changed = bytearray(images["ed25519"])
    changed[offset] ^= 0xFF
    with pytest.raises(ImageError, match=r"does not match its SHA256 TLV.*corrupted"):
        inspect_image(bytes(changed))


def test_wrong_files_are_one_sentence_each(images: dict[str, bytes]) -> None:
    data = images["unsigned"]
    cases = {
        b"": "too short",
        data[:20]: "too short",
        b"\x00" * 64: "not an MCUboot image",
        data[: HEADER_SIZE + 100]: "truncated",
        data[:-5]: "truncated",
        data[: hashed_length(data)]: "ends before its unprotected TLV area",
        data[: hashed_length(data)] + b"\x07\x69": "ends before",
        data[: hashed_length(data)] + b"\x00\x00\x08\x00": "is not one",
    }
    for wrong, fragment in cases.items():
        with pytest.raises(ImageError, match=fragment) as caught:
            inspect_image(wrong)
        assert "\n" not in str(caught.value)


@given(st.binary(max_size=600))
def test_any_bytes_give_an_image_or_an_image_error(data: bytes) -> None:
    with contextlib.suppress(ImageError):
        inspect_image(data)


@given(tail=st.binary(min_size=1, max_size=64), cut=st.integers(min_value=1, max_value=60))
def test_damage_after_the_firmware_is_caught_or_harmless(
    images: dict[str, bytes], tail: bytes, cut: int
) -> None:
    base = images["ed25519"]
    damaged = base[:-cut] + tail
    try:
        image = inspect_image(damaged)
    except ImageError:
        return
    # accepted only when the hashed bytes (header, firmware, protected TLVs) are intact
    assert image.sha256 == hashlib.sha256(base[: hashed_length(base)]).digest()
    assert damaged[: hashed_length(base)] == base[: hashed_length(base)]


def test_version_text_and_order() -> None:
    assert Version.parse("1.2.3+4") == Version(1, 2, 3, 4)
    assert Version.parse("1.2.3-build4") == Version(1, 2, 3, 4)
    assert Version.parse("1.2.3.4") == Version(1, 2, 3, 4)  # as Zephyr lists it
    assert Version.parse("2.0") == Version(2, 0, 0, 0)
    assert str(Version(1, 2, 3, 4)) == "1.2.3+4"
    assert str(Version(1, 2, 3)) == "1.2.3"
    assert Version(1, 2, 3, 5) > Version(1, 2, 3, 4) > Version(1, 2, 2, 99) > Version(1, 1, 9)
    assert Version(1, 10, 0) > Version(1, 9, 9)
    for bad in ("", "one.two", "1.2.3.4.5", "1.2.-3", "1.2.3+x", "1.2.3.4+5"):
        with pytest.raises(ImageError, match=r"MAJOR\.MINOR\.REVISION"):
            Version.parse(bad)


def test_only_a_newer_image_goes_unless_forced(images: dict[str, bytes]) -> None:
    image = inspect_image(images["unsigned"])  # 1.2.3+4
    assert upload_refusal(image, Version(1, 2, 3, 3), force=False) is None
    same = upload_refusal(image, Version(1, 2, 3, 4), force=False)
    older = upload_refusal(image, Version(1, 3, 0), force=False)
    assert same == (
        "image version 1.2.3+4 is the same as the running 1.2.3+4; "
        "give --force to install it anyway"
    )
    assert older is not None
    assert "older than the running 1.3.0" in older
    assert upload_refusal(image, Version(1, 3, 0), force=True) is None
