"""Heart Rate service codecs (HRS v1.0 §3.1-3.2)."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import DecodeError
from gateway.ieee11073 import decode, mdc
from gateway.ieee11073.hrs import (
    BodySensorLocation,
    BodySensorLocationValue,
    HeartRateFlags,
    HeartRateMeasurement,
    SensorContact,
)
from gateway.ieee11073.measurement import Condition, Measurement
from gateway.ieee11073.numbers import Float

# docs/standards.md vectors.
VECTORS = [
    ("0055", HeartRateMeasurement(85)),
    ("04FF", HeartRateMeasurement(255, SensorContact.NOT_DETECTED)),
    ("1E5532002100", HeartRateMeasurement(85, SensorContact.DETECTED, 50, (33,))),
    # Nordic Android-BLE-Common-Library HeartRateMeasurementDataCallbackTest: uint16 HR with two
    # RR intervals and contact detected (flags 0x17).
    (
        "172C0100040002",
        HeartRateMeasurement(300, SensorContact.DETECTED, None, (1024, 512), uint16=True),
    ),
    # Bumble profiles/heart_rate_service.py layout: "not supported" written with bit 1 set.
    ("0248", HeartRateMeasurement(72, contact_not_supported_bit=True)),
]


@pytest.mark.parametrize(("hex_value", "expected"), VECTORS)
def test_vectors_decode_and_encode(hex_value: str, expected: HeartRateMeasurement) -> None:
    data = bytes.fromhex(hex_value)
    assert HeartRateMeasurement.from_bytes(data) == expected
    assert bytes(expected) == data


def test_measurements_of_design_vector() -> None:
    value = decode(0x2A37, bytes.fromhex("1E5532002100"))
    assert isinstance(value, HeartRateMeasurement)
    assert value.measurements() == (
        Measurement(mdc.MDC_ECG_HEART_RATE, Float(85, 0), mdc.MDC_DIM_BEAT_PER_MIN),
        # 33/1024 s = 32.2265625 ms, kept to 0.1 ms.
        Measurement(mdc.MDC_ECG_TIME_PD_RR_GL, Float(322, -1), mdc.MDC_DIM_MILLI_SEC),
    )


def test_contact_not_detected_is_a_condition() -> None:
    (hr,) = HeartRateMeasurement(255, SensorContact.NOT_DETECTED).measurements()
    assert hr.conditions == frozenset({Condition.SENSOR_CONTACT_NOT_DETECTED})


def test_rr_interval_extremes_fit_a_float() -> None:
    value = HeartRateMeasurement(60, rr_intervals=(0, 1, 0xFFFF))
    rr = [m.value for m in value.measurements()[1:]]
    assert [v.decimal for v in rr if v is not None] == [
        Decimal("0.0"),
        Decimal("1.0"),
        Decimal("63999.0"),
    ]


def _all_flag_combinations() -> list[HeartRateMeasurement]:
    values = []
    for uint16, contact, ee, rr in itertools.product(
        (False, True),
        [*SensorContact, "not-supported-bit"],
        (None, 0, 0xFFFF),
        (None, (0,), (1, 2, 0xFFFF)),
    ):
        if contact == "not-supported-bit":
            values.append(
                HeartRateMeasurement(200, SensorContact.NOT_SUPPORTED, ee, rr, uint16, True)
            )
        else:
            assert isinstance(contact, SensorContact)
            values.append(HeartRateMeasurement(300 if uint16 else 200, contact, ee, rr, uint16))
    return values


@pytest.mark.parametrize("value", _all_flag_combinations(), ids=repr)
def test_round_trip_every_flag_combination(value: HeartRateMeasurement) -> None:
    assert HeartRateMeasurement.from_bytes(bytes(value)) == value


def test_every_flag_combination_is_covered() -> None:
    seen = {int(v.flags) for v in _all_flag_combinations()}
    assert seen == set(range(0x20))


@pytest.mark.parametrize(
    ("hex_value", "offset", "fragment"),
    [
        ("", 0, "1 byte(s) of flags"),
        ("01", 1, "2 byte(s) of heart rate (uint16)"),
        ("0855", 2, "2 byte(s) of energy expended"),
        ("1055", 2, "one or more 2-byte RR intervals, found 0"),
        ("105501", 2, "one or more 2-byte RR intervals, found 1"),
        ("005500", 2, "end of value, found 1 extra byte(s)"),
    ],
)
def test_malformed_values_name_characteristic_and_offset(
    hex_value: str, offset: int, fragment: str
) -> None:
    with pytest.raises(DecodeError) as info:
        HeartRateMeasurement.from_bytes(bytes.fromhex(hex_value))
    assert info.value.offset == offset
    assert fragment in str(info.value)
    assert str(info.value).startswith("Heart Rate Measurement (0x2A37): at byte")


def test_flags_enum_matches_spec_bits() -> None:
    assert HeartRateFlags.RR_INTERVAL_PRESENT == 0x10
    assert HeartRateFlags.ENERGY_EXPENDED_PRESENT == 0x08


def test_body_sensor_location() -> None:
    assert BodySensorLocationValue.from_bytes(b"\x01") == BodySensorLocationValue(
        BodySensorLocation.CHEST
    )
    assert BodySensorLocationValue.from_bytes(b"\x09").location == 9  # reserved, kept
    with pytest.raises(DecodeError):
        BodySensorLocationValue.from_bytes(b"\x01\x02")


@settings(derandomize=True, max_examples=400)
@given(st.binary(max_size=24))
def test_fuzz_heart_rate(data: bytes) -> None:
    try:
        value = HeartRateMeasurement.from_bytes(data)
    except DecodeError:
        return
    assert bytes(value) == data


@settings(derandomize=True, max_examples=50)
@given(st.binary(max_size=3))
def test_fuzz_body_sensor_location(data: bytes) -> None:
    try:
        value = BodySensorLocationValue.from_bytes(data)
    except DecodeError:
        return
    assert bytes(value) == data
