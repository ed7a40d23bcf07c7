"""Glucose service codecs: Measurement 0x2A18, Measurement Context 0x2A34, Feature 0x2A51, and the
glucose Observations they map to."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import DecodeError
from gateway.fhir import GatewayInfo, MappingContext, SensorInfo, map_measurements
from gateway.fhir.validate import r4b_model
from gateway.ieee11073 import decode
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.gls import (
    CarbohydrateId,
    ConcentrationUnit,
    GlucoseFeature,
    GlucoseFeatureValue,
    GlucoseMeasurement,
    GlucoseMeasurementContext,
    Health,
    Meal,
    MedicationId,
    MedicationUnit,
    SampleLocation,
    SampleType,
    SensorStatus,
)
from gateway.ieee11073.gls import Tester as GlsTester  # "Test…" names are collected by pytest
from gateway.ieee11073.measurement import Condition, Measurement, MeasurementStatus
from gateway.ieee11073.numbers import Float, SFloat, Special
from tests.codec_checks import decodes_exactly_or_rejects, near_length

# MDC codes spelled out so that the test checks the codec's constants (IEEE 11073-10101:
# MDC_CONC_GLU_* = 2::29112.., MDC_CONC_GLU_GEN = 2::28948; MDC_DIM_MILLI_G_PER_DL = 4::2130,
# MDC_DIM_MILLI_MOLE_PER_L = 4::4722).
GLU_CAPILLARY_WB, GLU_CAPILLARY_PLASMA, GLU_GEN, GLU_CONTROL = 160184, 160188, 160020, 160208
MG_PER_DL, MMOL_PER_L = 2130, 4722

# -- published vectors --------------------------------------------------------------------------

# Nordic Android-BLE-Common-Library ble-common/src/test/.../callback/glucose/
# GlucoseMeasurementDataCallbackTest.java (onGlucoseMeasurementReceived): flags 0b011011, sequence
# 1, 2019-02-27 11:10:30, offset -5 min, 30 kg/L, capillary plasma at the finger, status 0x0105.
NORDIC_MEASUREMENT = bytes.fromhex("1B 01 00 E3 07 02 1B 0B 0A 1E FB FF 1E 00 12 05 01")
NORDIC_MEASUREMENT_VALUE = GlucoseMeasurement(
    1,
    DateTime(2019, 2, 27, 11, 10, 30),
    -5,
    SFloat(30, 0),
    SampleType.CAPILLARY_PLASMA,
    SampleLocation.FINGER,
    ConcentrationUnit.KG_PER_L,
    SensorStatus(0x0105),
    context_follows=True,
)
# Nordic GlucoseMeasurementDataCallbackTest.onInvalidDataReceived: flags announce a time offset
# that the value lacks ("time offset missing"), so the status runs off the end.
NORDIC_MEASUREMENT_INVALID = bytes.fromhex("1B 00 00 E2 07 04 1A 0B 09 1E 1E 00 12 05 01")

# docs/standards.md "Glucose": 95 mg/dL sent as 0.00095 kg/L (SFLOAT 0xB05F), capillary whole
# blood at the finger, 2025-03-14 07:30:00, no offset, context follows.
DESIGN_MEASUREMENT = bytes.fromhex("12 07 00 E9 07 03 0E 07 1E 00 5F B0 11")
DESIGN_MEASUREMENT_VALUE = GlucoseMeasurement(
    7,
    DateTime(2025, 3, 14, 7, 30, 0),
    None,
    SFloat(95, -5),
    SampleType.CAPILLARY_WHOLE_BLOOD,
    SampleLocation.FINGER,
    context_follows=True,
)

# Nordic GlucoseMeasurementContextDataCallbackTest.onGlucoseMeasurementContextReceived_full gives
# the fields (flags 0xFF, sequence 0, extended flags 0xB3, carbohydrate "dinner" 100, meal
# "casual", tester/health 0x12, 60 s of exercise at 50 %, long-acting insulin, HbA1c 34.5 %) and
# writes them from Java floats at run time, so it publishes no bytes; the SFLOAT words here are our
# exact encodings of those values (100 = 0x0064, 34.5 = 0xF159) and 123.4 for its 123.45 of
# medication (five digits, more than an SFLOAT mantissa holds). Length (17 bytes) and field order
# are Nordic's, and match GLS §3.2.
NORDIC_CONTEXT_FULL = bytes.fromhex("FF 00 00 B3 03 64 00 04 12 3C 00 32 04 D2 F4 59 F1")
NORDIC_CONTEXT_FULL_VALUE = GlucoseMeasurementContext(
    0,
    extended_flags=0xB3,
    carbohydrate_id=CarbohydrateId.DINNER,
    carbohydrate_kg=SFloat(100, 0),
    meal=Meal.CASUAL,
    tester=GlsTester.HEALTH_CARE_PROFESSIONAL,
    health=Health.MINOR_HEALTH_ISSUES,
    exercise_duration_s=60,
    exercise_intensity_pct=50,
    medication_id=MedicationId.LONG_ACTING_INSULIN,
    medication=SFloat(1234, -1),
    medication_unit=MedicationUnit.LITERS,  # flags 0xFF set bit 5
    hba1c_pct=SFloat(345, -1),
)
# Nordic ..._empty: flags 0, sequence 1. Nordic pads the value to 17 bytes and ignores the
# padding; here trailing bytes are an error (see test_context_nordic_padding_is_rejected).
NORDIC_CONTEXT_EMPTY = bytes.fromhex("00 01 00")
# Nordic ...onInvalidDataReceived: a 5-byte value whose flags announce every field.
NORDIC_CONTEXT_INVALID = bytes.fromhex("FF 00 00 B3 03")

# Nordic GlucoseFeatureDataCallbackTest.onGlucoseFeaturesReceived: bits 4-9 set.
NORDIC_FEATURE = bytes([0b11110000, 0b00000011])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(NORDIC_MEASUREMENT, NORDIC_MEASUREMENT_VALUE, id="nordic"),
        pytest.param(DESIGN_MEASUREMENT, DESIGN_MEASUREMENT_VALUE, id="design"),
    ],
)
def test_measurement_vectors(data: bytes, expected: GlucoseMeasurement) -> None:
    value = GlucoseMeasurement.from_bytes(data)
    assert value == expected
    assert bytes(value) == data
    assert decode(0x2A18, data) == expected


def test_nordic_measurement_reads_as_published() -> None:
    value = GlucoseMeasurement.from_bytes(NORDIC_MEASUREMENT)
    assert value.timestamp.minutes == 5  # Nordic asserts minute 5: base 11:10:30 minus 5 min
    assert value.unit is ConcentrationUnit.KG_PER_L
    assert value.sensor_status is not None
    assert int(value.sensor_status) == 261
    assert SensorStatus.DEVICE_BATTERY_LOW in value.sensor_status
    assert SensorStatus.GENERAL_DEVICE_FAULT not in value.sensor_status
    assert value.context_follows


def test_nordic_invalid_measurement() -> None:
    with pytest.raises(DecodeError) as info:
        GlucoseMeasurement.from_bytes(NORDIC_MEASUREMENT_INVALID)
    assert str(info.value) == (
        "Glucose Measurement (0x2A18): at byte 15: "
        "expected 2 byte(s) of Sensor Status Annunciation, found 0"
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(NORDIC_CONTEXT_FULL, NORDIC_CONTEXT_FULL_VALUE, id="nordic-full"),
        pytest.param(NORDIC_CONTEXT_EMPTY, GlucoseMeasurementContext(1), id="nordic-empty"),
    ],
)
def test_context_vectors(data: bytes, expected: GlucoseMeasurementContext) -> None:
    value = GlucoseMeasurementContext.from_bytes(data)
    assert value == expected
    assert bytes(value) == data
    assert decode(0x2A34, data) == expected


def test_context_nordic_padding_is_rejected() -> None:
    with pytest.raises(DecodeError) as info:
        GlucoseMeasurementContext.from_bytes(NORDIC_CONTEXT_EMPTY + bytes(14))
    assert (info.value.offset, info.value.expected) == (3, "end of value, found 14 extra byte(s)")


def test_context_nordic_invalid() -> None:
    with pytest.raises(DecodeError) as info:
        GlucoseMeasurementContext.from_bytes(NORDIC_CONTEXT_INVALID)
    assert str(info.value) == (
        "Glucose Measurement Context (0x2A34): at byte 5: expected 2 byte(s) of Carbohydrate, "
        "found 0"
    )


def test_context_is_not_a_measurement_source() -> None:
    assert not hasattr(GlucoseMeasurementContext.from_bytes(NORDIC_CONTEXT_FULL), "measurements")


def test_feature_vector() -> None:
    value = GlucoseFeatureValue.from_bytes(NORDIC_FEATURE)
    assert value.features == (
        GlucoseFeature.SENSOR_STRIP_TYPE_ERROR_DETECTION
        | GlucoseFeature.SENSOR_RESULT_HIGH_LOW_DETECTION
        | GlucoseFeature.SENSOR_TEMPERATURE_HIGH_LOW_DETECTION
        | GlucoseFeature.SENSOR_READ_INTERRUPT_DETECTION
        | GlucoseFeature.GENERAL_DEVICE_FAULT
        | GlucoseFeature.TIME_FAULT
    )
    assert GlucoseFeature.MULTIPLE_BOND not in value.features
    assert bytes(value) == NORDIC_FEATURE
    assert decode(0x2A51, NORDIC_FEATURE) == value


@pytest.mark.parametrize(("data", "offset"), [(b"", 0), (b"\x01", 0), (b"\x01\x00\x00", 2)])
def test_feature_malformed(data: bytes, offset: int) -> None:
    with pytest.raises(DecodeError) as info:
        GlucoseFeatureValue.from_bytes(data)
    assert (info.value.characteristic, info.value.offset) == ("Glucose Feature (0x2A51)", offset)


def test_feature_reserved_bits_kept() -> None:
    assert bytes(GlucoseFeatureValue.from_bytes(b"\xff\xff")) == b"\xff\xff"


# -- measurements() -----------------------------------------------------------------------------


def test_measurements_nordic_vector() -> None:
    # 30 kg/L = 3,000,000 mg/dL: the exponent moves by 5, the mantissa stays.
    assert GlucoseMeasurement.from_bytes(NORDIC_MEASUREMENT).measurements() == (
        Measurement(
            GLU_CAPILLARY_PLASMA,
            SFloat(30, 5),
            MG_PER_DL,
            timestamp=DateTime(2019, 2, 27, 11, 5, 30),
            status=MeasurementStatus.QUESTIONABLE,  # sample size insufficient, too cold
            body_site="finger",
        ),
    )


def test_measurements_design_vector_in_mg_per_dl() -> None:
    (m,) = GlucoseMeasurement.from_bytes(DESIGN_MEASUREMENT).measurements()
    assert m == Measurement(
        GLU_CAPILLARY_WB,
        SFloat(95, 0),
        MG_PER_DL,
        timestamp=DateTime(2025, 3, 14, 7, 30, 0),
        body_site="finger",
    )
    assert m.value is not None
    assert m.value.decimal == Decimal(95)


@pytest.mark.parametrize(
    ("sent", "unit", "expected", "unit_code"),
    [
        (SFloat(95, -5), ConcentrationUnit.KG_PER_L, Decimal(95), MG_PER_DL),
        (SFloat(1234, -6), ConcentrationUnit.KG_PER_L, Decimal("123.4"), MG_PER_DL),
        (SFloat(53, -4), ConcentrationUnit.MOL_PER_L, Decimal("5.3"), MMOL_PER_L),
        (SFloat(530, -5), ConcentrationUnit.MOL_PER_L, Decimal("5.30"), MMOL_PER_L),  # precision
    ],
)
def test_units_keep_the_device_precision(
    sent: SFloat, unit: ConcentrationUnit, expected: Decimal, unit_code: int
) -> None:
    value = GlucoseMeasurement(1, DateTime(2025, 1, 1), None, sent, 1, 1, unit)
    (m,) = value.measurements()
    assert m.unit_code == unit_code
    assert m.value is not None
    assert m.value.decimal == expected
    assert str(m.value.decimal) == str(expected)


def test_large_exponent_becomes_a_float() -> None:
    value = GlucoseMeasurement(1, DateTime(2025, 1, 1), None, SFloat(1, 5), 1, 1)
    (m,) = value.measurements()
    assert m.value == Float(1, 10)


def test_special_values_stay_special() -> None:
    value = GlucoseMeasurement(1, DateTime(2025, 1, 1), None, SFloat.of(Special.NAN), 1, 1)
    assert value.measurements()[0].value == SFloat.of(Special.NAN)


@pytest.mark.parametrize(
    ("base", "offset", "expected"),
    [
        (DateTime(2025, 12, 31, 23, 58, 0), 3, DateTime(2026, 1, 1, 0, 1, 0)),
        (DateTime(2025, 3, 1, 0, 0, 0), -1, DateTime(2025, 2, 28, 23, 59, 0)),
        (DateTime(2025, 3, 1, 0, 0, 0), None, DateTime(2025, 3, 1, 0, 0, 0)),
        (DateTime(2025, 3, 1, 0, 0, 0), 0, DateTime(2025, 3, 1, 0, 0, 0)),
        # An incomplete or impossible base time cannot take an offset: kept as sent.
        (DateTime(0, 3, 1, 12, 0, 0), 30, DateTime(0, 3, 1, 12, 0, 0)),
        (DateTime(2025, 2, 31, 12, 0, 0), 30, DateTime(2025, 2, 31, 12, 0, 0)),
        (DateTime(9999, 12, 31, 23, 59, 0), 5, DateTime(9999, 12, 31, 23, 59, 0)),
    ],
)
def test_user_facing_time(base: DateTime, offset: int | None, expected: DateTime) -> None:
    value = GlucoseMeasurement(1, base, offset, SFloat(95, -5), 1, 1)
    assert value.timestamp == expected
    assert value.measurements()[0].timestamp == expected


@pytest.mark.parametrize(
    ("sample_type", "location", "code", "site"),
    [
        (SampleType.CAPILLARY_WHOLE_BLOOD, SampleLocation.FINGER, GLU_CAPILLARY_WB, "finger"),
        (SampleType.CAPILLARY_PLASMA, SampleLocation.EARLOBE, GLU_CAPILLARY_PLASMA, "ear-lobe"),
        (SampleType.VENOUS_WHOLE_BLOOD, SampleLocation.NOT_AVAILABLE, 160192, None),
        (SampleType.VENOUS_PLASMA, SampleLocation.ALTERNATE_SITE_TEST, 160196, None),
        (SampleType.ARTERIAL_WHOLE_BLOOD, 0, 160200, None),
        (SampleType.ARTERIAL_PLASMA, 7, 160204, None),  # reserved location
        (SampleType.UNDETERMINED_WHOLE_BLOOD, 1, GLU_GEN, "finger"),
        (SampleType.UNDETERMINED_PLASMA, 1, GLU_GEN, "finger"),
        (SampleType.INTERSTITIAL_FLUID, 1, 160212, "finger"),
        (0, 1, GLU_GEN, "finger"),  # reserved type
        (15, 1, GLU_GEN, "finger"),
    ],
)
def test_sample_type_and_location(
    sample_type: int, location: int, code: int, site: str | None
) -> None:
    value = GlucoseMeasurement(1, DateTime(2025, 1, 1), None, SFloat(95, -5), sample_type, location)
    (m,) = value.measurements()
    assert (m.type_code, m.body_site) == (code, site)
    assert GlucoseMeasurement.from_bytes(bytes(value)) == value


def test_control_solution_is_test_data() -> None:
    value = GlucoseMeasurement(
        1,
        DateTime(2025, 1, 1),
        None,
        SFloat(95, -5),
        SampleType.CONTROL_SOLUTION,
        SampleLocation.CONTROL_SOLUTION,
    )
    (m,) = value.measurements()
    assert (m.type_code, m.status, m.body_site) == (GLU_CONTROL, MeasurementStatus.TEST_DATA, None)


@pytest.mark.parametrize(
    ("status", "expected_status", "conditions"),
    [
        (SensorStatus.DEVICE_BATTERY_LOW, MeasurementStatus(0), frozenset()),
        (SensorStatus.RESULT_TOO_HIGH, MeasurementStatus.QUESTIONABLE, frozenset()),
        (SensorStatus.TIME_FAULT, MeasurementStatus(0), {Condition.DEVICE_CLOCK_NOT_SET}),
        (SensorStatus(0xF000), MeasurementStatus(0), frozenset()),  # reserved bits only
    ],
)
def test_sensor_status(
    status: SensorStatus, expected_status: MeasurementStatus, conditions: frozenset[Condition]
) -> None:
    value = GlucoseMeasurement(
        1, DateTime(2025, 1, 1), None, SFloat(95, -5), 1, 1, sensor_status=status
    )
    (m,) = value.measurements()
    assert (m.status, m.conditions) == (expected_status, conditions)


def test_no_concentration_no_measurement() -> None:
    value = GlucoseMeasurement(3, DateTime(2025, 1, 1), sensor_status=SensorStatus.TIME_FAULT)
    assert value.measurements() == ()
    assert GlucoseMeasurement.from_bytes(bytes(value)) == value


# -- the Observation (PHD IG mapping, gateway/fhir/codes.toml) ----------------------------------

CTX = MappingContext(
    SensorInfo("001BDC0FFFFE1234"),
    GatewayInfo("ECDE3D4E58532D31"),
    dt.datetime(2025, 3, 14, 8, 0, tzinfo=dt.UTC),
    tz=dt.UTC,
)


def _loinc(resource: dict[str, object]) -> list[str]:
    code = resource["code"]
    assert isinstance(code, dict)
    return [c["code"] for c in code["coding"] if c["system"] == "http://loinc.org"]


@pytest.mark.parametrize(
    ("sent", "unit", "loinc", "ucum", "number"),
    [
        (SFloat(95, -5), ConcentrationUnit.KG_PER_L, ["2339-0"], "mg/dL", Decimal(95)),
        (SFloat(53, -4), ConcentrationUnit.MOL_PER_L, ["15074-8"], "mmol/L", Decimal("5.3")),
    ],
)
def test_observation_loinc_follows_the_unit(
    sent: SFloat, unit: ConcentrationUnit, loinc: list[str], ucum: str, number: Decimal
) -> None:
    value = GlucoseMeasurement(
        7, DateTime(2025, 3, 14, 7, 30), None, sent, SampleType.CAPILLARY_WHOLE_BLOOD, 1, unit
    )
    (mapped,) = map_measurements(value.measurements(), CTX)
    obs = mapped.resource
    r4b_model(obs)
    assert obs["code"]["coding"][0] == {
        "system": "urn:iso:std:iso:11073:10101",
        "code": "160184",
        "display": "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD",
    }
    assert _loinc(obs) == loinc
    assert obs["valueQuantity"] == {
        "value": number,
        "unit": ucum,
        "system": "http://unitsofmeasure.org",
        "code": ucum,
    }
    assert obs["effectiveDateTime"] == "2025-03-14T07:30:00Z"
    assert obs["bodySite"]["coding"][0]["code"] == "7569003"  # finger
    assert [c["coding"][0]["code"] for c in obs["category"]] == ["phd"]


def test_observation_capillary_plasma_has_no_loinc() -> None:
    (mapped,) = map_measurements(
        GlucoseMeasurement.from_bytes(NORDIC_MEASUREMENT).measurements(), CTX
    )
    r4b_model(mapped.resource)
    assert _loinc(mapped.resource) == []
    assert mapped.resource["code"]["coding"][0]["code"] == "160188"


# -- every flag combination ---------------------------------------------------------------------

TIME = DateTime(2024, 2, 29, 23, 59, 59)


def _measurement_length(flags: int) -> int:
    """Flags, sequence, base time, [offset 2], [concentration 2 + type/location 1], [status 2]."""
    return 10 + 2 * bool(flags & 0x01) + 3 * bool(flags & 0x02) + 2 * bool(flags & 0x08)


def _measurement_for_flags(flags: int) -> GlucoseMeasurement:
    present = bool(flags & 0x02)
    return GlucoseMeasurement(
        flags << 8 | flags,
        TIME,
        -flags if flags & 0x01 else None,
        SFloat(95, -5) if present else None,
        (flags & 0x0F) if present else None,
        (flags >> 4) if present else None,
        ConcentrationUnit(bool(flags & 0x04)),
        SensorStatus(0xF000 | flags) if flags & 0x08 else None,
        bool(flags & 0x10),
        flags & 0xE0,
    )


@pytest.mark.parametrize("flags", range(256))
def test_measurement_round_trip_every_flag_combination(flags: int) -> None:
    value = _measurement_for_flags(flags)
    data = bytes(value)
    assert data[0] == flags
    assert value.flags == flags
    assert len(data) == _measurement_length(flags)
    assert GlucoseMeasurement.from_bytes(data) == value


def _context_length(flags: int) -> int:
    """Flags, sequence, [ext 1], [carb 3], [meal 1], [tester-health 1], [exercise 3], [med 3],
    [HbA1c 2] (GLS §3.2 field order)."""
    return (
        3
        + bool(flags & 0x80)
        + 3 * bool(flags & 0x01)
        + bool(flags & 0x02)
        + bool(flags & 0x04)
        + 3 * bool(flags & 0x08)
        + 3 * bool(flags & 0x10)
        + 2 * bool(flags & 0x40)
    )


def _context_for_flags(flags: int) -> GlucoseMeasurementContext:
    def when(bit: int, value: object) -> object:
        return value if flags & bit else None

    return GlucoseMeasurementContext(
        flags,
        when(0x80, 0x5A),  # type: ignore[arg-type]
        when(0x01, CarbohydrateId.SNACK),  # type: ignore[arg-type]
        when(0x01, SFloat(45, -3)),  # type: ignore[arg-type]
        when(0x02, Meal.FASTING),  # type: ignore[arg-type]
        when(0x04, GlsTester.SELF),  # type: ignore[arg-type]
        when(0x04, Health.UNDER_STRESS),  # type: ignore[arg-type]
        when(0x08, 0xFFFF),  # type: ignore[arg-type]
        when(0x08, 100),  # type: ignore[arg-type]
        when(0x10, MedicationId.RAPID_ACTING_INSULIN),  # type: ignore[arg-type]
        when(0x10, SFloat(4, -6)),  # type: ignore[arg-type]
        MedicationUnit(bool(flags & 0x20)),
        when(0x40, SFloat(62, -1)),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("flags", range(256))
def test_context_round_trip_every_flag_combination(flags: int) -> None:
    value = _context_for_flags(flags)
    data = bytes(value)
    assert data[0] == flags
    assert value.flags == flags
    assert len(data) == _context_length(flags)
    assert GlucoseMeasurementContext.from_bytes(data) == value


# -- malformed values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "offset", "expected"),
    [
        (0, 0, "1 byte(s) of flags, found 0"),
        (2, 1, "2 byte(s) of Sequence Number, found 1"),
        (9, 3, "7 byte(s) of Date Time, found 6"),
        (11, 10, "2 byte(s) of Time Offset, found 1"),
        (13, 12, "2 byte(s) of Glucose Concentration, found 1"),
        (14, 14, "1 byte(s) of Type-Sample Location, found 0"),
        (16, 15, "2 byte(s) of Sensor Status Annunciation, found 1"),
    ],
)
def test_truncated_measurement(length: int, offset: int, expected: str) -> None:
    with pytest.raises(DecodeError) as info:
        GlucoseMeasurement.from_bytes(NORDIC_MEASUREMENT[:length])
    assert str(info.value) == f"Glucose Measurement (0x2A18): at byte {offset}: expected {expected}"


@pytest.mark.parametrize("length", range(len(NORDIC_MEASUREMENT)))
def test_every_measurement_prefix_is_rejected(length: int) -> None:
    with pytest.raises(DecodeError):
        GlucoseMeasurement.from_bytes(NORDIC_MEASUREMENT[:length])


@pytest.mark.parametrize("length", range(len(NORDIC_CONTEXT_FULL)))
def test_every_context_prefix_is_rejected(length: int) -> None:
    with pytest.raises(DecodeError):
        GlucoseMeasurementContext.from_bytes(NORDIC_CONTEXT_FULL[:length])


def test_measurement_trailing_bytes() -> None:
    with pytest.raises(DecodeError) as info:
        GlucoseMeasurement.from_bytes(NORDIC_MEASUREMENT + b"\x00")
    assert (info.value.offset, info.value.expected) == (17, "end of value, found 1 extra byte(s)")


def test_impossible_base_time() -> None:
    data = bytearray(DESIGN_MEASUREMENT)
    data[5] = 13  # month 13
    with pytest.raises(DecodeError) as info:
        GlucoseMeasurement.from_bytes(bytes(data))
    assert info.value.offset == 3
    assert info.value.expected.startswith("valid Date Time (month 13 outside")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sequence_number": 65536}, r"sequence number 65536 outside 0\.\.65535"),
        ({"time_offset_min": 32768}, r"time offset 32768 outside -32768\.\.32767"),
        ({"sample_type": None}, r"concentration, sample type and sample location go together"),
        ({"sample_type": 16}, r"sample type 16 outside 0\.\.15"),
        ({"sample_location": -1}, r"sample location -1 outside 0\.\.15"),
        ({"sensor_status": SensorStatus(0x10000)}, r"sensor status annunciation 65536 outside"),
        ({"rfu_flags": 0x10}, r"rfu_flags 0x10 outside the reserved bits 0xE0"),
    ],
)
def test_measurement_range_checks(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "sequence_number": 1,
        "base_time": TIME,
        "concentration": SFloat(95, -5),
        "sample_type": 1,
        "sample_location": 1,
    }
    with pytest.raises(ValueError, match=message):
        GlucoseMeasurement(**(fields | kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"carbohydrate_id": 1}, r"carbohydrate ID and carbohydrate go together"),
        ({"tester": 1}, r"tester and health go together"),
        ({"exercise_duration_s": 1}, r"exercise duration and intensity go together"),
        ({"medication": SFloat(1, 0)}, r"medication ID and medication go together"),
        ({"tester": 16, "health": 1}, r"tester 16 outside 0\.\.15"),
        ({"meal": 256}, r"meal 256 outside 0\.\.255"),
        ({"sequence_number": -1}, r"sequence number -1 outside"),
    ],
)
def test_context_range_checks(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GlucoseMeasurementContext(**({"sequence_number": 1} | kwargs))  # type: ignore[arg-type]


# -- fuzzing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("uuid", [0x2A18, 0x2A34, 0x2A51])
@settings(derandomize=True, max_examples=300)
@given(data=st.binary(max_size=24))
def test_fuzz_random_bytes(uuid: int, data: bytes) -> None:
    decodes_exactly_or_rejects(uuid, data)


@settings(derandomize=True, max_examples=400)
@given(data=st.integers(0, 255).flatmap(lambda f: near_length(f, _measurement_length(f))))
def test_fuzz_structured_measurement(data: bytes) -> None:
    decodes_exactly_or_rejects(0x2A18, data)


@settings(derandomize=True, max_examples=400)
@given(data=st.integers(0, 255).flatmap(lambda f: near_length(f, _context_length(f))))
def test_fuzz_structured_context(data: bytes) -> None:
    decodes_exactly_or_rejects(0x2A34, data)


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
nibbles = st.integers(0, 15)


@st.composite
def measurements(draw: st.DrawFn) -> GlucoseMeasurement:
    present = draw(st.booleans())
    return GlucoseMeasurement(
        draw(st.integers(0, 0xFFFF)),
        draw(date_times),
        draw(st.none() | st.integers(-0x8000, 0x7FFF)),
        draw(sfloats) if present else None,
        draw(nibbles) if present else None,
        draw(nibbles) if present else None,
        draw(st.sampled_from(ConcentrationUnit)),
        draw(st.none() | st.integers(0, 0xFFFF).map(SensorStatus)),
        draw(st.booleans()),
        draw(st.sampled_from([0x00, 0x20, 0x40, 0x80, 0xE0])),
    )


@settings(derandomize=True, max_examples=300)
@given(value=measurements())
def test_fuzz_measurement_values(value: GlucoseMeasurement) -> None:
    assert GlucoseMeasurement.from_bytes(bytes(value)) == value
    value.measurements()  # never raises, whatever the time or value


@st.composite
def contexts(draw: st.DrawFn) -> GlucoseMeasurementContext:
    def pair(
        first: st.SearchStrategy[object], second: st.SearchStrategy[object]
    ) -> tuple[object, object]:
        return draw(st.none() | st.tuples(first, second)) or (None, None)

    carb_id, carb = pair(st.integers(0, 255), sfloats)
    tester, health = pair(nibbles, nibbles)
    duration, intensity = pair(st.integers(0, 0xFFFF), st.integers(0, 255))
    med_id, med = pair(st.integers(0, 255), sfloats)
    return GlucoseMeasurementContext(
        draw(st.integers(0, 0xFFFF)),
        draw(st.none() | st.integers(0, 255)),
        carb_id,  # type: ignore[arg-type]
        carb,  # type: ignore[arg-type]
        draw(st.none() | st.integers(0, 255)),
        tester,  # type: ignore[arg-type]
        health,  # type: ignore[arg-type]
        duration,  # type: ignore[arg-type]
        intensity,  # type: ignore[arg-type]
        med_id,  # type: ignore[arg-type]
        med,  # type: ignore[arg-type]
        draw(st.sampled_from(MedicationUnit)),
        draw(st.none() | sfloats),
    )


@settings(derandomize=True, max_examples=300)
@given(value=contexts())
def test_fuzz_context_values(value: GlucoseMeasurementContext) -> None:
    assert GlucoseMeasurementContext.from_bytes(bytes(value)) == value
