"""Device Information (0x180A) strings, System ID, PnP ID, and Battery Level 0x2A19."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import DecodeError
from gateway.ieee11073 import codecs, decode, mdc
from gateway.ieee11073.dis import (
    MDC_ATTR_VAL_BATT_CHARGE,
    BatteryLevel,
    DisString,
    FirmwareRevision,
    HardwareRevision,
    ManufacturerName,
    ModelNumber,
    PnpId,
    SerialNumber,
    SoftwareRevision,
    SystemId,
    VendorIdSource,
)
from gateway.ieee11073.measurement import Measurement
from gateway.ieee11073.numbers import Float

STRING_TYPES: list[type[DisString]] = [
    ManufacturerName,
    ModelNumber,
    SerialNumber,
    HardwareRevision,
    FirmwareRevision,
    SoftwareRevision,
]


def test_string_uuids_match_the_assigned_numbers() -> None:
    # Bluetooth Assigned Numbers (bleak/uuids.py): 2A29 manufacturer, 2A24 model, 2A25 serial,
    # 2A27 hardware, 2A26 firmware, 2A28 software revision.
    assert {t.UUID: t for t in STRING_TYPES} == {
        0x2A29: ManufacturerName,
        0x2A24: ModelNumber,
        0x2A25: SerialNumber,
        0x2A27: HardwareRevision,
        0x2A26: FirmwareRevision,
        0x2A28: SoftwareRevision,
    }
    for kind in STRING_TYPES:
        assert codecs()[kind.UUID] is kind


@pytest.mark.parametrize("kind", STRING_TYPES)
@pytest.mark.parametrize(
    ("raw", "text", "nuls"),
    [
        (b"Nordic Semiconductor", "Nordic Semiconductor", 0),  # GSS: UTF-8, no terminator
        (b"1.2.3\x00", "1.2.3", 1),  # C string with its terminator
        (b"SN-0042\x00\x00\x00\x00", "SN-0042", 4),  # NUL-padded fixed buffer
        ("Gerät µ".encode(), "Gerät µ", 0),  # multi-byte UTF-8
        (b"", "", 0),
        (b"\x00", "", 1),
        (b"A\x00B", "A\x00B", 0),  # an interior NUL is text, only trailing ones are stripped
    ],
)
def test_strings_round_trip_and_keep_trailing_nuls(
    kind: type[DisString], raw: bytes, text: str, nuls: int
) -> None:
    value = decode(kind.UUID, raw)
    assert value == kind(text, nuls)
    assert str(value) == text
    assert bytes(value) == raw


@pytest.mark.parametrize(
    ("raw", "offset"),
    [
        (b"\xff", 0),
        (b"abc\xc3", 3),  # truncated two-byte sequence
        (b"ab\xed\xa0\x80", 2),  # UTF-16 surrogate, invalid in UTF-8
    ],
)
def test_invalid_utf8_is_a_decode_error(raw: bytes, offset: int) -> None:
    with pytest.raises(DecodeError) as info:
        SerialNumber.from_bytes(raw)
    assert info.value.offset == offset
    assert str(info.value).startswith("Serial Number String (0x2A25): at byte")
    assert "UTF-8" in str(info.value)


def test_string_limits() -> None:
    with pytest.raises(DecodeError):
        ModelNumber.from_bytes(b"x" * 513)  # Core Vol 3 Part F §3.2.9: at most 512 bytes
    assert ModelNumber.from_bytes(b"x" * 512).value == "x" * 512
    with pytest.raises(ValueError, match="cannot end in NUL"):
        ModelNumber("abc\x00")


# GSS System ID example: OUI 0x123456, company-assigned 0x9ABCDE from a Bluetooth address gives
# the EUI-64 0x123456FFFE9ABCDE, sent least significant octet first.
SYSTEM_ID_VECTORS = [
    ("DEBC9AFEFF563412", SystemId(0xFFFE9ABCDE, 0x123456), "123456FFFE9ABCDE"),
    # RonanB96/bluetooth-sig-python tests/gatt/characteristics/test_system_id.py: manufacturer
    # 01 02 03 04 05, OUI 06 07 08 (LSO first).
    ("0102030405060708", SystemId(0x0504030201, 0x080706), "0807060504030201"),
    ("AABBCCDDEE112233", SystemId(0xEEDDCCBBAA, 0x332211), "332211EEDDCCBBAA"),
    # HL7 PHD IG example Device phd-74E8FFFEFF051C00: the IG page shows the wire order, the
    # EUI-64 (IEEE-RA order) of those bytes is 001C05FFFEFFE874.
    ("74E8FFFEFF051C00", SystemId(0xFFFEFFE874, 0x001C05), "001C05FFFEFFE874"),
]


@pytest.mark.parametrize(("hex_value", "expected", "eui64"), SYSTEM_ID_VECTORS)
def test_system_id(hex_value: str, expected: SystemId, eui64: str) -> None:
    data = bytes.fromhex(hex_value)
    value = decode(0x2A23, data)
    assert value == expected
    assert bytes(expected) == data
    assert expected.eui64 == eui64
    assert SystemId.from_eui64(eui64) == expected
    assert SystemId.from_eui64("-".join(eui64[i : i + 2] for i in range(0, 16, 2))) == expected


@pytest.mark.parametrize("hex_value", ["", "01020304050607", "010203040506070809"])
def test_system_id_needs_eight_bytes(hex_value: str) -> None:
    with pytest.raises(DecodeError) as info:
        SystemId.from_bytes(bytes.fromhex(hex_value))
    assert str(info.value).startswith("System ID (0x2A23): at byte")


def test_system_id_from_bad_text() -> None:
    with pytest.raises(ValueError, match="16 hex digits"):
        SystemId.from_eui64("1234")


PNP_VECTORS = [
    # RonanB96/bluetooth-sig-python tests/gatt/characteristics/test_pnp_id.py.
    ("010A000B000100", PnpId(VendorIdSource.BLUETOOTH_SIG, 0x000A, 0x000B, 0x0001)),
    ("02AC0520020100", PnpId(VendorIdSource.USB_IMPLEMENTERS_FORUM, 0x05AC, 0x0220, 0x0001)),
    ("02341278560001", PnpId(VendorIdSource.USB_IMPLEMENTERS_FORUM, 0x1234, 0x5678, 0x0100)),
    # A reserved vendor ID source is kept as an integer (GSS PnP ID: 3-255 reserved).
    ("07FFFFFFFFFFFF", PnpId(7, 0xFFFF, 0xFFFF, 0xFFFF)),
]


@pytest.mark.parametrize(("hex_value", "expected"), PNP_VECTORS)
def test_pnp_id(hex_value: str, expected: PnpId) -> None:
    data = bytes.fromhex(hex_value)
    assert decode(0x2A50, data) == expected
    assert bytes(expected) == data


@pytest.mark.parametrize("hex_value", ["010A000B0001", "010A000B00010000"])
def test_pnp_id_needs_seven_bytes(hex_value: str) -> None:
    with pytest.raises(DecodeError):
        PnpId.from_bytes(bytes.fromhex(hex_value))


@pytest.mark.parametrize("level", [0, 1, 15, 64, 100])
def test_battery_level_values(level: int) -> None:
    # GSS Battery Level: uint8 percentage 0-100.
    value = decode(0x2A19, bytes((level,)))
    assert value == BatteryLevel(level)
    assert bytes(value) == bytes((level,))


def test_battery_level_is_a_phd_observation() -> None:
    # HL7 PHD IG input/examples/bundle-continuousnonin.json: MDC_ATTR_VAL_BATT_CHARGE 67996 in %.
    assert MDC_ATTR_VAL_BATT_CHARGE == 67996 == (1 << 16) | 2460
    assert BatteryLevel(64).measurements() == (
        Measurement(67996, Float(64, 0), mdc.MDC_DIM_PERCENT),
    )


@pytest.mark.parametrize(("hex_value", "offset"), [("65", 0), ("FF", 0), ("", 0), ("6400", 1)])
def test_battery_level_rejects_reserved_and_wrong_length(hex_value: str, offset: int) -> None:
    with pytest.raises(DecodeError) as info:
        BatteryLevel.from_bytes(bytes.fromhex(hex_value))
    assert info.value.offset == offset
    assert str(info.value).startswith("Battery Level (0x2A19): at byte")


@pytest.mark.parametrize("kind", STRING_TYPES)
@settings(derandomize=True, max_examples=150)
@given(data=st.binary(max_size=40))
def test_fuzz_strings(kind: type[DisString], data: bytes) -> None:
    try:
        value = kind.from_bytes(data)
    except DecodeError:
        return
    assert bytes(value) == data


@settings(derandomize=True, max_examples=300)
@given(st.binary(max_size=10))
def test_fuzz_fixed_size_values(data: bytes) -> None:
    for kind in (SystemId, PnpId, BatteryLevel):
        try:
            value = kind.from_bytes(data)
        except DecodeError:
            continue
        assert bytes(value) == data
