"""Blood Pressure service codecs: Measurement 0x2A35, Intermediate Cuff Pressure 0x2A36, Feature
0x2A49."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import DecodeError
from gateway.ieee11073 import decode
from gateway.ieee11073.bps import (
    BloodPressureFeature,
    BloodPressureFeatureValue,
    BloodPressureMeasurement,
    BloodPressureStatus,
    IntermediateCuffPressure,
    PressureUnit,
    PulseRateRange,
    pulse_rate_range,
)
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.measurement import Condition, Measurement
from gateway.ieee11073.numbers import SFloat, Special
from tests.codec_checks import decodes_exactly_or_rejects, near_length

# MDC codes spelled out here so that the test checks the codec's constants (docs/standards.md table;
# MDC_PRESS_CUFF = 2::19228 from IEEE 11073-10101).
BP_COMPOUND, BP_SYS, BP_DIA, BP_MEAN = 150020, 150021, 150022, 150023
PULSE_NIBP, PRESS_CUFF = 149546, 150300
MMHG, KPA, BPM = 3872, 3843, 2720

Cls = type[BloodPressureMeasurement] | type[IntermediateCuffPressure]
CLASSES: list[Cls] = [BloodPressureMeasurement, IntermediateCuffPressure]
APRIL_17 = DateTime(0, 4, 17, 20, 41, 59)  # the vectors' time stamp: year not known

# -- published vectors --------------------------------------------------------------------------

# docs/standards.md, identical to Nordic Android-BLE-Common-Library
# ble-common/src/test/.../callback/bps/BloodPressureMeasurementDataCallbackTest.java
# (onBloodPressureMeasurementReceived_full).
BPM_FULL = bytes.fromhex("1E 8A 00 58 00 78 00 00 00 04 11 14 29 3B 3C 00 01 27 00")

BPM_VECTORS = [
    pytest.param(
        BPM_FULL,
        BloodPressureMeasurement(
            SFloat(138, 0),
            SFloat(88, 0),
            SFloat(120, 0),
            PressureUnit.MMHG,
            APRIL_17,
            SFloat(60, 0),
            1,
            BloodPressureStatus(0x0027),
        ),
        id="design-and-nordic-full",
    ),
    # Nordic BloodPressureMeasurementDataCallbackTest.onBloodPressureMeasurementReceived_some
    pytest.param(
        bytes([0x15, 0xBD, 0xF0, 0x0B, 0x00, 0x9F, 0xF0, 0x3C, 0x00, 0x12, 0x00]),
        BloodPressureMeasurement(
            SFloat(189, -1),
            SFloat(11, 0),
            SFloat(159, -1),
            PressureUnit.KPA,
            pulse_rate=SFloat(60, 0),
            status=BloodPressureStatus.CUFF_TOO_LOOSE | BloodPressureStatus.PULSE_RATE_BELOW_RANGE,
        ),
        id="nordic-some",
    ),
    # Nordic BloodPressureMeasurementDataCallbackTest.onBloodPressureMeasurementReceived_minimal
    pytest.param(
        bytes([0x00, 0xBD, 0xF0, 0x0B, 0x00, 0x9F, 0xF0]),
        BloodPressureMeasurement(SFloat(189, -1), SFloat(11, 0), SFloat(159, -1)),
        id="nordic-minimal",
    ),
]

ICP_VECTORS = [
    # Nordic ble-common/src/test/.../callback/bps/IntermediateCuffPressureDataCallbackTest.java
    # (onIntermediateCuffPressureReceived_full): the unused fields are 0, not NaN.
    pytest.param(
        bytes.fromhex("1E 04 00 00 00 00 00 00 00 04 11 14 29 3B 3C 00 01 27 00"),
        IntermediateCuffPressure(
            SFloat(4, 0),
            SFloat(0, 0),
            SFloat(0, 0),
            PressureUnit.MMHG,
            APRIL_17,
            SFloat(60, 0),
            1,
            BloodPressureStatus(0x0027),
        ),
        id="nordic-full",
    ),
    # Nordic IntermediateCuffPressureDataCallbackTest.onIntermediateCuffPressureReceived_some
    pytest.param(
        bytes([0x15, 0x6F, 0xF0, 0x00, 0x00, 0x00, 0x00, 0x3C, 0x00, 0x12, 0x00]),
        IntermediateCuffPressure(
            SFloat(111, -1),
            SFloat(0, 0),
            SFloat(0, 0),
            PressureUnit.KPA,
            pulse_rate=SFloat(60, 0),
            status=BloodPressureStatus(0x0012),
        ),
        id="nordic-some",
    ),
    # Nordic IntermediateCuffPressureDataCallbackTest.onIntermediateCuffPressureReceived_minimal
    pytest.param(
        bytes([0x00, 0xD7, 0xF0, 0x00, 0x00, 0x00, 0x00]),
        IntermediateCuffPressure(SFloat(215, -1), SFloat(0, 0), SFloat(0, 0)),
        id="nordic-minimal",
    ),
]


@pytest.mark.parametrize(("data", "expected"), BPM_VECTORS)
def test_blood_pressure_measurement_vectors(
    data: bytes, expected: BloodPressureMeasurement
) -> None:
    value = BloodPressureMeasurement.from_bytes(data)
    assert value == expected
    assert bytes(value) == data
    assert decode(0x2A35, data) == expected


@pytest.mark.parametrize(("data", "expected"), ICP_VECTORS)
def test_intermediate_cuff_pressure_vectors(
    data: bytes, expected: IntermediateCuffPressure
) -> None:
    value = IntermediateCuffPressure.from_bytes(data)
    assert value == expected
    assert bytes(value) == data
    assert decode(0x2A36, data) == expected


def test_design_vector_reads_as_documented() -> None:
    # docs/standards.md: 138/88/120 mmHg, date with unknown year, pulse 60, user 1, status 0x0027.
    value = BloodPressureMeasurement.from_bytes(BPM_FULL)
    assert [float(v) for v in (value.systolic, value.diastolic, value.mean_arterial_pressure)] == [
        138.0,
        88.0,
        120.0,
    ]
    assert value.timestamp is not None
    assert value.timestamp.year == 0
    assert value.timestamp.is_complete is False
    assert pulse_rate_range(BloodPressureStatus(0x0027)) is PulseRateRange.WITHIN_RANGE


# SpeziBluetooth Tests/SpeziBluetoothServicesTests/BloodPressureTests.swift
# (testBloodPressureMeasurement / testIntermediateCuffPressure): identity tests on these values,
# no bytes published; the time stamp carries only hours, minutes and seconds.
SPEZI_TIME = DateTime(0, 0, 0, 13, 12, 12)
SPEZI_STATUS = BloodPressureStatus.IRREGULAR_PULSE | BloodPressureStatus.BODY_MOVEMENT


@pytest.mark.parametrize(
    "value",
    [
        BloodPressureMeasurement(
            SFloat.from_decimal("120.5"), SFloat.from_decimal("80.5"), SFloat(60, 0), unit
        )
        for unit in PressureUnit
    ]
    + [
        BloodPressureMeasurement(
            SFloat.from_decimal("120.5"),
            SFloat.from_decimal("80.5"),
            SFloat(60, 0),
            PressureUnit.MMHG,
            SPEZI_TIME,
            SFloat(54, 0),
            0x67,
            SPEZI_STATUS,
        )
    ]
    + [IntermediateCuffPressure(SFloat(56, 0), unit=unit) for unit in PressureUnit]
    + [
        IntermediateCuffPressure(
            SFloat(56, 0),
            unit=PressureUnit.MMHG,
            timestamp=SPEZI_TIME,
            pulse_rate=SFloat(54, 0),
            user_id=0x67,
            status=SPEZI_STATUS,
        )
    ],
)
def test_spezi_identity_values(value: BloodPressureMeasurement | IntermediateCuffPressure) -> None:
    assert type(value).from_bytes(bytes(value)) == value


def test_intermediate_cuff_pressure_unused_fields_default_to_nan() -> None:
    # GSS Intermediate Cuff Pressure: Diastolic and MAP are unused; a sender sets them to NaN.
    value = IntermediateCuffPressure(SFloat(56, 0))
    assert bytes(value) == bytes.fromhex("00 38 00 FF 07 FF 07")
    assert value.unused_diastolic == value.unused_mean == SFloat.of(Special.NAN)


# -- measurements() -----------------------------------------------------------------------------


def test_measurements_design_vector() -> None:
    value = BloodPressureMeasurement.from_bytes(BPM_FULL)
    assert value.measurements() == (
        Measurement(
            BP_COMPOUND,
            timestamp=APRIL_17,
            conditions=frozenset(
                {
                    Condition.BODY_MOVEMENT,
                    Condition.CUFF_TOO_LOOSE,
                    Condition.IRREGULAR_PULSE,
                    Condition.IMPROPER_POSITION,
                }
            ),
            components=(
                Measurement(BP_SYS, SFloat(138, 0), MMHG),
                Measurement(BP_DIA, SFloat(88, 0), MMHG),
                Measurement(BP_MEAN, SFloat(120, 0), MMHG),
            ),
            user_index=1,
        ),
        Measurement(
            PULSE_NIBP,
            SFloat(60, 0),
            BPM,
            timestamp=APRIL_17,
            conditions=frozenset({Condition.IRREGULAR_PULSE}),
            user_index=1,
        ),
    )


def test_measurements_kpa_pulse_below_range() -> None:
    value = BloodPressureMeasurement.from_bytes(
        bytes([0x15, 0xBD, 0xF0, 0x0B, 0x00, 0x9F, 0xF0, 0x3C, 0x00, 0x12, 0x00])
    )
    assert value.measurements() == (
        Measurement(
            BP_COMPOUND,
            conditions=frozenset({Condition.CUFF_TOO_LOOSE, Condition.PULSE_RATE_BELOW_RANGE}),
            components=(
                Measurement(BP_SYS, SFloat(189, -1), KPA),
                Measurement(BP_DIA, SFloat(11, 0), KPA),
                Measurement(BP_MEAN, SFloat(159, -1), KPA),
            ),
        ),
        Measurement(
            PULSE_NIBP,
            SFloat(60, 0),
            BPM,
            conditions=frozenset({Condition.PULSE_RATE_BELOW_RANGE}),
        ),
    )


def test_measurements_minimal_has_no_pulse() -> None:
    value = BloodPressureMeasurement.from_bytes(bytes([0x00, 0xBD, 0xF0, 0x0B, 0x00, 0x9F, 0xF0]))
    assert value.measurements() == (
        Measurement(
            BP_COMPOUND,
            components=(
                Measurement(BP_SYS, SFloat(189, -1), MMHG),
                Measurement(BP_DIA, SFloat(11, 0), MMHG),
                Measurement(BP_MEAN, SFloat(159, -1), MMHG),
            ),
        ),
    )


def test_measurements_intermediate_cuff_pressure() -> None:
    value = IntermediateCuffPressure.from_bytes(
        bytes.fromhex("1E 04 00 00 00 00 00 00 00 04 11 14 29 3B 3C 00 01 27 00")
    )
    assert value.measurements() == (
        Measurement(
            PRESS_CUFF,
            SFloat(4, 0),
            MMHG,
            timestamp=APRIL_17,
            conditions=frozenset(
                {
                    Condition.BODY_MOVEMENT,
                    Condition.CUFF_TOO_LOOSE,
                    Condition.IRREGULAR_PULSE,
                    Condition.IMPROPER_POSITION,
                }
            ),
            user_index=1,
        ),
    )


@pytest.mark.parametrize(
    ("range_bits", "expected_range", "conditions"),
    [
        (0, PulseRateRange.WITHIN_RANGE, frozenset()),
        (1, PulseRateRange.ABOVE_UPPER_LIMIT, frozenset({Condition.PULSE_RATE_ABOVE_RANGE})),
        (2, PulseRateRange.BELOW_LOWER_LIMIT, frozenset({Condition.PULSE_RATE_BELOW_RANGE})),
        (3, PulseRateRange.RESERVED, frozenset()),  # reserved: kept on the wire, no condition
    ],
)
def test_pulse_rate_range_field(
    range_bits: int, expected_range: PulseRateRange, conditions: frozenset[Condition]
) -> None:
    status = BloodPressureStatus(range_bits << 3)
    assert pulse_rate_range(status) is expected_range
    value = BloodPressureMeasurement(
        SFloat(120, 0), SFloat(80, 0), SFloat(93, 0), pulse_rate=SFloat(72, 0), status=status
    )
    again = BloodPressureMeasurement.from_bytes(bytes(value))
    assert again == value
    assert again.measurements() == (
        Measurement(
            BP_COMPOUND,
            conditions=conditions,
            components=(
                Measurement(BP_SYS, SFloat(120, 0), MMHG),
                Measurement(BP_DIA, SFloat(80, 0), MMHG),
                Measurement(BP_MEAN, SFloat(93, 0), MMHG),
            ),
        ),
        Measurement(PULSE_NIBP, SFloat(72, 0), BPM, conditions=conditions),
    )


def test_reserved_status_bits_are_kept_and_ignored() -> None:
    data = bytes.fromhex("10 78 00 50 00 5D 00 00 FF")  # status 0xFF00: only reserved bits
    value = BloodPressureMeasurement.from_bytes(data)
    assert value.status == 0xFF00
    assert bytes(value) == data
    assert value.measurements()[0].conditions == frozenset()


def test_unknown_user_has_no_user_index() -> None:
    # GSS Blood Pressure Measurement, User ID: 0xFF is "unknown user".
    value = BloodPressureMeasurement(
        SFloat(120, 0), SFloat(80, 0), SFloat(93, 0), pulse_rate=SFloat(72, 0), user_id=0xFF
    )
    assert [m.user_index for m in value.measurements()] == [None, None]
    assert BloodPressureMeasurement.from_bytes(bytes(value)).user_id == 0xFF


# -- every flag combination ---------------------------------------------------------------------

TIME = DateTime(2024, 2, 29, 23, 59, 59)


def _expected_length(flags: int) -> int:
    """Flags, three SFLOATs, [Date Time 7], [pulse 2], [user 1], [status 2] (GSS layout)."""
    return (
        7
        + 7 * bool(flags & 0x02)
        + 2 * bool(flags & 0x04)
        + bool(flags & 0x08)
        + 2 * bool(flags & 0x10)
    )


def _value_for_flags(cls: Cls, flags: int) -> BloodPressureMeasurement | IntermediateCuffPressure:
    return cls(
        SFloat(1205, -1),
        SFloat.of(Special.NAN),
        SFloat(-3, 2),
        PressureUnit(flags & 0x01),
        TIME if flags & 0x02 else None,
        SFloat(725, -1) if flags & 0x04 else None,
        flags if flags & 0x08 else None,
        BloodPressureStatus(0x8000 | flags) if flags & 0x10 else None,
        flags & 0xE0,
    )


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("flags", range(256))
def test_round_trip_every_flag_combination(cls: Cls, flags: int) -> None:
    value = _value_for_flags(cls, flags)
    data = bytes(value)
    assert data[0] == flags
    assert value.flags == flags
    assert len(data) == _expected_length(flags)
    assert cls.from_bytes(data) == value


# -- malformed values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "offset", "expected"),
    [
        (0, 0, "1 byte(s) of flags, found 0"),
        (1, 1, "2 byte(s) of Systolic, found 0"),
        (4, 3, "2 byte(s) of Diastolic, found 1"),
        (6, 5, "2 byte(s) of Mean Arterial Pressure, found 1"),
        (7, 7, "7 byte(s) of Date Time, found 0"),
        (13, 7, "7 byte(s) of Date Time, found 6"),
        (15, 14, "2 byte(s) of Pulse Rate, found 1"),
        (16, 16, "1 byte(s) of User ID, found 0"),
        (18, 17, "2 byte(s) of Measurement Status, found 1"),
    ],
)
def test_truncated_value(length: int, offset: int, expected: str) -> None:
    with pytest.raises(DecodeError) as info:
        BloodPressureMeasurement.from_bytes(BPM_FULL[:length])
    assert info.value.characteristic == "Blood Pressure Measurement (0x2A35)"
    assert info.value.offset == offset
    assert str(info.value) == (
        f"Blood Pressure Measurement (0x2A35): at byte {offset}: expected {expected}"
    )


@pytest.mark.parametrize("length", range(len(BPM_FULL)))
def test_every_prefix_is_rejected(length: int) -> None:
    for cls in CLASSES:
        with pytest.raises(DecodeError, match=rf"^{cls.NAME} \(0x{cls.UUID:04X}\): at byte \d+"):
            cls.from_bytes(BPM_FULL[:length])


def test_trailing_bytes() -> None:
    with pytest.raises(DecodeError) as info:
        IntermediateCuffPressure.from_bytes(BPM_FULL + b"\x00")
    assert (info.value.characteristic, info.value.offset) == (
        "Intermediate Cuff Pressure (0x2A36)",
        19,
    )
    assert info.value.expected == "end of value, found 1 extra byte(s)"


def test_flag_says_present_but_missing() -> None:
    # Nordic BloodPressureMeasurementDataCallbackTest.onInvalidDataReceived_noTimestamp: flags 0x03
    # announce a time stamp that is not there.
    with pytest.raises(DecodeError) as info:
        BloodPressureMeasurement.from_bytes(bytes([3, 2, 3, 4, 5, 6, 7]))
    assert info.value.offset == 7
    assert "Date Time" in info.value.expected


def test_too_short_nordic_vector() -> None:
    # Nordic BloodPressureMeasurementDataCallbackTest.onInvalidDataReceived_toShort
    with pytest.raises(DecodeError) as info:
        BloodPressureMeasurement.from_bytes(bytes([1, 2, 3, 4, 5, 6]))
    assert info.value.offset == 5


def test_impossible_time_stamp() -> None:
    data = bytearray(BPM_FULL)
    data[9] = 13  # month 13
    with pytest.raises(DecodeError) as info:
        BloodPressureMeasurement.from_bytes(bytes(data))
    assert info.value.offset == 7
    assert info.value.expected.startswith("valid Date Time (month 13 outside")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"user_id": 256}, r"user ID 256 outside 0\.\.255"),
        ({"status": BloodPressureStatus(0x10000)}, r"measurement status 65536 outside"),
        ({"rfu_flags": 0x01}, r"rfu_flags 0x01 outside the reserved bits 0xE0"),
    ],
)
def test_constructor_range_checks(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BloodPressureMeasurement(SFloat(1, 0), SFloat(1, 0), SFloat(1, 0), **kwargs)  # type: ignore[arg-type]


# -- Blood Pressure Feature ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # SpeziBluetooth BloodPressureTests.testBloodPressureFeatureStrings: all nine = 0x1FF.
        (bytes([0xFF, 0x01]), BloodPressureFeature(0x01FF)),
        # SpeziBluetooth testBloodPressureFeature features2 / features3.
        (
            bytes([0x05, 0x00]),
            BloodPressureFeature.BODY_MOVEMENT_DETECTION
            | BloodPressureFeature.IRREGULAR_PULSE_DETECTION,
        ),
        (
            bytes([0x01, 0x01]),
            BloodPressureFeature.BODY_MOVEMENT_DETECTION | BloodPressureFeature.USER_FACING_TIME,
        ),
        (bytes([0x00, 0x00]), BloodPressureFeature(0)),
        (bytes([0xFF, 0xFF]), BloodPressureFeature(0xFFFF)),  # reserved bits kept
    ],
)
def test_blood_pressure_feature(data: bytes, expected: BloodPressureFeature) -> None:
    value = BloodPressureFeatureValue.from_bytes(data)
    assert value == BloodPressureFeatureValue(expected)
    assert bytes(value) == data
    assert decode(0x2A49, data) == value


def test_blood_pressure_feature_all_named_bits() -> None:
    assert BloodPressureFeatureValue.from_bytes(bytes([0xFF, 0x01])).features == (
        BloodPressureFeature.BODY_MOVEMENT_DETECTION
        | BloodPressureFeature.CUFF_FIT_DETECTION
        | BloodPressureFeature.IRREGULAR_PULSE_DETECTION
        | BloodPressureFeature.PULSE_RATE_RANGE_DETECTION
        | BloodPressureFeature.MEASUREMENT_POSITION_DETECTION
        | BloodPressureFeature.MULTIPLE_BONDS
        | BloodPressureFeature.E2E_CRC
        | BloodPressureFeature.USER_DATA_SERVICE
        | BloodPressureFeature.USER_FACING_TIME
    )


@pytest.mark.parametrize(("data", "offset"), [(b"", 0), (b"\x01", 0), (b"\x01\x00\x00", 2)])
def test_blood_pressure_feature_malformed(data: bytes, offset: int) -> None:
    with pytest.raises(DecodeError) as info:
        BloodPressureFeatureValue.from_bytes(data)
    assert (info.value.characteristic, info.value.offset) == (
        "Blood Pressure Feature (0x2A49)",
        offset,
    )


# -- fuzzing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("uuid", [0x2A35, 0x2A36, 0x2A49])
@settings(derandomize=True, max_examples=300)
@given(data=st.binary(max_size=24))
def test_fuzz_random_bytes(uuid: int, data: bytes) -> None:
    decodes_exactly_or_rejects(uuid, data)


@pytest.mark.parametrize("uuid", [0x2A35, 0x2A36])
@settings(derandomize=True, max_examples=400)
@given(data=st.integers(0, 255).flatmap(lambda f: near_length(f, _expected_length(f))))
def test_fuzz_structured_bytes(uuid: int, data: bytes) -> None:
    decodes_exactly_or_rejects(uuid, data)


sfloats = st.integers(0, 0xFFFF).map(SFloat.from_raw)
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
        sfloats,
        sfloats,
        sfloats,
        st.sampled_from(PressureUnit),
        st.none() | date_times,
        st.none() | sfloats,
        st.none() | st.integers(0, 255),
        st.none() | st.integers(0, 0xFFFF).map(BloodPressureStatus),
        st.sampled_from([0x00, 0x20, 0x40, 0x80, 0xE0]),
    )
)


@settings(derandomize=True, max_examples=300)
@given(value=values)
def test_fuzz_values_round_trip(value: BloodPressureMeasurement | IntermediateCuffPressure) -> None:
    assert type(value).from_bytes(bytes(value)) == value
