"""Health Thermometer service codecs: Temperature Measurement 0x2A1C, Temperature Type 0x2A1D,
Intermediate Temperature 0x2A1E."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import DecodeError
from gateway.ieee11073 import decode
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.hts import (
    IntermediateTemperature,
    TemperatureMeasurement,
    TemperatureType,
    TemperatureTypeValue,
    TemperatureUnit,
)
from gateway.ieee11073.measurement import Measurement
from gateway.ieee11073.numbers import Float, Special
from tests.codec_checks import decodes_exactly_or_rejects, near_length

# MDC codes spelled out so that the test checks the codec's constants (docs/standards.md).
TEMP_BODY, DEGC, FAHR = 150364, 6048, 4416

Cls = type[TemperatureMeasurement] | type[IntermediateTemperature]
CLASSES: list[Cls] = [TemperatureMeasurement, IntermediateTemperature]

# Nordic Android-BLE-Common-Library
# ble-common/src/test/.../callback/ht/TemperatureMeasurementDataCallbackTest.java
# (onTemperatureMeasurementReceived): 37.60 °C, 2012-12-05 11:50:27, finger.
NORDIC = bytes([0x06, 0xB0, 0x0E, 0x00, 0xFE, 0xDC, 0x07, 0x0C, 0x05, 0x0B, 0x32, 0x1B, 0x04])
NORDIC_TIME = DateTime(2012, 12, 5, 11, 50, 27)


@pytest.mark.parametrize("cls", CLASSES)
def test_nordic_vector(cls: Cls) -> None:
    value = cls.from_bytes(NORDIC)
    assert value == cls(
        Float(3760, -2), TemperatureUnit.CELSIUS, NORDIC_TIME, TemperatureType.FINGER
    )
    assert bytes(value) == NORDIC
    assert decode(cls.UUID, NORDIC) == value


def test_measurement_and_intermediate_are_different_values() -> None:
    final: object = TemperatureMeasurement.from_bytes(NORDIC)
    assert final != IntermediateTemperature.from_bytes(NORDIC)


# SpeziBluetooth Tests/SpeziBluetoothServicesTests/HealthThermometerTests.swift
# (testTemperatureMeasurement): identity tests on the FLOAT 0xAFAFAFAF with these options; the time
# stamp carries only hours, minutes and seconds.
SPEZI_FLOAT = Float.from_raw(0xAFAFAFAF)
SPEZI_TIME = DateTime(0, 0, 0, 13, 12, 12)


@pytest.mark.parametrize(
    "value",
    [
        TemperatureMeasurement(SPEZI_FLOAT, TemperatureUnit.CELSIUS),
        TemperatureMeasurement(SPEZI_FLOAT, TemperatureUnit.FAHRENHEIT),
        TemperatureMeasurement(
            SPEZI_FLOAT, TemperatureUnit.CELSIUS, SPEZI_TIME, TemperatureType.EAR
        ),
        TemperatureMeasurement(SPEZI_FLOAT, TemperatureUnit.CELSIUS, None, TemperatureType.EAR),
        TemperatureMeasurement(SPEZI_FLOAT, TemperatureUnit.CELSIUS, SPEZI_TIME),
    ],
)
def test_spezi_identity_values(value: TemperatureMeasurement) -> None:
    data = bytes(value)
    assert data[1:5] == bytes([0xAF] * 4)
    assert TemperatureMeasurement.from_bytes(data) == value


def test_spezi_float_is_negative_mantissa_and_exponent() -> None:
    # 0xAFAFAFAF: exponent 0xAF = -81, mantissa 0xAFAFAF = -5263441 (IEEE 11073-20601 §F.8).
    assert Float.from_raw(0xAFAFAFAF) == Float(-5263441, -81)


# Nordic ble-common/src/test/.../callback/ht/TemperatureTypeDataCallbackTest.java: [3] is "ear";
# SpeziBluetooth HealthThermometerTests.testTemperatureType / testTemperatureTypeStrings: every
# defined value, reserved 0 and the unknown 23.
@pytest.mark.parametrize(
    ("raw", "expected"),
    [(int(t), t) for t in TemperatureType] + [(0, 0), (23, 23), (255, 255)],
)
def test_temperature_type(raw: int, expected: TemperatureType | int) -> None:
    value = TemperatureTypeValue.from_bytes(bytes([raw]))
    assert value == TemperatureTypeValue(expected)
    assert type(value.temperature_type) is type(expected)
    assert bytes(value) == bytes([raw])
    assert decode(0x2A1D, bytes([raw])) == value


def test_temperature_type_nordic_ear() -> None:
    assert TemperatureTypeValue.from_bytes(bytes([3])).temperature_type is TemperatureType.EAR


@pytest.mark.parametrize(("data", "offset"), [(b"", 0), (bytes([3, 0]), 1)])
def test_temperature_type_malformed(data: bytes, offset: int) -> None:
    # Nordic TemperatureTypeDataCallbackTest.onInvalidDataReceived: [3, 0] is invalid.
    with pytest.raises(DecodeError) as info:
        TemperatureTypeValue.from_bytes(data)
    assert (info.value.characteristic, info.value.offset) == ("Temperature Type (0x2A1D)", offset)


# -- measurements() -----------------------------------------------------------------------------


def test_measurements_nordic_vector() -> None:
    assert TemperatureMeasurement.from_bytes(NORDIC).measurements() == (
        Measurement(TEMP_BODY, Float(3760, -2), DEGC, timestamp=NORDIC_TIME, body_site="finger"),
    )


def test_measurements_fahrenheit_without_options() -> None:
    data = bytes.fromhex("01 76 03 00 FF")  # 886 × 10^-1 = 88.6 °F, no time stamp, no type
    value = IntermediateTemperature.from_bytes(data)
    assert value == IntermediateTemperature(Float(886, -1), TemperatureUnit.FAHRENHEIT)
    assert value.measurements() == (Measurement(TEMP_BODY, Float(886, -1), FAHR),)


@pytest.mark.parametrize(
    ("temperature_type", "body_site"),
    [
        (TemperatureType.ARMPIT, "armpit"),
        (TemperatureType.BODY, "body"),
        (TemperatureType.EAR, "ear"),
        (TemperatureType.FINGER, "finger"),
        (TemperatureType.GI_TRACT, "gi-tract"),
        (TemperatureType.MOUTH, "mouth"),
        (TemperatureType.RECTUM, "rectum"),
        (TemperatureType.TOE, "toe"),
        (TemperatureType.TYMPANUM, "tympanum"),
        (0, None),  # reserved: no body site
        (42, None),
        (None, None),
        (4, "finger"),  # a plain int names the same type as the enum member
    ],
)
def test_body_site_keys(
    temperature_type: TemperatureType | int | None, body_site: str | None
) -> None:
    value = TemperatureMeasurement(Float.of(Special.NAN), temperature_type=temperature_type)
    again = TemperatureMeasurement.from_bytes(bytes(value))
    assert again == value
    assert again.measurements() == (
        Measurement(TEMP_BODY, Float.of(Special.NAN), DEGC, body_site=body_site),
    )


# -- every flag combination ---------------------------------------------------------------------


def _expected_length(flags: int) -> int:
    """Flags, FLOAT, [Date Time 7], [type 1] (GSS Temperature Measurement)."""
    return 5 + 7 * bool(flags & 0x02) + bool(flags & 0x04)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("flags", range(256))
def test_round_trip_every_flag_combination(cls: Cls, flags: int) -> None:
    value = cls(
        Float(-4015, -2),
        TemperatureUnit(flags & 0x01),
        DateTime(2024, 2, 29, 23, 59, 59) if flags & 0x02 else None,
        (flags % 11) if flags & 0x04 else None,
        flags & 0xF8,
    )
    data = bytes(value)
    assert data[0] == flags
    assert value.flags == flags
    assert len(data) == _expected_length(flags)
    assert cls.from_bytes(data) == value


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature_type": 256}, r"temperature type 256 outside 0\.\.255"),
        ({"rfu_flags": 0x04}, r"rfu_flags 0x04 outside the reserved bits 0xF8"),
    ],
)
def test_constructor_range_checks(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TemperatureMeasurement(Float(1, 0), **kwargs)  # type: ignore[arg-type]


# -- malformed values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "offset", "expected"),
    [
        (0, 0, "1 byte(s) of flags, found 0"),
        (4, 1, "4 byte(s) of Temperature Measurement Value, found 3"),
        (5, 5, "7 byte(s) of Date Time, found 0"),
        (11, 5, "7 byte(s) of Date Time, found 6"),
        # Nordic TemperatureMeasurementDataCallbackTest.onInvalidDataReceived: the type is missing.
        (12, 12, "1 byte(s) of Temperature Type, found 0"),
    ],
)
def test_truncated(length: int, offset: int, expected: str) -> None:
    with pytest.raises(DecodeError) as info:
        TemperatureMeasurement.from_bytes(NORDIC[:length])
    assert str(info.value) == (
        f"Temperature Measurement (0x2A1C): at byte {offset}: expected {expected}"
    )


@pytest.mark.parametrize("cls", CLASSES)
def test_every_prefix_and_trailing_byte_rejected(cls: Cls) -> None:
    name = f"{cls.NAME} (0x{cls.UUID:04X})"
    for length in range(len(NORDIC)):
        with pytest.raises(DecodeError) as info:
            cls.from_bytes(NORDIC[:length])
        assert info.value.characteristic == name
    with pytest.raises(DecodeError) as info:
        cls.from_bytes(NORDIC + b"\x00")
    assert (info.value.characteristic, info.value.offset) == (name, len(NORDIC))
    assert info.value.expected == "end of value, found 1 extra byte(s)"


def test_flag_says_present_but_missing() -> None:
    with pytest.raises(DecodeError) as info:
        IntermediateTemperature.from_bytes(bytes.fromhex("02 6E 01 00 FF"))
    assert str(info.value) == (
        "Intermediate Temperature (0x2A1E): at byte 5: expected 7 byte(s) of Date Time, found 0"
    )


def test_impossible_time_stamp() -> None:
    data = bytearray(NORDIC)
    data[11] = 60  # seconds 60
    with pytest.raises(DecodeError) as info:
        TemperatureMeasurement.from_bytes(bytes(data))
    assert info.value.offset == 5
    assert info.value.expected.startswith("valid Date Time (seconds 60 outside")


# -- fuzzing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("uuid", [0x2A1C, 0x2A1D, 0x2A1E])
@settings(derandomize=True, max_examples=300)
@given(data=st.binary(max_size=20))
def test_fuzz_random_bytes(uuid: int, data: bytes) -> None:
    decodes_exactly_or_rejects(uuid, data)


@pytest.mark.parametrize("uuid", [0x2A1C, 0x2A1E])
@settings(derandomize=True, max_examples=400)
@given(data=st.integers(0, 255).flatmap(lambda f: near_length(f, _expected_length(f))))
def test_fuzz_structured_bytes(uuid: int, data: bytes) -> None:
    decodes_exactly_or_rejects(uuid, data)


date_times = st.builds(
    DateTime,
    st.sampled_from([0, 1582, 2024, 9999]),
    st.integers(0, 12),
    st.integers(0, 31),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
)
values = st.sampled_from(CLASSES).flatmap(
    lambda cls: st.builds(
        cls,
        st.integers(0, 0xFFFFFFFF).map(Float.from_raw),
        st.sampled_from(TemperatureUnit),
        st.none() | date_times,
        st.none() | st.integers(0, 255),
        st.sampled_from([0x00, 0x08, 0x10, 0x80, 0xF8]),
    )
)


@settings(derandomize=True, max_examples=300)
@given(value=values)
def test_fuzz_values_round_trip(value: TemperatureMeasurement | IntermediateTemperature) -> None:
    assert type(value).from_bytes(bytes(value)) == value
