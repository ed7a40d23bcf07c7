"""Characteristic value encoders, written the way sensor firmware builds its GATT payloads.

Each encoder takes already-scaled values (SFLOAT/FLOAT words, integers), derives the flags from the
optional fields that are present and packs everything little-endian with ``struct``. Layouts follow
the Bluetooth SIG service specifications named per function (summarised in docs/standards.md).

Fault injection needs packets whose flags announce a field that is not there: every flagged encoder
accepts ``announce_missing``, a flag bit that is set in the flags field while the field it announces
is left out (or was never present).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from firmware_sim.encoding import (
    U8,
    U16,
    U32,
    YEAR_MAX,
    YEAR_MIN,
    date_time,
    pack_float,
    pack_sfloat,
)


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a flagged characteristic: its bytes and the flag bit announcing it (0 = always
    present)."""

    data: bytes
    flag: int = 0


def frame(fields: Iterable[Field], *, flags_size: int = 1, announce_missing: int = 0) -> bytes:
    """Flags (u8 or u16) followed by the fields; ``announce_missing`` is set in the flags and the
    field it announces (if any) is dropped."""
    fields = list(fields)
    flags = announce_missing
    for field in fields:
        flags |= field.flag
    body = b"".join(f.data for f in fields if not (f.flag and f.flag & announce_missing))
    return (U8 if flags_size == 1 else U16).pack(flags) + body


# -- Heart Rate service 0x180D (HRS v1.0 §3.1) ---------------------------------------------------
class HeartRateFlag(enum.IntFlag):
    """Heart Rate Measurement flags (HRS §3.1.1.1)."""

    UINT16 = 0x01
    CONTACT_DETECTED = 0x02
    CONTACT_SUPPORTED = 0x04
    ENERGY_EXPENDED = 0x08
    RR_INTERVALS = 0x10


HR_MEASUREMENT: Final = 0x2A37
BODY_SENSOR_LOCATION: Final = 0x2A38
HR_CONTROL_POINT: Final = 0x2A39
BODY_SENSOR_LOCATION_CHEST: Final = 1  # HRS §3.2
HR_ERROR_CONTROL_POINT_NOT_SUPPORTED: Final = 0x80  # HRS §1.6 application error
U8_MAX: Final = 0xFF


def heart_rate_measurement(
    heart_rate: int,
    rr_intervals_1024: Sequence[int] = (),
    *,
    contact: bool | None = True,
    energy_expended_kj: int | None = None,
    announce_missing: int = 0,
) -> bytes:
    """Heart Rate Measurement 0x2A37: ``contact`` True detected, False not detected, None not
    supported; RR intervals in 1/1024 s."""
    fields = [
        Field(U8.pack(heart_rate))
        if heart_rate <= U8_MAX
        else Field(U16.pack(heart_rate), HeartRateFlag.UINT16)
    ]
    if contact is not None:
        bits = HeartRateFlag.CONTACT_SUPPORTED | (HeartRateFlag.CONTACT_DETECTED if contact else 0)
        fields.append(Field(b"", bits))
    if energy_expended_kj is not None:
        fields.append(Field(U16.pack(energy_expended_kj), HeartRateFlag.ENERGY_EXPENDED))
    if rr_intervals_1024:
        rr = b"".join(U16.pack(min(v, 0xFFFF)) for v in rr_intervals_1024)
        fields.append(Field(rr, HeartRateFlag.RR_INTERVALS))
    return frame(fields, announce_missing=announce_missing)


# -- Blood Pressure service 0x1810 (BLS v1.1 §3.1-3.3) ------------------------------------------
class BloodPressureFlag(enum.IntFlag):
    """Blood Pressure Measurement / Intermediate Cuff Pressure flags (BLS §3.1.1.1)."""

    KPA = 0x01
    TIMESTAMP = 0x02
    PULSE_RATE = 0x04
    USER_ID = 0x08
    MEASUREMENT_STATUS = 0x10


class BloodPressureStatus(enum.IntFlag):
    """Measurement Status (BLS §3.1.1.7); bits 3-4 carry the pulse rate range."""

    BODY_MOVEMENT = 0x0001
    CUFF_TOO_LOOSE = 0x0002
    IRREGULAR_PULSE = 0x0004
    PULSE_ABOVE_RANGE = 0x0008  # bits 3-4 = 1
    PULSE_BELOW_RANGE = 0x0010  # bits 3-4 = 2
    IMPROPER_POSITION = 0x0020


class BloodPressureFeature(enum.IntFlag):
    """Blood Pressure Feature 0x2A49 (BLS §3.3)."""

    BODY_MOVEMENT_DETECTION = 0x0001
    CUFF_FIT_DETECTION = 0x0002
    IRREGULAR_PULSE_DETECTION = 0x0004
    PULSE_RATE_RANGE_DETECTION = 0x0008
    MEASUREMENT_POSITION_DETECTION = 0x0010
    MULTIPLE_BONDS = 0x0020


BP_MEASUREMENT: Final = 0x2A35
INTERMEDIATE_CUFF_PRESSURE: Final = 0x2A36
BP_FEATURE: Final = 0x2A49


def blood_pressure_measurement(
    systolic: int,
    diastolic: int,
    mean_arterial: int,
    *,
    kpa: bool = False,
    timestamp: dt.datetime | None = None,
    pulse_rate: int | None = None,
    user_id: int | None = None,
    status: int | None = None,
    announce_missing: int = 0,
) -> bytes:
    """Blood Pressure Measurement 0x2A35 (and Intermediate Cuff Pressure 0x2A36, whose first
    field is the current cuff pressure). Pressures and pulse are SFLOAT words."""
    fields = [
        Field(b"", BloodPressureFlag.KPA if kpa else 0),
        Field(pack_sfloat(systolic) + pack_sfloat(diastolic) + pack_sfloat(mean_arterial)),
    ]
    if timestamp is not None:
        fields.append(Field(date_time(timestamp), BloodPressureFlag.TIMESTAMP))
    if pulse_rate is not None:
        fields.append(Field(pack_sfloat(pulse_rate), BloodPressureFlag.PULSE_RATE))
    if user_id is not None:
        fields.append(Field(U8.pack(user_id), BloodPressureFlag.USER_ID))
    if status is not None:
        fields.append(Field(U16.pack(status), BloodPressureFlag.MEASUREMENT_STATUS))
    return frame(fields, announce_missing=announce_missing)


def blood_pressure_feature(features: int) -> bytes:
    return U16.pack(features)


# -- Pulse Oximeter service 0x1822 (PLXS v1.0 §3.1-3.3) -----------------------------------------
class SpotCheckFlag(enum.IntFlag):
    """PLX Spot-check Measurement flags (PLXS §3.1.1.1)."""

    TIMESTAMP = 0x01
    MEASUREMENT_STATUS = 0x02
    DEVICE_SENSOR_STATUS = 0x04
    PULSE_AMPLITUDE_INDEX = 0x08
    DEVICE_CLOCK_NOT_SET = 0x10


class ContinuousFlag(enum.IntFlag):
    """PLX Continuous Measurement flags (PLXS §3.2.1.1)."""

    FAST = 0x01
    SLOW = 0x02
    MEASUREMENT_STATUS = 0x04
    DEVICE_SENSOR_STATUS = 0x08
    PULSE_AMPLITUDE_INDEX = 0x10


class PlxFeature(enum.IntFlag):
    """PLX Features 0x2A60 supported features (PLXS §3.3.1.1)."""

    MEASUREMENT_STATUS = 0x0001
    DEVICE_SENSOR_STATUS = 0x0002
    SPOT_CHECK_STORAGE = 0x0004
    SPOT_CHECK_TIMESTAMP = 0x0008
    FAST_METRIC = 0x0010
    SLOW_METRIC = 0x0020
    PULSE_AMPLITUDE_INDEX = 0x0040
    MULTIPLE_BONDS = 0x0080


PLX_SPOT_CHECK: Final = 0x2A5E
PLX_CONTINUOUS: Final = 0x2A5F
PLX_FEATURES: Final = 0x2A60
U24_MAX: Final = 0xFFFFFF


def _u24(value: int) -> bytes:
    if not 0 <= value <= U24_MAX:
        raise ValueError(f"{value} does not fit 24 bits")
    return U32.pack(value)[:3]


def plx_spot_check(
    spo2: int,
    pulse_rate: int,
    *,
    timestamp: dt.datetime | None = None,
    measurement_status: int | None = None,
    device_sensor_status: int | None = None,
    pulse_amplitude_index: int | None = None,
    clock_not_set: bool = False,
    announce_missing: int = 0,
) -> bytes:
    """PLX Spot-check Measurement 0x2A5E; SpO2, PR and PAI are SFLOAT words."""
    fields = [Field(pack_sfloat(spo2) + pack_sfloat(pulse_rate))]
    if timestamp is not None:
        fields.append(Field(date_time(timestamp), SpotCheckFlag.TIMESTAMP))
    if measurement_status is not None:
        fields.append(Field(U16.pack(measurement_status), SpotCheckFlag.MEASUREMENT_STATUS))
    if device_sensor_status is not None:
        fields.append(Field(_u24(device_sensor_status), SpotCheckFlag.DEVICE_SENSOR_STATUS))
    if pulse_amplitude_index is not None:
        fields.append(
            Field(pack_sfloat(pulse_amplitude_index), SpotCheckFlag.PULSE_AMPLITUDE_INDEX)
        )
    if clock_not_set:
        fields.append(Field(b"", SpotCheckFlag.DEVICE_CLOCK_NOT_SET))
    return frame(fields, announce_missing=announce_missing)


def plx_continuous(
    spo2: int,
    pulse_rate: int,
    *,
    fast: tuple[int, int] | None = None,
    slow: tuple[int, int] | None = None,
    measurement_status: int | None = None,
    device_sensor_status: int | None = None,
    pulse_amplitude_index: int | None = None,
    announce_missing: int = 0,
) -> bytes:
    """PLX Continuous Measurement 0x2A5F; every value is an SFLOAT word."""
    fields = [Field(pack_sfloat(spo2) + pack_sfloat(pulse_rate))]
    if fast is not None:
        fields.append(Field(pack_sfloat(fast[0]) + pack_sfloat(fast[1]), ContinuousFlag.FAST))
    if slow is not None:
        fields.append(Field(pack_sfloat(slow[0]) + pack_sfloat(slow[1]), ContinuousFlag.SLOW))
    if measurement_status is not None:
        fields.append(Field(U16.pack(measurement_status), ContinuousFlag.MEASUREMENT_STATUS))
    if device_sensor_status is not None:
        fields.append(Field(_u24(device_sensor_status), ContinuousFlag.DEVICE_SENSOR_STATUS))
    if pulse_amplitude_index is not None:
        fields.append(
            Field(pack_sfloat(pulse_amplitude_index), ContinuousFlag.PULSE_AMPLITUDE_INDEX)
        )
    return frame(fields, announce_missing=announce_missing)


def plx_features(
    features: int,
    measurement_status_support: int | None = None,
    device_sensor_status_support: int | None = None,
) -> bytes:
    """PLX Features 0x2A60: supported features u16, then the two support masks when announced."""
    out = bytearray()
    if measurement_status_support is not None:
        features |= PlxFeature.MEASUREMENT_STATUS
    if device_sensor_status_support is not None:
        features |= PlxFeature.DEVICE_SENSOR_STATUS
    out += U16.pack(features)
    if measurement_status_support is not None:
        out += U16.pack(measurement_status_support)
    if device_sensor_status_support is not None:
        out += _u24(device_sensor_status_support)
    return bytes(out)


# -- Health Thermometer service 0x1809 (HTS v1.0 §3.1-3.4) --------------------------------------
class TemperatureFlag(enum.IntFlag):
    """Temperature Measurement flags (HTS §3.1.1.1)."""

    FAHRENHEIT = 0x01
    TIMESTAMP = 0x02
    TEMPERATURE_TYPE = 0x04


TEMPERATURE_MEASUREMENT: Final = 0x2A1C
TEMPERATURE_TYPE: Final = 0x2A1D
INTERMEDIATE_TEMPERATURE: Final = 0x2A1E
MEASUREMENT_INTERVAL: Final = 0x2A21
TEMPERATURE_TYPE_ARMPIT: Final = 1  # HTS §3.2 (Temperature Type values, GSS §3.219)


def temperature_measurement(
    temperature: int,
    *,
    fahrenheit: bool = False,
    timestamp: dt.datetime | None = None,
    temperature_type: int | None = None,
    announce_missing: int = 0,
) -> bytes:
    """Temperature Measurement 0x2A1C / Intermediate Temperature 0x2A1E; the temperature is a
    FLOAT word."""
    fields = [
        Field(b"", TemperatureFlag.FAHRENHEIT if fahrenheit else 0),
        Field(pack_float(temperature)),
    ]
    if timestamp is not None:
        fields.append(Field(date_time(timestamp), TemperatureFlag.TIMESTAMP))
    if temperature_type is not None:
        fields.append(Field(U8.pack(temperature_type), TemperatureFlag.TEMPERATURE_TYPE))
    return frame(fields, announce_missing=announce_missing)


def measurement_interval(seconds: int) -> bytes:
    """Measurement Interval 0x2A21: u16 seconds, 0 = no periodic measurement (HTS §3.4)."""
    return U16.pack(max(0, min(seconds, 0xFFFF)))


# -- Glucose service 0x1808 (GLS v1.0 §3.1-3.3) --------------------------------------------------
class GlucoseFlag(enum.IntFlag):
    """Glucose Measurement flags (GLS §3.1.1.1)."""

    TIME_OFFSET = 0x01
    CONCENTRATION = 0x02  # concentration and the type/sample-location byte
    MOL_PER_L = 0x04  # 0: kg/L
    SENSOR_STATUS = 0x08
    CONTEXT_FOLLOWS = 0x10


class GlucoseContextFlag(enum.IntFlag):
    """Glucose Measurement Context flags (GLS §3.2.1.1)."""

    CARBOHYDRATE = 0x01
    MEAL = 0x02
    TESTER_HEALTH = 0x04
    EXERCISE = 0x08
    MEDICATION = 0x10
    MEDICATION_LITERS = 0x20
    HBA1C = 0x40
    EXTENDED_FLAGS = 0x80


class GlucoseFeature(enum.IntFlag):
    """Glucose Feature 0x2A51 bits (GLS §3.3.1.1)."""

    LOW_BATTERY_DETECTION = 0x0001
    SENSOR_MALFUNCTION_DETECTION = 0x0002
    SAMPLE_SIZE = 0x0004
    STRIP_INSERTION_ERROR_DETECTION = 0x0008
    STRIP_TYPE_ERROR_DETECTION = 0x0010
    RESULT_HIGH_LOW_DETECTION = 0x0020
    TEMPERATURE_HIGH_LOW_DETECTION = 0x0040
    READ_INTERRUPT_DETECTION = 0x0080
    GENERAL_DEVICE_FAULT = 0x0100
    TIME_FAULT = 0x0200
    MULTIPLE_BOND = 0x0400


GLUCOSE_MEASUREMENT: Final = 0x2A18
GLUCOSE_CONTEXT: Final = 0x2A34
GLUCOSE_FEATURE: Final = 0x2A51
GLUCOSE_TYPE_CAPILLARY_WHOLE_BLOOD: Final = 1  # GLS §3.1.1.5 Type
GLUCOSE_LOCATION_FINGER: Final = 1  # GLS §3.1.1.6 Sample Location
GLUCOSE_MEAL_PREPRANDIAL: Final = 1  # GLS §3.2.1.6
GLUCOSE_MEAL_POSTPRANDIAL: Final = 2
GLUCOSE_TESTER_SELF: Final = 1  # GLS §3.2.1.7 (low nibble)
GLUCOSE_HEALTH_NO_ISSUES: Final = 5  # GLS §3.2.1.8 (high nibble)


def glucose_measurement(
    sequence_number: int,
    base_time: dt.datetime,
    *,
    time_offset_min: int | None = None,
    concentration: int | None = None,
    mol_per_l: bool = False,
    sample_type: int = GLUCOSE_TYPE_CAPILLARY_WHOLE_BLOOD,
    sample_location: int = GLUCOSE_LOCATION_FINGER,
    sensor_status: int | None = None,
    context_follows: bool = False,
    announce_missing: int = 0,
) -> bytes:
    """Glucose Measurement 0x2A18: the concentration is an SFLOAT word in kg/L (mol/L with
    ``mol_per_l``); the time offset is signed minutes added to the base time."""
    fields = [
        Field(b"", (GlucoseFlag.MOL_PER_L if mol_per_l else 0)),
        Field(b"", GlucoseFlag.CONTEXT_FOLLOWS if context_follows else 0),
        Field(U16.pack(sequence_number) + date_time(base_time)),
    ]
    if time_offset_min is not None:
        fields.append(
            Field(time_offset_min.to_bytes(2, "little", signed=True), GlucoseFlag.TIME_OFFSET)
        )
    if concentration is not None:
        type_location = U8.pack((sample_location & 0x0F) << 4 | (sample_type & 0x0F))
        fields.append(Field(pack_sfloat(concentration) + type_location, GlucoseFlag.CONCENTRATION))
    if sensor_status is not None:
        fields.append(Field(U16.pack(sensor_status), GlucoseFlag.SENSOR_STATUS))
    return frame(fields, announce_missing=announce_missing)


def glucose_context(
    sequence_number: int,
    *,
    carbohydrate: tuple[int, int] | None = None,
    meal: int | None = None,
    tester_health: tuple[int, int] | None = None,
    exercise: tuple[int, int] | None = None,
    medication: tuple[int, int] | None = None,
    medication_liters: bool = False,
    hba1c: int | None = None,
) -> bytes:
    """Glucose Measurement Context 0x2A34, fields in GLS §3.2 order: carbohydrate (ID, SFLOAT kg),
    meal, tester-health (tester, health), exercise (seconds, percent), medication (ID, SFLOAT kg
    or liters), HbA1c (SFLOAT percent)."""
    fields = [
        Field(b"", GlucoseContextFlag.MEDICATION_LITERS if medication_liters else 0),
        Field(U16.pack(sequence_number)),
    ]
    if carbohydrate is not None:
        carb_id, grams = carbohydrate
        fields.append(Field(U8.pack(carb_id) + pack_sfloat(grams), GlucoseContextFlag.CARBOHYDRATE))
    if meal is not None:
        fields.append(Field(U8.pack(meal), GlucoseContextFlag.MEAL))
    if tester_health is not None:
        tester, health = tester_health
        fields.append(Field(U8.pack(health << 4 | tester), GlucoseContextFlag.TESTER_HEALTH))
    if exercise is not None:
        seconds, percent = exercise
        fields.append(Field(U16.pack(seconds) + U8.pack(percent), GlucoseContextFlag.EXERCISE))
    if medication is not None:
        med_id, amount = medication
        fields.append(Field(U8.pack(med_id) + pack_sfloat(amount), GlucoseContextFlag.MEDICATION))
    if hba1c is not None:
        fields.append(Field(pack_sfloat(hba1c), GlucoseContextFlag.HBA1C))
    return frame(fields)


def glucose_feature(features: int) -> bytes:
    return U16.pack(features)


# -- Current Time service 0x1805 (CTS v1.1 §3.1) -------------------------------------------------
CURRENT_TIME: Final = 0x2A2B
CURRENT_TIME_SIZE: Final = 10
ADJUST_REASON_MANUAL: Final = 0x01  # Adjust Reason bit 0: manual time update


def current_time(when: dt.datetime, adjust_reason: int = 0) -> bytes:
    """Current Time 0x2A2B: Date Time, day of week (1 Monday … 7 Sunday), Fractions256, Adjust
    Reason."""
    fractions256 = when.microsecond * 256 // 1_000_000
    return date_time(when) + bytes((when.isoweekday(), fractions256, adjust_reason))


def parse_current_time(value: bytes) -> tuple[dt.datetime, int]:
    """Firmware-side parsing of a written Current Time; ValueError on any malformed field."""
    if len(value) != CURRENT_TIME_SIZE:
        raise ValueError(f"Current Time is {CURRENT_TIME_SIZE} bytes, got {len(value)}")
    year, month, day, hours, minutes, seconds = value[0] | value[1] << 8, *value[2:7]
    fractions256, adjust_reason = value[8], value[9]
    if not YEAR_MIN <= year <= YEAR_MAX:
        raise ValueError(f"year {year} outside {YEAR_MIN}..{YEAR_MAX}")
    when = dt.datetime(  # noqa: DTZ001 - CTS carries local time without a zone (CTS §3.1)
        year, month, day, hours, minutes, seconds, fractions256 * 1_000_000 // 256
    )
    return when, adjust_reason


# -- Device Information 0x180A (DIS v1.1 §3) and Battery 0x180F (BAS v1.0 §3.1) -----------------
MANUFACTURER_NAME: Final = 0x2A29
MODEL_NUMBER: Final = 0x2A24
SERIAL_NUMBER: Final = 0x2A25
HARDWARE_REVISION: Final = 0x2A27
FIRMWARE_REVISION: Final = 0x2A26
SOFTWARE_REVISION: Final = 0x2A28
SYSTEM_ID: Final = 0x2A23
PNP_ID: Final = 0x2A50
BATTERY_LEVEL: Final = 0x2A19
PNP_VENDOR_ID_SOURCE_BLUETOOTH: Final = 0x01  # DIS §3.9.1.1
PNP_VENDOR_ID_TEST: Final = 0xFFFF  # Bluetooth SIG company identifier reserved for testing
BATTERY_LEVEL_MAX: Final = 100


def system_id(address: bytes) -> bytes:
    """System ID 0x2A23 for a 6-byte address given most significant byte first: the EUI-64
    ``OUI FF FE NIC`` (IEEE EUI-48 → EUI-64 mapping) sent least significant octet first, i.e.
    Manufacturer Identifier (40 bits) then Organizationally Unique Identifier (24 bits)."""
    if len(address) != 6:
        raise ValueError("an EUI-48 address has 6 bytes")
    eui64 = address[:3] + b"\xff\xfe" + address[3:]
    return bytes(reversed(eui64))


def pnp_id(product_id: int, product_version: int) -> bytes:
    return (
        U8.pack(PNP_VENDOR_ID_SOURCE_BLUETOOTH)
        + U16.pack(PNP_VENDOR_ID_TEST)
        + U16.pack(product_id)
        + U16.pack(product_version)
    )


def battery_level(percent: int) -> bytes:
    if not 0 <= percent <= BATTERY_LEVEL_MAX:
        raise ValueError(f"battery level {percent} outside 0..100")
    return U8.pack(percent)
