"""Generic Health Sensor (0x1840): ACOM observations, segmentation, control point, features.

Published vectors come from STMicroelectronics' GHS firmware example
(stm32-hotspot/STM32WBA-BLE-GenericHealthSensor, Projects/NUCLEO-WBA55CG/Applications/BLE/
BLE_GenericHealthSensor/STM32_WPAN/App/ghs_app.c, "ST ghs_app.c" below), byte for byte. Other
vectors were assembled by hand from the encoders named at each one (the modules of
gateway/ieee11073/ghs/ give the field-by-field sources) and are checked both ways.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import DecodeError
from gateway.ieee11073 import codecs, decode, mdc
from gateway.ieee11073._buffer import Reader
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.ghs import (
    START_LIVE_OBSERVATIONS,
    STOP_LIVE_OBSERVATIONS,
    AcomObject,
    Component,
    ComponentValue,
    CompoundDiscreteEventValue,
    CompoundStateEventValue,
    CompoundValue,
    DeviceSpecialization,
    ElapsedTime,
    GhsControlPoint,
    GhsControlPointOpCode,
    HealthSensorFeatures,
    LiveHealthObservations,
    NumericValue,
    Observation,
    ObservationBundle,
    ObservationClass,
    ObservationFlags,
    ObservationHeader,
    ObservationStatus,
    ObservationValue,
    Reassembler,
    SampleArrayValue,
    SegmentationHeader,
    SimpleDiscreteValue,
    StoredHealthObservation,
    StoredHealthObservations,
    StringValue,
    TimeFlags,
    TimeResolution,
    TimeSource,
    Tlv,
    TlvEncodedValue,
    decode_observation,
    sample_range,
    segment,
)
from gateway.ieee11073.measurement import Measurement, MeasurementStatus, SampleArray
from gateway.ieee11073.numbers import Float, Special

MDC_PULS_OXIM_SAT_O2 = mdc.MDC_PULS_OXIM_SAT_O2
MDC_DIM_PERCENT = mdc.MDC_DIM_PERCENT

# -- hand-assembled vectors -----------------------------------------------------------------------

# SIM SimpleNumericObservation + Observation.ghsByteArray: class, length (ST: bytes after it),
# flags (type | time stamp), type, ETS time stamp with SIM's default TimestampFlags (ms, UTC,
# TZ/DST used, current timeline = 0x3A), sync source cellular (6), offset +4 (UTC+1), unit, FLOAT.
HR_HEX = (
    "01 1500 0300 82410200"  # numeric, 21 bytes follow, type+timestamp, MDC_ECG_HEART_RATE
    " 3A 0015C9C8B200 06 04"  # 767 872 800 000 ms after 2000-01-01 = 2024-05-01 10:00:00 UTC
    " A00A 48000000"  # MDC_DIM_BEAT_PER_MIN, 72
)
HR_STAMP = ElapsedTime(
    767_872_800_000,
    TimeFlags.UTC
    | TimeFlags(TimeResolution.MILLISECOND << 2)
    | TimeFlags.TZ_DST_USED
    | TimeFlags.CURRENT_TIMELINE,
    TimeSource.CELLULAR_NETWORK,
    4,
)
HR = Observation(
    NumericValue(mdc.MDC_DIM_BEAT_PER_MIN, Float(72, 0)),
    ObservationHeader(type_code=mdc.MDC_ECG_HEART_RATE, timestamp=HR_STAMP),
)

# SIM SampleArrayObservation.valueByteArray: unit, scale FLOAT, offset FLOAT, period FLOAT,
# samples per period u8, bytes per sample u8, number of samples u32, samples. ECG lead II in mV,
# 250 Hz (period 0.004 s), 12-bit samples centred on 2048 (offset -10.24 mV, 0.005 mV/LSB).
ECG_HEX = (
    "04 2B00 0300 02010200"  # sample array, 43 bytes follow, type+timestamp, MDC_ECG_ELEC_POTL_II
    " 20 40EBC42D0000 00 00"  # local, seconds, current timeline: 2024-05-01 12:00:00
    " B210 050000FD 00FCFFFE 040000FD"  # MDC_DIM_MILLI_VOLT, 0.005, -10.24, 0.004
    " 01 02 04000000"  # 1 sample per period, 2 bytes per sample, 4 samples
    " 0008 6408 9009 9C07"  # 2048, 2148, 2448, 1948
)
ECG_VALUE = SampleArrayValue(
    mdc.MDC_DIM_MILLI_VOLT,
    Float(5, -3),
    Float(-1024, -2),
    Float(4, -3),
    1,
    2,
    (2048, 2148, 2448, 1948),
)
ECG = Observation(
    ECG_VALUE,
    ObservationHeader(
        type_code=mdc.MDC_ECG_ELEC_POTL_II,
        timestamp=ElapsedTime(767_880_000, TimeFlags.CURRENT_TIMELINE),
    ),
)

# SIM CompoundNumericObservation.valueByteArray: count, then per component type, value type
# (ObservationComponentValueType.NUMERIC = 1), unit, FLOAT.
BP_HEX = (
    "07 1D00 0100 044A0200"  # compound, 29 bytes follow, type only, MDC_PRESS_BLD_NONINV
    " 02"
    " 054A0200 01 200F 78000000"  # systolic, numeric, mmHg, 120
    " 064A0200 01 200F 50000000"  # diastolic, numeric, mmHg, 80
)
BP = Observation(
    CompoundValue(
        (
            Component(mdc.MDC_PRESS_BLD_NONINV_SYS, NumericValue(mdc.MDC_DIM_MMHG, Float(120, 0))),
            Component(mdc.MDC_PRESS_BLD_NONINV_DIA, NumericValue(mdc.MDC_DIM_MMHG, Float(80, 0))),
        )
    ),
    ObservationHeader(type_code=mdc.MDC_PRESS_BLD_NONINV),
)

# SIM BundledObservation: bundle header (time stamp, patient), count, members without their own
# time stamp (SIM ghsBundledObservationByteArray), each a complete object with class and length.
BUNDLE_HEX = (
    "FF 2B00 2200"  # bundle, 43 bytes follow, time stamp + patient id
    " 20 40EBC42D0000 00 00 01"  # 2024-05-01 12:00:00 local; patient 1
    " 02"
    " 01 0C00 0100 82410200 A00A 48000000"  # heart rate 72 /min
    " 01 0C00 0100 B84B0200 2002 61000000"  # SpO2 97 %
)
BUNDLE = ObservationBundle(
    (
        Observation(
            NumericValue(mdc.MDC_DIM_BEAT_PER_MIN, Float(72, 0)),
            ObservationHeader(type_code=mdc.MDC_ECG_HEART_RATE),
        ),
        Observation(
            NumericValue(MDC_DIM_PERCENT, Float(97, 0)),
            ObservationHeader(type_code=MDC_PULS_OXIM_SAT_O2),
        ),
    ),
    ObservationHeader(timestamp=ElapsedTime(767_880_000, TimeFlags.CURRENT_TIMELINE), patient_id=1),
)


# -- ST ghs_app.c example objects (published vectors) ---------------------------------------------

ST_STAMP_HEX = "22 729D2B290000 06 00"  # UTC, seconds, current timeline; cellular network
ST_STAMP = ElapsedTime(0x292B9D72, TimeFlags.UTC | TimeFlags.CURRENT_TIMELINE, 6, 0)
MDC_MODALITY_SPOT = 0x00024C3C  # 150588
MDC_BLP_MEASUREMENT_STATUS = 0x008055F0  # as named in ST ghs_app.c

ST_VECTORS: list[tuple[str, str, AcomObject]] = [
    (
        "NumericOxygenSaturation",
        f"01 1B00 6300 B84B0200 {ST_STAMP_HEX} 01 01 3C4C0200 2002 62000000",
        Observation(
            NumericValue(MDC_DIM_PERCENT, Float(98, 0)),
            ObservationHeader(
                type_code=MDC_PULS_OXIM_SAT_O2,
                timestamp=ST_STAMP,
                patient_id=1,
                supplemental=(MDC_MODALITY_SPOT,),
            ),
        ),
    ),
    (
        "SimpleDiscreteObservation",
        f"02 1800 4300 B84B0200 {ST_STAMP_HEX} 01 3C4C0200 62000000",
        Observation(
            SimpleDiscreteValue(98),
            ObservationHeader(
                type_code=MDC_PULS_OXIM_SAT_O2,
                timestamp=ST_STAMP,
                supplemental=(MDC_MODALITY_SPOT,),
            ),
        ),
    ),
    ("StringObservation", "03 0700 0000 0300 4D616E", Observation(StringValue("Man"))),
    (
        "SampleArrayObservation",
        "04 2000 0000 B210 4C060000 00080000 0A0000FD 01 01 0A000000 F907FB07F507FF070C08",
        Observation(
            SampleArrayValue(
                mdc.MDC_DIM_MILLI_VOLT,
                Float(1612, 0),
                Float(2048, 0),
                Float(10, -3),
                1,
                1,
                (0xF9, 0x07, 0xFB, 0x07, 0xF5, 0x07, 0xFF, 0x07, 0x0C, 0x08),
            )
        ),
    ),
    (
        "TLVEncodedObservation",
        "08 2100 0000 03 B84B0200 0300 04 620000 B84B0200 0300 04 630000 B84B0200 0300 04 640000",
        Observation(
            TlvEncodedValue(
                tuple(Tlv(MDC_PULS_OXIM_SAT_O2, 0x04, bytes((v, 0, 0))) for v in (98, 99, 100))
            )
        ),
    ),
    (
        "CompoundObservationBloodPressure",
        (
            f"07 3500 1300 044A0200 {ST_STAMP_HEX} 40E20100 03"
            " 054A0200 01 200F 64000000 064A0200 01 200F 3C000000 074A0200 01 200F 50000000"
        ),
        Observation(
            CompoundValue(
                tuple(
                    Component(code, NumericValue(mdc.MDC_DIM_MMHG, Float(value, 0)))
                    for code, value in (
                        (mdc.MDC_PRESS_BLD_NONINV_SYS, 100),
                        (mdc.MDC_PRESS_BLD_NONINV_DIA, 60),
                        (mdc.MDC_PRESS_BLD_NONINV_MEAN, 80),
                    )
                )
            ),
            ObservationHeader(
                type_code=mdc.MDC_PRESS_BLD_NONINV, timestamp=ST_STAMP, object_id=123456
            ),
        ),
    ),
    (
        "CompoundDiscreteBloodPressureStatus",
        "05 1400 8100 F0558000 01 40E20100 02 F0000300 AE010300",
        Observation(
            CompoundDiscreteEventValue((0x000300F0, 0x000301AE)),  # cuff loose, improperly placed
            ObservationHeader(type_code=MDC_BLP_MEASUREMENT_STATUS, derived_from=(123456,)),
        ),
    ),
    (
        "CompoundDiscreteEvent",
        "06 1800 8100 F0558000 01 40E20100 04 FFFFFFFF FFFFFFFF F0000300",
        Observation(
            CompoundStateEventValue(b"\xff" * 4, b"\xff" * 4, bytes.fromhex("F0000300")),
            ObservationHeader(type_code=MDC_BLP_MEASUREMENT_STATUS, derived_from=(123456,)),
        ),
    ),
    (
        "ObservationBundle",
        (
            f"FF 2F00 4200 {ST_STAMP_HEX} 01 3C4C0200 02"
            " 01 0C00 0100 B84B0200 2002 62000000"
            " 01 0C00 0100 1A480200 A00A 62000000"
        ),
        ObservationBundle(
            (
                Observation(
                    NumericValue(MDC_DIM_PERCENT, Float(98, 0)),
                    ObservationHeader(type_code=MDC_PULS_OXIM_SAT_O2),
                ),
                Observation(
                    NumericValue(mdc.MDC_DIM_BEAT_PER_MIN, Float(98, 0)),
                    ObservationHeader(type_code=mdc.MDC_PULS_OXIM_PULS_RATE),
                ),
            ),
            ObservationHeader(timestamp=ST_STAMP, supplemental=(MDC_MODALITY_SPOT,)),
        ),
    ),
]


@pytest.mark.parametrize(
    ("hex_value", "expected"), [v[1:] for v in ST_VECTORS], ids=[v[0] for v in ST_VECTORS]
)
def test_st_example_objects(hex_value: str, expected: AcomObject) -> None:
    data = _hex(hex_value)
    assert decode_observation(data) == expected
    assert bytes(expected) == data


def test_st_spo2_measurement() -> None:
    # 0x292B9D72 s after 2000-01-01 = 2021-11-20 11:50:10 UTC (no TZ/DST offset in use).
    assert ST_VECTORS[0][2].measurements() == (
        Measurement(
            MDC_PULS_OXIM_SAT_O2,
            Float(98, 0),
            MDC_DIM_PERCENT,
            DateTime(2021, 11, 20, 11, 50, 10),
            supplemental=(MDC_MODALITY_SPOT,),
            user_index=1,
        ),
    )


def test_st_bundle_measurements_share_time_and_modality() -> None:
    stamp = DateTime(2021, 11, 20, 11, 50, 10)
    assert ST_VECTORS[-1][2].measurements() == (
        Measurement(
            MDC_PULS_OXIM_SAT_O2, Float(98, 0), MDC_DIM_PERCENT, stamp, supplemental=(150588,)
        ),
        Measurement(
            mdc.MDC_PULS_OXIM_PULS_RATE,
            Float(98, 0),
            mdc.MDC_DIM_BEAT_PER_MIN,
            stamp,
            supplemental=(150588,),
        ),
    )


def test_st_stored_observation() -> None:
    # ST GHS_APP_UpdateStoredHealthObservation: header, record number u32, class, length, body.
    data = _hex("03 07000000" + ST_VECTORS[0][1])
    value = decode(0x2BDD, data)
    assert value == StoredHealthObservations(7, ST_VECTORS[0][2])
    assert bytes(value) == data


def test_observation_without_type_decodes_but_has_no_measurement() -> None:
    # ST StringObservation / SampleArrayObservation carry no Observation Type.
    for _, hex_value, expected in ST_VECTORS[2:4]:
        assert decode_observation(_hex(hex_value)).measurements() == ()
        assert expected.measurements() == ()


def _hex(text: str) -> bytes:
    return bytes.fromhex(text)


@pytest.mark.parametrize(
    ("hex_value", "expected"),
    [(HR_HEX, HR), (ECG_HEX, ECG), (BP_HEX, BP), (BUNDLE_HEX, BUNDLE)],
    ids=["numeric", "sample-array", "compound", "bundle"],
)
def test_observation_vectors(hex_value: str, expected: AcomObject) -> None:
    data = _hex(hex_value)
    assert decode_observation(data) == expected
    assert bytes(expected) == data
    # One complete segment (first | last, counter 0) decodes through the registry.
    live = decode(0x2B8B, b"\x03" + data)
    assert live == LiveHealthObservations(expected)
    assert bytes(live) == b"\x03" + data


def test_characteristic_uuids() -> None:
    # Bluetooth Assigned Numbers (bleak/uuids.py): 2B8B Live Health Observations, 2BDD Stored
    # Health Observations, 2BF3 Health Sensor Features (2BF0 is Battery Energy Status), 2BF4 GHS
    # Control Point.
    assert codecs()[0x2B8B] is LiveHealthObservations
    assert codecs()[0x2BDD] is StoredHealthObservations
    assert codecs()[0x2BF3] is HealthSensorFeatures
    assert codecs()[0x2BF4] is GhsControlPoint


# -- measurements ---------------------------------------------------------------------------------


def test_heart_rate_measurement_uses_local_time_of_a_utc_stamp() -> None:
    assert HR.measurements() == (
        Measurement(
            mdc.MDC_ECG_HEART_RATE,
            Float(72, 0),
            mdc.MDC_DIM_BEAT_PER_MIN,
            DateTime(2024, 5, 1, 11, 0, 0),  # 10:00 UTC + 4 × 15 min
        ),
    )


def test_ecg_lead_ii_is_an_exact_sample_array() -> None:
    (m,) = ECG.measurements()
    assert m == Measurement(
        131330,  # MDC_ECG_ELEC_POTL_II
        unit_code=4274,  # MDC_DIM_MILLI_VOLT
        timestamp=DateTime(2024, 5, 1, 12, 0, 0),
        samples=SampleArray(
            Float(5, -3), Float(-1024, -2), Float(4, -3), 1, 2, (2048, 2148, 2448, 1948)
        ),
    )
    assert m.samples is not None
    assert 1 / float(m.samples.period_s) == 250.0


def test_samples_are_unsigned() -> None:
    # gateway/ieee11073/ghs/values.py: no source states signedness; IEEE 11073 samples are
    # unsigned by default. A sender of int16 samples with offset 0 would see a -100 µV sample come
    # out as 65436 here. This test pins the choice so that changing it is deliberate.
    assert sample_range(2) == (0, 0xFFFF)
    data = bytes(dataclasses.replace(ECG, value=dataclasses.replace(ECG_VALUE, samples=(0xFF9C,))))
    decoded = decode_observation(data)
    assert isinstance(decoded, Observation)
    assert isinstance(decoded.value, SampleArrayValue)
    assert decoded.value.samples == (65436,)
    assert data.endswith(b"\x9c\xff")


def test_full_second_of_250_hz_ecg_segments_and_reassembles() -> None:
    samples = tuple((2048 + 7 * i) % 4096 for i in range(250))
    ecg = dataclasses.replace(ECG, value=dataclasses.replace(ECG_VALUE, samples=samples))
    payload = bytes(ecg)
    assert len(payload) == 5 + 4 + 9 + 20 + 500
    for mtu in (23, 185, 247, 517):
        notifications = segment(payload, mtu, counter=62)
        assert all(len(n) <= mtu - 3 for n in notifications)
        reassembler = Reassembler.live()
        results = [reassembler.feed(n) for n in notifications]
        assert results[:-1] == [None] * (len(notifications) - 1)
        assert results[-1] == ecg
        (m,) = ecg.measurements()
        assert m.samples is not None
        assert m.samples.samples == samples


def test_compound_blood_pressure_measurement() -> None:
    assert BP.measurements() == (
        Measurement(
            mdc.MDC_PRESS_BLD_NONINV,
            components=(
                Measurement(mdc.MDC_PRESS_BLD_NONINV_SYS, Float(120, 0), mdc.MDC_DIM_MMHG),
                Measurement(mdc.MDC_PRESS_BLD_NONINV_DIA, Float(80, 0), mdc.MDC_DIM_MMHG),
            ),
        ),
    )


def test_bundle_members_inherit_the_bundle_header() -> None:
    noon = DateTime(2024, 5, 1, 12, 0, 0)
    assert BUNDLE.measurements() == (
        Measurement(
            mdc.MDC_ECG_HEART_RATE,
            Float(72, 0),
            mdc.MDC_DIM_BEAT_PER_MIN,
            noon,
            user_index=1,
        ),
        Measurement(MDC_PULS_OXIM_SAT_O2, Float(97, 0), MDC_DIM_PERCENT, noon, user_index=1),
    )


def test_bundle_type_applies_to_members_without_one() -> None:
    bundle = ObservationBundle(
        (Observation(NumericValue(MDC_DIM_PERCENT, Float(95, 0))),),
        ObservationHeader(type_code=MDC_PULS_OXIM_SAT_O2, supplemental=(8417752,)),
    )
    decoded = decode_observation(bytes(bundle))
    assert decoded == bundle
    assert decoded.measurements() == (
        Measurement(MDC_PULS_OXIM_SAT_O2, Float(95, 0), MDC_DIM_PERCENT, supplemental=(8417752,)),
    )


def test_status_bits_map_to_measurement_status() -> None:
    every = ObservationStatus(0xFFFF)
    obs = dataclasses.replace(HR, header=dataclasses.replace(HR.header, status=every))
    (m,) = obs.measurements()
    assert m.status == (
        MeasurementStatus.INVALID
        | MeasurementStatus.QUESTIONABLE
        | MeasurementStatus.NOT_AVAILABLE
        | MeasurementStatus.CALIBRATION_ONGOING
        | MeasurementStatus.TEST_DATA
        | MeasurementStatus.EARLY_INDICATION
    )
    assert decode_observation(bytes(obs)) == obs  # reserved and unmapped bits are kept


@pytest.mark.parametrize(
    ("bit", "mapped"),
    [
        (ObservationStatus.INVALID, MeasurementStatus.INVALID),
        (ObservationStatus.QUESTIONABLE, MeasurementStatus.QUESTIONABLE),
        (ObservationStatus.NOT_AVAILABLE, MeasurementStatus.NOT_AVAILABLE),
        (ObservationStatus.CALIBRATION_ONGOING, MeasurementStatus.CALIBRATION_ONGOING),
        (ObservationStatus.TEST_DATA, MeasurementStatus.TEST_DATA),
        (ObservationStatus.EARLY_ESTIMATE, MeasurementStatus.EARLY_INDICATION),
        (ObservationStatus.MANUALLY_ENTERED, MeasurementStatus(0)),
        (ObservationStatus.SETTING, MeasurementStatus(0)),
        (ObservationStatus.THRESHOLD_ERROR, MeasurementStatus(0)),
        (ObservationStatus.THRESHOLDING_DISABLED, MeasurementStatus(0)),
    ],
)
def test_each_status_bit(bit: ObservationStatus, mapped: MeasurementStatus) -> None:
    obs = dataclasses.replace(BP, header=dataclasses.replace(BP.header, status=bit))
    (m,) = obs.measurements()
    assert m.status == mapped


def test_nan_value_is_kept() -> None:
    obs = dataclasses.replace(
        HR, value=NumericValue(mdc.MDC_DIM_BEAT_PER_MIN, Float.of(Special.NAN))
    )
    (m,) = obs.measurements()
    assert m.value == Float.of(Special.NAN)
    assert bytes(obs)[-4:] == bytes.fromhex("FF FF 7F 00")


@pytest.mark.parametrize(
    "value",
    [
        SimpleDiscreteValue(8417752),
        StringValue("Metformin 500 mg"),
        CompoundDiscreteEventValue((1, 2)),
        CompoundStateEventValue(b"\xff", b"\xf0", b"\xaa"),
        CompoundValue((Component(1, SimpleDiscreteValue(2)),)),
    ],
)
def test_values_without_a_measurement_form(value: ObservationValue) -> None:
    obs = Observation(value, ObservationHeader(type_code=184514))
    assert obs.measurements() == ()
    assert decode_observation(bytes(obs)) == obs


def test_compound_keeps_only_mappable_components() -> None:
    value = CompoundValue(
        (
            Component(1, StringValue("note")),
            Component(2, NumericValue(MDC_DIM_PERCENT, Float(5, 0))),
            Component(3, ECG_VALUE),
        )
    )
    (m,) = Observation(value, ObservationHeader(type_code=9)).measurements()
    assert m == Measurement(
        9,
        components=(
            Measurement(2, Float(5, 0), MDC_DIM_PERCENT),
            Measurement(3, unit_code=4274, samples=ECG_VALUE.sample_array()),
        ),
    )


# -- time stamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        (ElapsedTime(0), dt.datetime(2000, 1, 1)),  # noqa: DTZ001
        (
            ElapsedTime(10, TimeFlags(TimeResolution.HUNDRED_MILLISECONDS << 2)),
            dt.datetime(2000, 1, 1, 0, 0, 1),  # noqa: DTZ001
        ),
        (
            ElapsedTime(15, TimeFlags(TimeResolution.HUNDRED_MICROSECONDS << 2)),
            dt.datetime(2000, 1, 1, 0, 0, 0, 1500),  # noqa: DTZ001
        ),
        # UTC without TZ/DST in use stays UTC; with it, the offset is applied (-4 = UTC-1).
        (ElapsedTime(3600, TimeFlags.UTC), dt.datetime(2000, 1, 1, 1)),  # noqa: DTZ001
        (
            ElapsedTime(3600, TimeFlags.UTC | TimeFlags.TZ_DST_USED, tz_dst_offset=-4),
            dt.datetime(2000, 1, 1),  # noqa: DTZ001
        ),
        # A local time with an offset is already local.
        (ElapsedTime(3600, TimeFlags.TZ_DST_USED, tz_dst_offset=8), dt.datetime(2000, 1, 1, 1)),  # noqa: DTZ001
        (ElapsedTime(5, TimeFlags.TICK_COUNTER), None),
        (ElapsedTime((1 << 48) - 1), None),  # beyond year 9999
    ],
)
def test_elapsed_time_to_datetime(stamp: ElapsedTime, expected: dt.datetime | None) -> None:
    assert stamp.to_datetime() == expected
    assert ElapsedTime.read(Reader(bytes(stamp), "time stamp")) == stamp


def test_elapsed_time_from_datetime_round_trips() -> None:
    moment = dt.datetime(2031, 12, 24, 18, 30, 15, 250_000)  # noqa: DTZ001
    stamp = ElapsedTime.from_datetime(
        moment, resolution=TimeResolution.MILLISECOND, utc=True, tz_dst_offset=4
    )
    assert stamp.flags == TimeFlags(0x3A)
    assert stamp.resolution is TimeResolution.MILLISECOND
    assert stamp.to_datetime() == moment + dt.timedelta(hours=1)
    local = ElapsedTime.from_datetime(moment)
    assert local.to_datetime() == moment.replace(microsecond=0)


def test_tick_counter_observation_has_no_timestamp() -> None:
    obs = dataclasses.replace(
        HR, header=dataclasses.replace(HR.header, timestamp=ElapsedTime(99, TimeFlags.TICK_COUNTER))
    )
    (m,) = obs.measurements()
    assert m.timestamp is None


# -- every header flag combination ----------------------------------------------------------------

_HEADER_FIELDS: dict[ObservationFlags, tuple[str, object]] = {
    ObservationFlags.TYPE_PRESENT: ("type_code", mdc.MDC_TEMP_BODY),
    ObservationFlags.TIMESTAMP_PRESENT: ("timestamp", HR_STAMP),
    ObservationFlags.DURATION_PRESENT: ("duration", Float(15, -1)),
    ObservationFlags.STATUS_PRESENT: ("status", ObservationStatus.QUESTIONABLE),
    ObservationFlags.OBJECT_ID_PRESENT: ("object_id", 0xDEADBEEF),
    ObservationFlags.PATIENT_ID_PRESENT: ("patient_id", 255),
    ObservationFlags.SUPPLEMENTAL_INFORMATION_PRESENT: ("supplemental", (1, 0xFFFFFFFF)),
    ObservationFlags.DERIVED_FROM_PRESENT: ("derived_from", ()),
    ObservationFlags.HAS_MEMBER_PRESENT: ("has_member", (7,)),
    ObservationFlags.TLVS_PRESENT: ("tlvs", (Tlv(0x00010A3C, 0x19, b"ok"),)),
}


def _header_for(flags: int) -> ObservationHeader:
    chosen = {name: value for flag, (name, value) in _HEADER_FIELDS.items() if flags & flag}
    return ObservationHeader(**chosen)  # type: ignore[arg-type]


@pytest.mark.parametrize("flags", range(1 << 10), ids=lambda f: f"flags=0x{f:03X}")
def test_round_trip_every_header_flag_combination(flags: int) -> None:
    header = _header_for(flags)
    assert header.flags == flags
    obs = Observation(NumericValue(mdc.MDC_DIM_DEGC, Float(371, -1)), header)
    data = bytes(obs)
    assert int.from_bytes(data[3:5], "little") == flags
    assert int.from_bytes(data[1:3], "little") == len(data) - 3
    assert decode_observation(data) == obs
    bundle = ObservationBundle((obs,), ObservationHeader(type_code=mdc.MDC_TEMP_BODY))
    assert decode_observation(bytes(bundle)) == bundle


EVERY_COMPONENT_KIND: list[ComponentValue] = [
    NumericValue(1, Float(1, 0)),
    SimpleDiscreteValue(2),
    StringValue(""),
    SampleArrayValue(1, Float(1, 0), Float(0, 0), Float(1, 0), 1, 4, sample_range(4)),
    CompoundDiscreteEventValue((5,)),
    CompoundStateEventValue(b"\x00", b"\x00", b"\x01"),
]
VALUES_BY_CLASS: dict[ObservationClass, ObservationValue] = {
    ObservationClass.NUMERIC: NumericValue(mdc.MDC_DIM_DEGC, Float(371, -1)),
    ObservationClass.SIMPLE_DISCRETE: SimpleDiscreteValue(0x00020000),
    ObservationClass.STRING: StringValue("Ärzte ✓"),
    ObservationClass.SAMPLE_ARRAY: SampleArrayValue(
        512, Float(1, 0), Float(0, 0), Float(1, -2), 3, 3, (*sample_range(3), 1)
    ),
    ObservationClass.COMPOUND_DISCRETE_EVENT: CompoundDiscreteEventValue(()),
    ObservationClass.COMPOUND_STATE_EVENT: CompoundStateEventValue(
        b"\x01\x02", b"\x03\x04", b"\x05\x06"
    ),
    ObservationClass.COMPOUND: CompoundValue(
        tuple(Component(i, v) for i, v in enumerate(EVERY_COMPONENT_KIND))
    ),
    ObservationClass.TLV_ENCODED: TlvEncodedValue((Tlv(1, 0x04, b"\x01"), Tlv(2, 0x1B, b""))),
}


def test_every_value_class_is_covered() -> None:
    assert set(VALUES_BY_CLASS) == set(ObservationClass) - {ObservationClass.BUNDLE}
    assert {v.CLASS for v in EVERY_COMPONENT_KIND} == set(VALUES_BY_CLASS) - {
        ObservationClass.COMPOUND,
        ObservationClass.TLV_ENCODED,
    }


@pytest.mark.parametrize("kind", list(VALUES_BY_CLASS), ids=lambda k: k.name)
def test_round_trip_every_value_class(kind: ObservationClass) -> None:
    obs = Observation(VALUES_BY_CLASS[kind], ObservationHeader(type_code=1))
    data = bytes(obs)
    assert data[0] == kind
    assert int.from_bytes(data[1:3], "little") == len(data) - 3
    assert decode_observation(data) == obs


# -- stored observations --------------------------------------------------------------------------


def test_stored_observation_carries_a_record_number() -> None:
    # SIM GhsObservationSendHandler.sendObservation(isStored): u32 record id, then the object;
    # CLI expectedObservationLengthForBytes: length field at offset 5 for stored observations.
    data = _hex("03 2A000000" + BP_HEX)
    value = decode(0x2BDD, data)
    assert value == StoredHealthObservations(42, BP)
    assert bytes(value) == data
    (m,) = value.measurements()
    assert m.status == MeasurementStatus.FROM_STORAGE


def test_stored_reassembly() -> None:
    stored = StoredHealthObservation(0x01020304, ECG)
    reassembler = Reassembler.stored(max_size=200)
    notifications = segment(bytes(stored), 23)
    assert notifications[0][1:5] == _hex("04030201")
    results = [reassembler.feed(n) for n in notifications]
    assert results[-1] == stored
    assert results[:-1] == [None] * (len(notifications) - 1)


# -- segmentation and reassembly ------------------------------------------------------------------


def test_segmentation_header_bits() -> None:
    # SIM asBLEDataSegments: counter << 2 | first (bit 0) | last (bit 1).
    assert SegmentationHeader.from_byte(0xFF) == SegmentationHeader(True, True, 63)
    assert int(SegmentationHeader(False, True, 5)) == 0x16
    assert int(SegmentationHeader(True, False, 0)) == 0x01


def test_segment_sizes_and_counters() -> None:
    payload = bytes(range(50))
    parts = segment(payload, 23, counter=62)  # 19 data bytes per segment
    assert [p[0] for p in parts] == [(62 << 2) | 1, (63 << 2), (0 << 2) | 2]
    assert [len(p) for p in parts] == [20, 20, 13]
    assert b"".join(p[1:] for p in parts) == payload
    assert segment(payload, 247) == [b"\x03" + payload]


@pytest.mark.parametrize(
    ("payload", "mtu", "counter"), [(b"x", 22, 0), (b"x", 518, 0), (b"x", 23, 64), (b"", 23, 0)]
)
def test_segment_rejects_bad_arguments(payload: bytes, mtu: int, counter: int) -> None:
    with pytest.raises(ValueError, match=r"ATT_MTU|segment counter|nothing to segment"):
        segment(payload, mtu, counter)


def _segments(obs: AcomObject = ECG, counter: int = 0) -> list[bytes]:
    return segment(bytes(obs), 23, counter)


def test_reassembly_in_order_across_observations_with_rolling_counter() -> None:
    reassembler = Reassembler.live()
    first = _segments(ECG, 60)  # 46 bytes → 3 segments: 60, 61, 62
    second = _segments(BP, 63)  # 32 bytes → 2 segments: 63, 0 (wraps)
    out = [reassembler.feed(n) for n in first + second]
    assert out == [None, None, ECG, None, BP]
    assert not reassembler.in_progress


def test_lost_segment_is_an_error_and_the_next_sequence_decodes() -> None:
    reassembler = Reassembler.live()
    parts = _segments(ECG, 10)
    assert reassembler.feed(parts[0]) is None
    with pytest.raises(DecodeError, match="segment 11, found segment 12"):
        reassembler.feed(parts[2])
    assert not reassembler.in_progress
    assert [reassembler.feed(n) for n in _segments(BP, 13)] == [None, BP]


def test_missing_first_segment() -> None:
    reassembler = Reassembler.live()
    parts = _segments(ECG)
    with pytest.raises(DecodeError, match=r"first segment .* start was missed") as info:
        reassembler.feed(parts[1])
    assert info.value.characteristic == "Live Health Observations (0x2B8B)"
    assert [reassembler.feed(n) for n in parts] == [None, None, ECG]


def test_first_segment_in_the_middle_restarts() -> None:
    reassembler = Reassembler.live()
    old = _segments(ECG, 0)
    new = _segments(BP, 5)
    reassembler.feed(old[0])
    reassembler.feed(old[1])
    with pytest.raises(DecodeError, match=r"previous observation \(38 bytes so far\) was dropped"):
        reassembler.feed(new[0])
    assert reassembler.in_progress  # the new observation has started
    assert reassembler.feed(new[1]) == BP


def test_single_segment_in_the_middle_is_reported_and_state_is_clean() -> None:
    reassembler = Reassembler.live()
    reassembler.feed(_segments(ECG)[0])
    with pytest.raises(DecodeError, match="was dropped"):
        reassembler.feed(segment(bytes(BP), 247, 9)[0])
    assert not reassembler.in_progress
    assert reassembler.feed(segment(bytes(HR), 247, 10)[0]) == HR


def test_oversize_is_rejected_early_by_declared_length_and_by_cap() -> None:
    big = dataclasses.replace(
        ECG, value=dataclasses.replace(ECG_VALUE, samples=tuple(range(100)))
    )  # 238 bytes
    reassembler = Reassembler.live(max_size=100)
    parts = segment(bytes(big), 23)
    with pytest.raises(DecodeError, match="at most 100 bytes, declared 238"):
        reassembler.feed(parts[0])
    assert not reassembler.in_progress
    assert [reassembler.feed(n) for n in _segments(BP)] == [None, BP]
    # A sender that lies about the length is stopped once it passes the cap or the length.
    liar = bytearray(bytes(BP))
    liar[1:3] = (20).to_bytes(2, "little")
    with pytest.raises(DecodeError, match="the declared 23 bytes, received 31"):
        Reassembler.live().feed(bytes((0x01,)) + bytes(liar[:31]))
    with pytest.raises(ValueError, match="cannot hold an observation header"):
        Reassembler.live(max_size=4)


def test_no_length_yet_still_obeys_the_cap() -> None:
    reassembler = Reassembler.stored(max_size=9)  # record number + header = 9
    with pytest.raises(DecodeError, match="at most 9 bytes, found 10"):
        reassembler.feed(b"\x01" + bytes(10))


def test_empty_notification_and_bad_payload() -> None:
    reassembler = Reassembler.live()
    with pytest.raises(DecodeError, match="empty notification"):
        reassembler.feed(b"")
    with pytest.raises(DecodeError, match="reassembled") as info:
        reassembler.feed(b"\x03\x09\x02\x00\x00\x00")  # class 9 does not exist
    assert info.value.characteristic == "Live Health Observations (0x2B8B), reassembled"
    assert not reassembler.in_progress


# -- malformed observations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hex_value", "offset", "fragment"),
    [
        ("", 0, "5 byte(s) of observation class, length and flags"),
        ("09 0200 0000", 0, "a known observation class type, found 0x09"),
        ("01 0100 0100", 1, "an observation length 2-2, found 1"),
        ("01 0300 0100", 1, "an observation length 2-2, found 3"),
        ("01 0300 0100 00", 5, "4 byte(s) of observation type, found 1"),
        ("01 0C00 0104 82410200 A00A 48000000", 3, "bits 10-15 are reserved"),
        ("01 0C00 0180 82410200 A00A 48000000", 3, "found 0x8001"),
        ("01 0D00 0100 82410200 A00A 48000000 00", 1, "declared length 13, its fields take 12"),
        ("01 0B00 0100 82410200 A00A 480000", 9, "6 byte(s) of numeric value"),
        ("FF 0800 0000 01 FF 0200 0000", 6, "found a nested bundle"),
        ("FF 0900 0000 02 08 0300 0000 00", 12, "5 byte(s) of observation class"),
        ("03 0900 0100 01000000 0100 FF", 11, "UTF-8 text"),
        ("03 0B00 0100 01000000 0500 414243", 11, "5 byte(s) of string, found 3"),
        ("07 0C00 0100 01000000 01 02000000 07", 14, "a component value type 1-6, found 0x07"),
        ("07 0C00 0100 01000000 01 02000000 08", 14, "a component value type 1-6, found 0x08"),
        ("06 0700 0100 01000000 00", 10, "valid compound state/event value"),
        (
            "01 1100 4100 82410200 03 01000000 A00A 48000000",
            10,
            "3 × 4 bytes of supplemental information, found 10",
        ),
        ("08 0700 0000 01 01000000", 6, "7 byte(s) of TLV type, length and format, found 4"),
        ("08 0D00 0000 01 01000000 0500 04 616263", 13, "5 byte(s) of TLV value, found 3"),
        ("01 0900 0102 82410200 02 FFFF", 10, "7 byte(s) of TLV type, length and format"),
    ],
)
def test_malformed_observations(hex_value: str, offset: int, fragment: str) -> None:
    data = _hex(hex_value)
    with pytest.raises(DecodeError) as info:
        decode_observation(data, "Live Health Observations (0x2B8B)")
    assert info.value.offset == offset
    assert fragment in str(info.value)


def _sample_array_bytes(per_period: int, size: int, count: int, samples: bytes) -> bytes:
    head = (
        bytes.fromhex("B210 050000FD 00FCFFFE 040000FD")
        + bytes((per_period, size))
        + count.to_bytes(4, "little")
    )
    body = bytes.fromhex("02010200") + head + samples
    return bytes((4,)) + (2 + len(body)).to_bytes(2, "little") + b"\x01\x00" + body


@pytest.mark.parametrize(
    ("per_period", "size", "count", "samples", "fragment"),
    [
        (1, 0, 0, b"", "bytes per sample 1-4, found 0"),
        (1, 5, 1, bytes(5), "bytes per sample 1-4, found 5"),
        (1, 2, 3, bytes(5), "3 samples of 2 byte(s), found 5 byte(s)"),
        (0, 1, 1, bytes(1), "samples per period 0 outside 1..255"),
        (2, 1, 3, bytes(3), "3 samples are not whole periods of 2"),
        (1, 2, 0xFFFFFFFF, bytes(4), "4294967295 samples of 2 byte(s)"),
    ],
)
def test_malformed_sample_arrays(
    per_period: int, size: int, count: int, samples: bytes, fragment: str
) -> None:
    with pytest.raises(DecodeError, match=re.escape(fragment)):
        decode_observation(_sample_array_bytes(per_period, size, count, samples))


def test_bundle_without_any_type_decodes_without_measurements() -> None:
    bundle = ObservationBundle((Observation(NumericValue(1, Float(1, 0))),))
    assert decode_observation(bytes(bundle)) == bundle
    assert LiveHealthObservations(bundle).measurements() == ()


@pytest.mark.parametrize("header", [0x00, 0x01, 0x02, 0xFD, 0xFE])
def test_registered_codec_needs_one_complete_segment(header: int) -> None:
    with pytest.raises(DecodeError, match="single complete segment") as info:
        LiveHealthObservations.from_bytes(bytes((header,)) + _hex(HR_HEX))
    assert info.value.offset == 0
    assert LiveHealthObservations.from_bytes(bytes((0xFF,)) + _hex(HR_HEX)).segment_counter == 63


def test_object_too_long_for_its_length_field() -> None:
    huge = Observation(StringValue("x" * 65535), ObservationHeader(type_code=1))
    with pytest.raises(ValueError, match="does not fit the u16 length field"):
        bytes(huge)


# -- control point and features -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hex_value", "expected"),
    [
        # SIM/CLI GhsControlPointHandler.kt: 0x01 start, 0x02 stop, 0x80 success,
        # 0x81 server busy, 0x82 error (live observations not enabled).
        ("01", START_LIVE_OBSERVATIONS),
        ("02", STOP_LIVE_OBSERVATIONS),
        ("80", GhsControlPoint(GhsControlPointOpCode.SUCCESS)),
        ("81", GhsControlPoint(GhsControlPointOpCode.SERVER_BUSY)),
        ("82", GhsControlPoint(GhsControlPointOpCode.ERROR_LIVE_OBSERVATIONS)),
        ("03", GhsControlPoint(3)),  # CLI's INVALID_GHSCP_COMMAND: unknown, kept
    ],
)
def test_control_point(hex_value: str, expected: GhsControlPoint) -> None:
    data = _hex(hex_value)
    value = decode(0x2BF4, data)
    assert value == expected
    assert bytes(value) == data
    assert value.is_response == (data[0] >= 0x80)


@pytest.mark.parametrize("hex_value", ["", "0100"])
def test_control_point_is_one_byte(hex_value: str) -> None:
    with pytest.raises(DecodeError):
        GhsControlPoint.from_bytes(_hex(hex_value))


FEATURE_VECTORS = [
    # SIM featureCharacteristicBytes: flags (bit 0: specializations present), type count, u32
    # types, specialization count, (u16 code in partition 8, u8 version); ECG profile 528390.
    (
        "01 02 82410200 02010200 01 0610 01",
        HealthSensorFeatures(
            (mdc.MDC_ECG_HEART_RATE, mdc.MDC_ECG_ELEC_POTL_II), (DeviceSpecialization(0x1006, 1),)
        ),
    ),
    ("00 01 B84B0200", HealthSensorFeatures((MDC_PULS_OXIM_SAT_O2,))),
    ("00 00", HealthSensorFeatures(())),
    ("81 00 00", HealthSensorFeatures((), (), other_flags=0x80)),
]


@pytest.mark.parametrize(("hex_value", "expected"), FEATURE_VECTORS)
def test_health_sensor_features(hex_value: str, expected: HealthSensorFeatures) -> None:
    data = _hex(hex_value)
    assert decode(0x2BF3, data) == expected
    assert bytes(expected) == data


def test_device_specialization_code() -> None:
    assert DeviceSpecialization(0x1006, 1).mdc_code == 528390  # MDC_DEV_SPEC_PROFILE_ECG


@pytest.mark.parametrize(
    "hex_value", ["", "00", "00 01 B84B02", "01 00", "01 00 01 0610", "00 00 00"]
)
def test_malformed_features(hex_value: str) -> None:
    with pytest.raises(DecodeError) as info:
        HealthSensorFeatures.from_bytes(_hex(hex_value))
    assert str(info.value).startswith("Health Sensor Features (0x2BF3): at byte")


# -- fuzzing --------------------------------------------------------------------------------------

_floats = st.integers(0, 0xFFFFFFFF).map(Float.from_raw)
_codes = st.integers(0, 0xFFFFFFFF)
_code_lists = st.none() | st.lists(_codes, max_size=3).map(tuple)
_stamps = st.builds(
    ElapsedTime,
    st.integers(0, (1 << 48) - 1),
    st.integers(0, 0xFF).map(TimeFlags),
    st.integers(0, 0xFF),
    st.integers(-128, 127),
)
_tlv_lists = st.lists(
    st.builds(Tlv, _codes, st.integers(0, 0xFF), st.binary(max_size=4)), max_size=2
).map(tuple)
_headers = st.builds(
    ObservationHeader,
    type_code=st.none() | _codes,
    timestamp=st.none() | _stamps,
    duration=st.none() | _floats,
    status=st.none() | st.integers(0, 0xFFFF).map(ObservationStatus),
    object_id=st.none() | _codes,
    patient_id=st.none() | st.integers(0, 255),
    supplemental=_code_lists,
    derived_from=_code_lists,
    has_member=_code_lists,
    tlvs=st.none() | _tlv_lists,
)


@st.composite
def _sample_arrays(draw: st.DrawFn) -> SampleArrayValue:
    size = draw(st.integers(1, 4))
    per_period = draw(st.integers(1, 3))
    periods = draw(st.integers(0, 4))
    samples = draw(
        st.lists(
            st.integers(*sample_range(size)),
            min_size=periods * per_period,
            max_size=periods * per_period,
        )
    )
    return SampleArrayValue(
        draw(st.integers(0, 0xFFFF)),
        draw(_floats),
        draw(_floats),
        draw(_floats),
        per_period,
        size,
        tuple(samples),
    )


_component_values: st.SearchStrategy[ComponentValue] = st.one_of(
    st.builds(NumericValue, st.integers(0, 0xFFFF), _floats),
    st.builds(SimpleDiscreteValue, _codes),
    st.builds(StringValue, st.text(max_size=6)),
    _sample_arrays(),
    st.builds(CompoundDiscreteEventValue, st.lists(_codes, max_size=3).map(tuple)),
    st.integers(1, 3).flatmap(
        lambda n: st.builds(
            CompoundStateEventValue,
            st.binary(min_size=n, max_size=n),
            st.binary(min_size=n, max_size=n),
            st.binary(min_size=n, max_size=n),
        )
    ),
)
_values: st.SearchStrategy[ObservationValue] = st.one_of(
    _component_values,
    st.lists(st.builds(Component, _codes, _component_values), max_size=3).map(
        lambda cs: CompoundValue(tuple(cs))
    ),
    _tlv_lists.map(TlvEncodedValue),
)
_observations = st.builds(Observation, _values, _headers)
_objects: st.SearchStrategy[AcomObject] = st.one_of(
    _observations,
    st.builds(ObservationBundle, st.lists(_observations, max_size=3).map(tuple), _headers),
)


@settings(derandomize=True, max_examples=300)
@given(_objects)
def test_structured_round_trip(obj: AcomObject) -> None:
    data = bytes(obj)
    assert decode_observation(data) == obj
    obj.measurements()  # never raises for a decodable object


@settings(derandomize=True, max_examples=200)
@given(_objects, st.integers(23, 60), st.integers(0, 63))
def test_segmented_round_trip(obj: AcomObject, mtu: int, counter: int) -> None:
    reassembler = Reassembler.live()
    results = [reassembler.feed(n) for n in segment(bytes(obj), mtu, counter)]
    assert results[-1] == obj
    assert all(r is None for r in results[:-1])


@settings(derandomize=True, max_examples=500)
@given(st.binary(max_size=64))
def test_fuzz_live_health_observations(data: bytes) -> None:
    try:
        value = LiveHealthObservations.from_bytes(b"\x03" + data)
    except DecodeError:
        return
    assert bytes(value) == b"\x03" + data


@settings(derandomize=True, max_examples=500)
@given(_objects.map(bytes), st.data())
def test_fuzz_mutated_observations(data: bytes, draw: st.DataObject) -> None:
    """Valid encodings with one byte changed or truncated: a result or a DecodeError."""
    position = draw.draw(st.integers(0, len(data) - 1))
    mutated = bytearray(data)
    mutated[position] = draw.draw(st.integers(0, 255))
    cut = draw.draw(st.integers(0, len(data)))
    for candidate in (bytes(mutated), data[:cut]):
        try:
            value = StoredHealthObservations.from_bytes(b"\x03\x00\x00\x00\x00" + candidate)
        except DecodeError:
            continue
        assert bytes(value) == b"\x03\x00\x00\x00\x00" + candidate


@settings(derandomize=True, max_examples=300)
@given(st.lists(st.binary(max_size=24), max_size=8))
def test_fuzz_reassembler(notifications: list[bytes]) -> None:
    reassembler = Reassembler.live(max_size=64)
    for notification in notifications:
        try:
            reassembler.feed(notification)
        except DecodeError:
            continue


@settings(derandomize=True, max_examples=200)
@given(st.binary(max_size=24))
def test_fuzz_features_and_control_point(data: bytes) -> None:
    for kind in (HealthSensorFeatures, GhsControlPoint, StoredHealthObservations):
        try:
            value = kind.from_bytes(data)
        except DecodeError:
            continue
        assert bytes(value) == data


def test_every_flag_is_covered_by_the_combination_test() -> None:
    assert set(_HEADER_FIELDS) == set(ObservationFlags)
