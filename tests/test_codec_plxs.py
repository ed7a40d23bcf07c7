"""Pulse Oximeter service codecs: PLX Spot-Check 0x2A5E, PLX Continuous 0x2A5F, PLX Features
0x2A60."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import DecodeError
from gateway.ieee11073 import decode
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.measurement import Condition, Measurement, MeasurementStatus
from gateway.ieee11073.numbers import SFloat, Special
from gateway.ieee11073.plxs import (
    PlxContinuousMeasurement,
    PlxDeviceSensorStatus,
    PlxFeatures,
    PlxMeasurementStatus,
    PlxSpotCheckMeasurement,
    PlxSupportedFeatures,
    SpO2PulseRate,
)
from tests.codec_checks import decodes_exactly_or_rejects, near_length

# MDC codes spelled out so that the test checks the codec's constants: docs/standards.md table;
# MDC_PULS_OXIM_PERF_REL 2::19376 and MDC_MODALITY_FAST/SLOW/SPOT 2::19508/19512/19516 from the
# IEEE 11073-10101 tables (SPOT = 150588 as in HL7 PHD IG input/examples/numeric-spotnumeric.json).
SPO2, PULSE_OXIM, PERF_REL = 150456, 149530, 150448
FAST, SLOW, SPOT = 150580, 150584, 150588
PERCENT, BPM = 544, 2720

Status = PlxMeasurementStatus
Device = PlxDeviceSensorStatus

# -- published vectors --------------------------------------------------------------------------

# SpeziBluetooth Tests/SpeziBluetoothServicesTests/PLXTests.swift, testSpotCheckMeasurementCoding.
SPOT_SPEZI = bytes([15, 172, 243, 190, 245, 232, 7, 11, 29, 23, 8, 57, 32, 64, 34, 0, 0, 102, 227])
SPOT_SPEZI_VALUE = PlxSpotCheckMeasurement(
    SFloat(940, -1),
    SFloat(1470, -1),
    DateTime(2024, 11, 29, 23, 8, 57),
    Status.MEASUREMENT_ONGOING | Status.QUESTIONABLE_MEASUREMENT_DETECTED,
    Device.EQUIPMENT_MALFUNCTION_DETECTED | Device.LOW_PERFUSION_DETECTED,
    SFloat(870, -2),
)

# SpeziBluetooth PLXTests.testSimpleMeasurementCoding and testFullMeasurementCoding.
CONTINUOUS_SIMPLE = bytes([28, 95, 0, 90, 0, 32, 0, 0, 0, 0, 87, 240])
CONTINUOUS_FULL = bytes(
    [31, 222, 243, 202, 243, 202, 243, 90, 245, 212, 243, 178, 242, 32, 1, 0, 0, 0, 122, 227]
)

CONTINUOUS_VECTORS = [
    # docs/standards.md and SpeziBluetooth PLXTests.testVerySimpleMeasurementCoding (decoding side).
    pytest.param(
        bytes.fromhex("00 64 00 5A 00"),
        PlxContinuousMeasurement(SFloat(100, 0), SFloat(90, 0)),
        id="design",
    ),
    # SpeziBluetooth PLXTests.testVerySimpleMeasurementCoding (encoding side: 100.0 and 90.0).
    pytest.param(
        bytes([0, 232, 243, 132, 243]),
        PlxContinuousMeasurement(SFloat(1000, -1), SFloat(900, -1)),
        id="spezi-very-simple",
    ),
    pytest.param(
        CONTINUOUS_SIMPLE,
        PlxContinuousMeasurement(
            SFloat(95, 0),
            SFloat(90, 0),
            measurement_status=Status.MEASUREMENT_ONGOING,
            device_sensor_status=Device(0),
            pulse_amplitude_index=SFloat(87, -1),
        ),
        id="spezi-simple",
    ),
    pytest.param(
        CONTINUOUS_FULL,
        PlxContinuousMeasurement(
            SFloat(990, -1),
            SFloat(970, -1),
            SpO2PulseRate(SFloat(970, -1), SFloat(1370, -1)),
            SpO2PulseRate(SFloat(980, -1), SFloat(690, -1)),
            Status.MEASUREMENT_ONGOING | Status.FULLY_QUALIFIED_DATA,
            Device(0),
            SFloat(890, -2),
        ),
        id="spezi-full",
    ),
]


@pytest.mark.parametrize(("data", "expected"), CONTINUOUS_VECTORS)
def test_continuous_vectors(data: bytes, expected: PlxContinuousMeasurement) -> None:
    value = PlxContinuousMeasurement.from_bytes(data)
    assert value == expected
    assert bytes(value) == data
    assert decode(0x2A5F, data) == expected


def test_spot_check_vector() -> None:
    value = PlxSpotCheckMeasurement.from_bytes(SPOT_SPEZI)
    assert value == SPOT_SPEZI_VALUE
    assert bytes(value) == SPOT_SPEZI
    assert decode(0x2A5E, SPOT_SPEZI) == SPOT_SPEZI_VALUE


def test_spot_check_minimal() -> None:
    # The docs/standards.md SpO2/PR pair as a spot check without optional fields.
    data = bytes.fromhex("00 64 00 5A 00")
    assert PlxSpotCheckMeasurement.from_bytes(data) == PlxSpotCheckMeasurement(
        SFloat(100, 0), SFloat(90, 0)
    )


def test_same_value_different_precision() -> None:
    # docs/standards.md keeps the exponent: 100 and 100.0 decode to different values.
    design = PlxContinuousMeasurement.from_bytes(bytes.fromhex("00 64 00 5A 00"))
    spezi = PlxContinuousMeasurement.from_bytes(bytes([0, 232, 243, 132, 243]))
    assert design != spezi
    assert design.spo2.decimal == spezi.spo2.decimal


def test_features_vector() -> None:
    # SpeziBluetooth PLXTests.testPLXFeaturesCoding
    data = bytes([163, 0, 64, 16, 128, 1, 0])
    expected = PlxFeatures(
        PlxSupportedFeatures.MEASUREMENT_STATUS_SUPPORT_PRESENT
        | PlxSupportedFeatures.DEVICE_SENSOR_STATUS_SUPPORT_PRESENT
        | PlxSupportedFeatures.SPO2PR_SLOW
        | PlxSupportedFeatures.MULTIPLE_BONDS,
        Status.CALIBRATION_ONGOING | Status.EARLY_ESTIMATED_DATA,
        Device.NONPULSATILE_SIGNAL_DETECTED | Device.QUESTIONABLE_PULSE_DETECTED,
    )
    value = PlxFeatures.from_bytes(data)
    assert value == expected
    assert bytes(value) == data
    assert decode(0x2A60, data) == expected


# -- measurements() -----------------------------------------------------------------------------


def test_measurements_design_vector() -> None:
    value = PlxContinuousMeasurement.from_bytes(bytes.fromhex("00 64 00 5A 00"))
    assert value.measurements() == (
        Measurement(SPO2, SFloat(100, 0), PERCENT),
        Measurement(PULSE_OXIM, SFloat(90, 0), BPM),
    )


def test_measurements_continuous_full() -> None:
    value = PlxContinuousMeasurement.from_bytes(CONTINUOUS_FULL)
    status = MeasurementStatus.ONGOING | MeasurementStatus.FULLY_QUALIFIED
    assert value.measurements() == (
        Measurement(SPO2, SFloat(990, -1), PERCENT, status=status),
        Measurement(PULSE_OXIM, SFloat(970, -1), BPM, status=status),
        Measurement(SPO2, SFloat(970, -1), PERCENT, status=status, supplemental=(FAST,)),
        Measurement(PULSE_OXIM, SFloat(1370, -1), BPM, status=status, supplemental=(FAST,)),
        Measurement(SPO2, SFloat(980, -1), PERCENT, status=status, supplemental=(SLOW,)),
        Measurement(PULSE_OXIM, SFloat(690, -1), BPM, status=status, supplemental=(SLOW,)),
        Measurement(PERF_REL, SFloat(890, -2), PERCENT, status=status),
    )


def test_measurements_continuous_simple() -> None:
    value = PlxContinuousMeasurement.from_bytes(CONTINUOUS_SIMPLE)
    ongoing = MeasurementStatus.ONGOING
    assert value.measurements() == (
        Measurement(SPO2, SFloat(95, 0), PERCENT, status=ongoing),
        Measurement(PULSE_OXIM, SFloat(90, 0), BPM, status=ongoing),
        Measurement(PERF_REL, SFloat(87, -1), PERCENT, status=ongoing),
    )


def test_measurements_spot_check() -> None:
    time = DateTime(2024, 11, 29, 23, 8, 57)
    status = MeasurementStatus.ONGOING | MeasurementStatus.QUESTIONABLE
    assert SPOT_SPEZI_VALUE.measurements() == (
        Measurement(
            SPO2, SFloat(940, -1), PERCENT, timestamp=time, status=status, supplemental=(SPOT,)
        ),
        Measurement(
            PULSE_OXIM, SFloat(1470, -1), BPM, timestamp=time, status=status, supplemental=(SPOT,)
        ),
        Measurement(PERF_REL, SFloat(870, -2), PERCENT, timestamp=time, status=status),
    )


def test_measurements_spot_check_clock_not_set() -> None:
    # PLXS Spot-Check flags bit 4 "Device Clock is Not Set": the time stamp is the device's own
    # (unset) clock; the measurement says so.
    data = bytes.fromhex("11 61 00 48 00 D0 07 01 01 00 00 05")
    value = PlxSpotCheckMeasurement.from_bytes(data)
    assert value == PlxSpotCheckMeasurement(
        SFloat(97, 0), SFloat(72, 0), DateTime(2000, 1, 1, 0, 0, 5), device_clock_not_set=True
    )
    clock = frozenset({Condition.DEVICE_CLOCK_NOT_SET})
    assert value.measurements() == (
        Measurement(
            SPO2,
            SFloat(97, 0),
            PERCENT,
            timestamp=DateTime(2000, 1, 1, 0, 0, 5),
            conditions=clock,
            supplemental=(SPOT,),
        ),
        Measurement(
            PULSE_OXIM,
            SFloat(72, 0),
            BPM,
            timestamp=DateTime(2000, 1, 1, 0, 0, 5),
            conditions=clock,
            supplemental=(SPOT,),
        ),
    )


# PLXS Measurement Status bits 5-15 → MeasurementStatus (docs/standards.md).
@pytest.mark.parametrize(
    ("bit", "expected"),
    [
        (5, MeasurementStatus.ONGOING),
        (6, MeasurementStatus.EARLY_INDICATION),
        (7, MeasurementStatus.VALIDATED),
        (8, MeasurementStatus.FULLY_QUALIFIED),
        (9, MeasurementStatus.FROM_STORAGE),
        (10, MeasurementStatus.DEMO_DATA),
        (11, MeasurementStatus.TEST_DATA),
        (12, MeasurementStatus.CALIBRATION_ONGOING),
        (13, MeasurementStatus.NOT_AVAILABLE),
        (14, MeasurementStatus.QUESTIONABLE),
        (15, MeasurementStatus.INVALID),
    ],
)
def test_measurement_status_bits(bit: int, expected: MeasurementStatus) -> None:
    value = PlxContinuousMeasurement(
        SFloat.of(Special.NAN),
        SFloat.of(Special.NAN),
        measurement_status=Status(1 << bit | 0b11111),  # reserved bits 0-4 set too: ignored
    )
    again = PlxContinuousMeasurement.from_bytes(bytes(value))
    assert again == value
    assert again.measurement_status == (1 << bit | 0b11111)  # the raw field is kept
    assert [m.status for m in again.measurements()] == [expected, expected]


def test_unknown_device_status_bits_kept() -> None:
    data = bytes.fromhex("04 61 00 48 00 01 80 FF")
    value = PlxSpotCheckMeasurement.from_bytes(data)
    assert value.device_sensor_status == 0xFF8001
    assert Device.SENSOR_DISCONNECTED in (value.device_sensor_status or Device(0))
    assert bytes(value) == data


# -- every flag combination ---------------------------------------------------------------------

TIME = DateTime(2024, 2, 29, 23, 59, 59)


def _spot_length(flags: int) -> int:
    """Flags, SpO2, PR, [Date Time 7], [status 2], [device status 3], [PAI 2] (GSS layout)."""
    return (
        5
        + 7 * bool(flags & 0x01)
        + 2 * bool(flags & 0x02)
        + 3 * bool(flags & 0x04)
        + 2 * bool(flags & 0x08)
    )


def _continuous_length(flags: int) -> int:
    """Flags, SpO2, PR, [fast 4], [slow 4], [status 2], [device status 3], [PAI 2] (GSS)."""
    return (
        5
        + 4 * bool(flags & 0x01)
        + 4 * bool(flags & 0x02)
        + 2 * bool(flags & 0x04)
        + 3 * bool(flags & 0x08)
        + 2 * bool(flags & 0x10)
    )


@pytest.mark.parametrize("flags", range(256))
def test_spot_check_round_trip_every_flag_combination(flags: int) -> None:
    value = PlxSpotCheckMeasurement(
        SFloat(975, -1),
        SFloat.of(Special.POSITIVE_INFINITY),
        TIME if flags & 0x01 else None,
        Status(0xFFE0 ^ flags << 8) if flags & 0x02 else None,
        Device(0xABCDEF ^ flags) if flags & 0x04 else None,
        SFloat(-12, -3) if flags & 0x08 else None,
        bool(flags & 0x10),
        flags & 0xE0,
    )
    data = bytes(value)
    assert data[0] == flags
    assert value.flags == flags
    assert len(data) == _spot_length(flags)
    assert PlxSpotCheckMeasurement.from_bytes(data) == value


@pytest.mark.parametrize("flags", range(256))
def test_continuous_round_trip_every_flag_combination(flags: int) -> None:
    value = PlxContinuousMeasurement(
        SFloat(98, 0),
        SFloat(61, 0),
        SpO2PulseRate(SFloat(97, 0), SFloat(62, 0)) if flags & 0x01 else None,
        SpO2PulseRate(SFloat(99, 0), SFloat.of(Special.NRES)) if flags & 0x02 else None,
        Status(0x0120 | flags) if flags & 0x04 else None,
        Device(0x010000 | flags) if flags & 0x08 else None,
        SFloat(35, -1) if flags & 0x10 else None,
        flags & 0xE0,
    )
    data = bytes(value)
    assert data[0] == flags
    assert value.flags == flags
    assert len(data) == _continuous_length(flags)
    assert PlxContinuousMeasurement.from_bytes(data) == value


@pytest.mark.parametrize("presence", range(4))
@pytest.mark.parametrize("other", [0x0000, 0x00FC, 0xFF00, 0x5554])
def test_features_round_trip_every_presence_combination(presence: int, other: int) -> None:
    value = PlxFeatures(
        PlxSupportedFeatures(other | presence),
        Status(0xFFE0) if presence & 0x01 else None,
        Device(0xFFFF) if presence & 0x02 else None,
    )
    data = bytes(value)
    assert len(data) == 2 + 2 * bool(presence & 0x01) + 3 * bool(presence & 0x02)
    assert PlxFeatures.from_bytes(data) == value


@pytest.mark.parametrize(
    ("supported", "status", "device"),
    [
        (PlxSupportedFeatures.MEASUREMENT_STATUS_SUPPORT_PRESENT, None, None),
        (PlxSupportedFeatures(0), Status(0x20), None),
        (PlxSupportedFeatures.DEVICE_SENSOR_STATUS_SUPPORT_PRESENT, None, None),
        (PlxSupportedFeatures(0), None, Device(1)),
    ],
)
def test_features_presence_bits_must_match_fields(
    supported: PlxSupportedFeatures, status: Status | None, device: Device | None
) -> None:
    with pytest.raises(ValueError, match="disagrees with its field"):
        PlxFeatures(supported, status, device)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"measurement_status": Status(0x10000)}, r"measurement status 65536 outside"),
        ({"device_sensor_status": Device(0x1000000)}, r"device and sensor status 16777216 outside"),
        ({"rfu_flags": 0x10}, r"rfu_flags 0x10 outside the reserved bits 0xE0"),
    ],
)
def test_constructor_range_checks(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PlxContinuousMeasurement(SFloat(1, 0), SFloat(1, 0), **kwargs)  # type: ignore[arg-type]


# -- malformed values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "offset", "expected"),
    [
        (0, 0, "1 byte(s) of flags, found 0"),
        (2, 1, "2 byte(s) of SpO2, found 1"),
        (3, 3, "2 byte(s) of PR, found 0"),
        (8, 5, "7 byte(s) of Date Time, found 3"),
        (13, 12, "2 byte(s) of Measurement Status, found 1"),
        (16, 14, "3 byte(s) of Device and Sensor Status, found 2"),
        (18, 17, "2 byte(s) of Pulse Amplitude Index, found 1"),
    ],
)
def test_spot_check_truncated(length: int, offset: int, expected: str) -> None:
    with pytest.raises(DecodeError) as info:
        PlxSpotCheckMeasurement.from_bytes(SPOT_SPEZI[:length])
    assert str(info.value) == (
        f"PLX Spot-Check Measurement (0x2A5E): at byte {offset}: expected {expected}"
    )


@pytest.mark.parametrize(
    ("length", "offset", "expected"),
    [
        (4, 3, "2 byte(s) of SpO2PR-Normal PR, found 1"),
        (6, 5, "2 byte(s) of SpO2PR-Fast SpO2, found 1"),
        (8, 7, "2 byte(s) of SpO2PR-Fast PR, found 1"),
        (10, 9, "2 byte(s) of SpO2PR-Slow SpO2, found 1"),
        (12, 11, "2 byte(s) of SpO2PR-Slow PR, found 1"),
        (14, 13, "2 byte(s) of Measurement Status, found 1"),
        (15, 15, "3 byte(s) of Device and Sensor Status, found 0"),
        (19, 18, "2 byte(s) of Pulse Amplitude Index, found 1"),
    ],
)
def test_continuous_truncated(length: int, offset: int, expected: str) -> None:
    with pytest.raises(DecodeError) as info:
        PlxContinuousMeasurement.from_bytes(CONTINUOUS_FULL[:length])
    assert str(info.value) == (
        f"PLX Continuous Measurement (0x2A5F): at byte {offset}: expected {expected}"
    )


@pytest.mark.parametrize(
    ("cls", "data"),
    [
        (PlxSpotCheckMeasurement, SPOT_SPEZI),
        (PlxContinuousMeasurement, CONTINUOUS_FULL),
        (PlxFeatures, bytes([163, 0, 64, 16, 128, 1, 0])),
    ],
)
def test_every_prefix_and_trailing_byte_rejected(
    cls: type[PlxSpotCheckMeasurement | PlxContinuousMeasurement | PlxFeatures], data: bytes
) -> None:
    name = f"{cls.NAME} (0x{cls.UUID:04X})"
    for length in range(len(data)):
        with pytest.raises(DecodeError) as info:
            cls.from_bytes(data[:length])
        assert info.value.characteristic == name
    with pytest.raises(DecodeError) as info:
        cls.from_bytes(data + b"\xff")
    assert (info.value.characteristic, info.value.offset) == (name, len(data))
    assert info.value.expected == "end of value, found 1 extra byte(s)"


def test_flag_says_present_but_missing() -> None:
    # Flags 0x01 announce the fast pair; only the normal pair follows.
    with pytest.raises(DecodeError) as info:
        PlxContinuousMeasurement.from_bytes(bytes.fromhex("01 64 00 5A 00"))
    assert (info.value.offset, info.value.expected) == (5, "2 byte(s) of SpO2PR-Fast SpO2, found 0")


def test_features_flag_says_present_but_missing() -> None:
    with pytest.raises(DecodeError) as info:
        PlxFeatures.from_bytes(bytes.fromhex("02 00 20 00"))  # u24 expected, two bytes left
    assert str(info.value) == (
        "PLX Features (0x2A60): at byte 2: expected 3 byte(s) of Device and Sensor Status Support,"
        " found 2"
    )


def test_impossible_time_stamp() -> None:
    data = bytearray(SPOT_SPEZI)
    data[8] = 0  # hours stay, day 0 is "unknown": fine
    assert PlxSpotCheckMeasurement.from_bytes(bytes(data)).timestamp == DateTime(
        2024, 11, 0, 23, 8, 57
    )
    data[9] = 24  # hours 24
    with pytest.raises(DecodeError) as info:
        PlxSpotCheckMeasurement.from_bytes(bytes(data))
    assert info.value.offset == 5
    assert info.value.expected.startswith("valid Date Time (hours 24 outside")


# -- fuzzing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("uuid", [0x2A5E, 0x2A5F, 0x2A60])
@settings(derandomize=True, max_examples=300)
@given(data=st.binary(max_size=32))
def test_fuzz_random_bytes(uuid: int, data: bytes) -> None:
    decodes_exactly_or_rejects(uuid, data)


@settings(derandomize=True, max_examples=400)
@given(data=st.integers(0, 255).flatmap(lambda f: near_length(f, _spot_length(f))))
def test_fuzz_structured_spot_check(data: bytes) -> None:
    decodes_exactly_or_rejects(0x2A5E, data)


@settings(derandomize=True, max_examples=400)
@given(data=st.integers(0, 255).flatmap(lambda f: near_length(f, _continuous_length(f))))
def test_fuzz_structured_continuous(data: bytes) -> None:
    decodes_exactly_or_rejects(0x2A5F, data)


@settings(derandomize=True, max_examples=300)
@given(
    data=st.integers(0, 255).flatmap(lambda f: near_length(f, 1 + 2 * (f & 1) + 3 * (f >> 1 & 1)))
)
def test_fuzz_structured_features(data: bytes) -> None:
    decodes_exactly_or_rejects(0x2A60, data)


sfloats = st.integers(0, 0xFFFF).map(SFloat.from_raw)
pairs = st.builds(SpO2PulseRate, sfloats, sfloats)
date_times = st.builds(
    DateTime,
    st.sampled_from([0, 1582, 2024, 9999]),
    st.integers(0, 12),
    st.integers(0, 31),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
)
statuses = st.none() | st.integers(0, 0xFFFF).map(Status)
devices = st.none() | st.integers(0, 0xFFFFFF).map(Device)
rfu = st.sampled_from([0x00, 0x20, 0x40, 0x80, 0xE0])
values = st.builds(
    PlxSpotCheckMeasurement,
    sfloats,
    sfloats,
    st.none() | date_times,
    statuses,
    devices,
    st.none() | sfloats,
    st.booleans(),
    rfu,
) | st.builds(
    PlxContinuousMeasurement,
    sfloats,
    sfloats,
    st.none() | pairs,
    st.none() | pairs,
    statuses,
    devices,
    st.none() | sfloats,
    rfu,
)


@settings(derandomize=True, max_examples=300)
@given(value=values)
def test_fuzz_values_round_trip(value: PlxSpotCheckMeasurement | PlxContinuousMeasurement) -> None:
    assert type(value).from_bytes(bytes(value)) == value
