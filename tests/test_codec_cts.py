"""Current Time service codecs: Current Time 0x2A2B and Local Time Information 0x2A0F."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import DecodeError
from gateway.ieee11073 import decode
from gateway.ieee11073.cts import (
    AdjustReason,
    CurrentTime,
    DstOffset,
    LocalTimeInformation,
)
from gateway.ieee11073.datetime import DateTime


class _Zone(dt.tzinfo):
    """A fixed standard offset plus a fixed DST amount (no system time zone database needed)."""

    def __init__(self, standard: dt.timedelta, dst: dt.timedelta = dt.timedelta(0)) -> None:
        self._standard = standard
        self._dst = dst

    def utcoffset(self, value: dt.datetime | None) -> dt.timedelta:
        return self._standard + self._dst

    def dst(self, value: dt.datetime | None) -> dt.timedelta:
        return self._dst

    def tzname(self, value: dt.datetime | None) -> str:
        return "test"


CET = _Zone(dt.timedelta(hours=1))
CEST = _Zone(dt.timedelta(hours=1), dt.timedelta(hours=1))
IST = _Zone(dt.timedelta(hours=5, minutes=30))

CURRENT_TIME_VECTORS = [
    # RonanB96/bluetooth-sig-python tests/gatt/characteristics/test_current_time.py:
    # 2025-01-15 14:30:45, Wednesday, fractions 33, manual time update.
    (
        "E907010F0E1E2D032101",
        CurrentTime(DateTime(2025, 1, 15, 14, 30, 45), 3, 33, AdjustReason.MANUAL_TIME_UPDATE),
    ),
    # Same file: midnight 2025-01-01, Monday, no adjustment.
    ("E9070101000000010000", CurrentTime(DateTime(2025, 1, 1), 1, 0)),
    # Same file: 2025-12-31 23:59:59, Sunday, fractions 255, external reference + time zone.
    (
        "E9070C1F173B3B07FF06",
        CurrentTime(
            DateTime(2025, 12, 31, 23, 59, 59),
            7,
            255,
            AdjustReason.EXTERNAL_REFERENCE_TIME_UPDATE | AdjustReason.CHANGE_OF_TIME_ZONE,
        ),
    ),
    # Same file: unknown date (year/month/day 0, GSS Date Time), time known, Monday.
    ("000000000C1E00010000", CurrentTime(DateTime(0, 0, 0, 12, 30, 0), 1, 0)),
]


@pytest.mark.parametrize(("hex_value", "expected"), CURRENT_TIME_VECTORS)
def test_current_time_vectors(hex_value: str, expected: CurrentTime) -> None:
    data = bytes.fromhex(hex_value)
    assert decode(0x2A2B, data) == expected
    assert bytes(expected) == data


def test_from_datetime_sets_weekday_and_fractions() -> None:
    moment = dt.datetime(2024, 2, 29, 13, 5, 7, 500_000, tzinfo=CET)
    value = CurrentTime.from_datetime(moment, AdjustReason.EXTERNAL_REFERENCE_TIME_UPDATE)
    assert value == CurrentTime(
        DateTime(2024, 2, 29, 13, 5, 7), 4, 128, AdjustReason.EXTERNAL_REFERENCE_TIME_UPDATE
    )
    # 2024-02-29 13:05:07, Thursday (4), 0x80/256 s, reason 0x02.
    assert bytes(value).hex() == "e807021d0d0507048002"
    assert value.to_datetime() == moment.replace(tzinfo=None)


def test_from_datetime_default_reason_is_manual() -> None:
    value = CurrentTime.from_datetime(dt.datetime(2030, 1, 6, tzinfo=dt.UTC))
    assert value == CurrentTime(DateTime(2030, 1, 6), 7, 0, AdjustReason.MANUAL_TIME_UPDATE)


def test_unknown_date_has_no_datetime() -> None:
    assert CurrentTime(DateTime(0, 0, 0, 12, 30, 0), 1).to_datetime() is None


def test_reserved_adjust_reason_bits_are_kept() -> None:
    value = CurrentTime.from_bytes(bytes.fromhex("E907010F0E1E2D0321F1"))
    assert int(value.adjust_reason) == 0xF1
    assert AdjustReason.MANUAL_TIME_UPDATE in value.adjust_reason
    assert bytes(value).hex().upper() == "E907010F0E1E2D0321F1"


def _all_adjust_reasons() -> list[CurrentTime]:
    return [
        CurrentTime(DateTime(2024, 6, 1, 8, 0, 0), day, 17, AdjustReason(bits))
        for day, bits in itertools.product(range(8), range(16))
    ]


@pytest.mark.parametrize("value", _all_adjust_reasons(), ids=repr)
def test_round_trip_every_reason_and_weekday(value: CurrentTime) -> None:
    assert CurrentTime.from_bytes(bytes(value)) == value


@pytest.mark.parametrize(
    ("hex_value", "offset", "fragment"),
    [
        ("", 0, "7 byte(s) of Date Time"),
        ("E907010F0E1E2D0321", 7, "3 byte(s) of day of week"),
        # Day of week 8 is reserved (GSS Day of Week: 0 unknown, 1-7).
        ("E907010F0E1E2D080000", 7, "valid day of week"),
        # Month 13 (GSS Date Time: 1-12, 0 unknown); vector from RonanB96 test_current_time.py.
        ("E9070D01000000010000", 0, "valid Date Time"),
        ("E907010F0E1E2D03210100", 10, "end of value, found 1 extra byte(s)"),
    ],
)
def test_malformed_current_time(hex_value: str, offset: int, fragment: str) -> None:
    with pytest.raises(DecodeError) as info:
        CurrentTime.from_bytes(bytes.fromhex(hex_value))
    assert info.value.offset == offset
    assert fragment in str(info.value)
    assert str(info.value).startswith("Current Time (0x2A2B): at byte")


LOCAL_TIME_VECTORS = [
    # RonanB96/bluetooth-sig-python tests/gatt/characteristics/test_local_time_information.py.
    ("0404", LocalTimeInformation(4, DstOffset.DAYLIGHT_TIME), dt.timedelta(hours=2)),
    ("FC00", LocalTimeInformation(-4, DstOffset.STANDARD_TIME), dt.timedelta(hours=-1)),
    ("0804", LocalTimeInformation(8, DstOffset.DAYLIGHT_TIME), dt.timedelta(hours=3)),
    ("80FF", LocalTimeInformation(-128, DstOffset.UNKNOWN), None),
    # Nordic Android-BLE-Common-Library TimeZoneDataCallbackTest: 1 → +15 min.
    ("0100", LocalTimeInformation(1), dt.timedelta(minutes=15)),
    # GSS Time Zone limits -48 (UTC-12:00) and +56 (UTC+14:00); DST Offset 8 = +2 h.
    (
        "D002",
        LocalTimeInformation(-48, DstOffset.HALF_AN_HOUR_DAYLIGHT_TIME),
        dt.timedelta(hours=-11, minutes=-30),
    ),
    ("3808", LocalTimeInformation(56, DstOffset.DOUBLE_DAYLIGHT_TIME), dt.timedelta(hours=16)),
]


@pytest.mark.parametrize(("hex_value", "expected", "offset"), LOCAL_TIME_VECTORS)
def test_local_time_information_vectors(
    hex_value: str, expected: LocalTimeInformation, offset: dt.timedelta | None
) -> None:
    data = bytes.fromhex(hex_value)
    value = decode(0x2A0F, data)
    assert value == expected
    assert bytes(expected) == data
    assert expected.utc_offset == offset


def test_reserved_dst_code_is_kept_as_integer() -> None:
    value = LocalTimeInformation.from_bytes(bytes.fromhex("0403"))
    assert value == LocalTimeInformation(4, 3)
    assert value.utc_offset is None
    assert bytes(value) == bytes.fromhex("0403")


@pytest.mark.parametrize(
    "hex_value",
    [
        "3C00",  # Nordic TimeZoneDataCallbackTest: 60 is outside -48..56
        "CF00",  # -49
        "39FF",  # 57
        "04",  # truncated
        "040400",  # trailing byte
    ],
)
def test_malformed_local_time_information(hex_value: str) -> None:
    with pytest.raises(DecodeError) as info:
        LocalTimeInformation.from_bytes(bytes.fromhex(hex_value))
    assert str(info.value).startswith("Local Time Information (0x2A0F): at byte")


def test_local_time_from_aware_datetime() -> None:
    summer = dt.datetime(2024, 7, 1, 12, tzinfo=CEST)
    winter = dt.datetime(2024, 1, 1, 12, tzinfo=CET)
    assert LocalTimeInformation.from_datetime(summer) == LocalTimeInformation(
        4, DstOffset.DAYLIGHT_TIME
    )
    assert LocalTimeInformation.from_datetime(winter) == LocalTimeInformation(
        4, DstOffset.STANDARD_TIME
    )
    india = dt.datetime(2024, 7, 1, tzinfo=IST)  # UTC+05:30
    assert LocalTimeInformation.from_datetime(india) == LocalTimeInformation(22)


def test_local_time_from_datetime_rejects_what_it_cannot_express() -> None:
    with pytest.raises(ValueError, match="aware datetime"):
        LocalTimeInformation.from_datetime(dt.datetime(2024, 1, 1))  # noqa: DTZ001
    odd = dt.timezone(dt.timedelta(minutes=10))
    with pytest.raises(ValueError, match="multiple of 15 minutes"):
        LocalTimeInformation.from_datetime(dt.datetime(2024, 1, 1, tzinfo=odd))
    triple = _Zone(dt.timedelta(0), dt.timedelta(hours=3))
    with pytest.raises(ValueError, match="has no DST Offset code"):
        LocalTimeInformation.from_datetime(dt.datetime(2024, 1, 1, tzinfo=triple))


@settings(derandomize=True, max_examples=400)
@given(st.binary(max_size=12))
def test_fuzz_current_time(data: bytes) -> None:
    try:
        value = CurrentTime.from_bytes(data)
    except DecodeError:
        return
    assert bytes(value) == data


@settings(derandomize=True, max_examples=200)
@given(st.binary(max_size=3))
def test_fuzz_local_time_information(data: bytes) -> None:
    try:
        value = LocalTimeInformation.from_bytes(data)
    except DecodeError:
        return
    assert bytes(value) == data
