"""Glucose service 0x1808 (Bluetooth SIG Glucose Service v1.0, GLS §3; Glucose Profile v1.0).

Glucose Measurement 0x2A18 (notify), Glucose Measurement Context 0x2A34 (notify) and Glucose
Feature 0x2A51 (read). A meter sends measurements only when the collector asks for stored records
over the Record Access Control Point (GLS §3.4; :mod:`gateway.ieee11073.racp`). Field layouts: GLS
§3.1 and §3.2 and the GATT Specification Supplement (GSS) characteristics of the same names.

Units (docs/standards.md "Glucose"): the wire carries kg/L (Flags bit 2 clear) or mol/L (set) as an
SFLOAT. The measurement keeps the unit family the meter chose and expresses it the way the PHD IG
does: kg/L × 10^5 = mg/dL (MDC_DIM_MILLI_G_PER_DL), mol/L × 10^3 = mmol/L
(MDC_DIM_MILLI_MOLE_PER_L). Only the exponent moves, so the mantissa and hence the decimal
precision are those the meter sent (0.00095 kg/L → 95 mg/dL, 0.0053 mol/L → 5.3 mmol/L).
"""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import dataclass
from typing import ClassVar, Final, Self, TypeVar

from gateway.ieee11073._buffer import U8, U16, Reader, check_range
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.measurement import Condition, Measurement, MeasurementStatus
from gateway.ieee11073.numbers import Float, MderNumber, SFloat
from gateway.ieee11073.registry import register

SERVICE_UUID = 0x1808
_E = TypeVar("_E", bound=enum.IntEnum)

# IEEE 11073-10101 glucose concentration terms (partition 2, SCADA; used by IEEE 11073-10417) and
# dimensions (partition 4). Kept here, as bps.py keeps MDC_PRESS_CUFF, since only this codec emits
# them.
MDC_CONC_GLU_GEN: Final = 160020  # 2::28948, sample type not specified
MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD: Final = 160184  # 2::29112
MDC_CONC_GLU_CAPILLARY_PLASMA: Final = 160188  # 2::29116
MDC_CONC_GLU_VENOUS_WHOLEBLOOD: Final = 160192  # 2::29120
MDC_CONC_GLU_VENOUS_PLASMA: Final = 160196  # 2::29124
MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD: Final = 160200  # 2::29128
MDC_CONC_GLU_ARTERIAL_PLASMA: Final = 160204  # 2::29132
MDC_CONC_GLU_CONTROL: Final = 160208  # 2::29136
MDC_CONC_GLU_ISF: Final = 160212  # 2::29140
MDC_DIM_MILLI_G_PER_DL: Final = 2130
MDC_DIM_MILLI_MOLE_PER_L: Final = 4722
U16_MAX: Final = 0xFFFF
S16_MIN, S16_MAX = -0x8000, 0x7FFF
NIBBLE_MAX: Final = 0x0F
KG_PER_L_TO_MG_PER_DL_EXP: Final = 5  # 1 kg/L = 10^5 mg/dL
MOL_PER_L_TO_MMOL_PER_L_EXP: Final = 3  # 1 mol/L = 10^3 mmol/L


# -- Glucose Measurement 0x2A18 (GLS §3.1) ------------------------------------------------------


class GlucoseFlags(enum.IntFlag):
    """Glucose Measurement Flags (GLS §3.1.1.1)."""

    TIME_OFFSET_PRESENT = 0x01
    CONCENTRATION_PRESENT = 0x02  # concentration, and the Type-Sample Location byte
    UNIT_MOL_PER_L = 0x04  # 0: kg/L, 1: mol/L
    SENSOR_STATUS_PRESENT = 0x08
    CONTEXT_FOLLOWS = 0x10


FLAGS_RFU_MASK: Final = 0xE0  # GLS §3.1.1.1: bits 5-7 reserved for future use


class ConcentrationUnit(enum.IntEnum):
    """Flags bit 2: the unit of Glucose Concentration."""

    KG_PER_L = 0
    MOL_PER_L = 1


class SampleType(enum.IntEnum):
    """Type, the low nibble of the Type-Sample Location field (GLS §3.1.1.5)."""

    CAPILLARY_WHOLE_BLOOD = 1
    CAPILLARY_PLASMA = 2
    VENOUS_WHOLE_BLOOD = 3
    VENOUS_PLASMA = 4
    ARTERIAL_WHOLE_BLOOD = 5
    ARTERIAL_PLASMA = 6
    UNDETERMINED_WHOLE_BLOOD = 7
    UNDETERMINED_PLASMA = 8
    INTERSTITIAL_FLUID = 9
    CONTROL_SOLUTION = 10


class SampleLocation(enum.IntEnum):
    """Sample Location, the high nibble of the Type-Sample Location field (GLS §3.1.1.6)."""

    FINGER = 1
    ALTERNATE_SITE_TEST = 2
    EARLOBE = 3
    CONTROL_SOLUTION = 4
    NOT_AVAILABLE = 15


class SensorStatus(enum.IntFlag):
    """Sensor Status Annunciation (GLS §3.1.1.7), u16; bits 12-15 reserved and kept."""

    DEVICE_BATTERY_LOW = 1 << 0
    SENSOR_MALFUNCTION = 1 << 1
    SAMPLE_SIZE_INSUFFICIENT = 1 << 2
    STRIP_INSERTION_ERROR = 1 << 3
    STRIP_TYPE_INCORRECT = 1 << 4
    RESULT_TOO_HIGH = 1 << 5
    RESULT_TOO_LOW = 1 << 6
    TEMPERATURE_TOO_HIGH = 1 << 7
    TEMPERATURE_TOO_LOW = 1 << 8
    READ_INTERRUPTED = 1 << 9
    GENERAL_DEVICE_FAULT = 1 << 10
    TIME_FAULT = 1 << 11


# IEEE 11073-10101 / 11073-10417 glucose concentration terms, partition 2 (SCADA).
SAMPLE_TYPE_CODES: Final = {
    SampleType.CAPILLARY_WHOLE_BLOOD: MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD,
    SampleType.CAPILLARY_PLASMA: MDC_CONC_GLU_CAPILLARY_PLASMA,
    SampleType.VENOUS_WHOLE_BLOOD: MDC_CONC_GLU_VENOUS_WHOLEBLOOD,
    SampleType.VENOUS_PLASMA: MDC_CONC_GLU_VENOUS_PLASMA,
    SampleType.ARTERIAL_WHOLE_BLOOD: MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD,
    SampleType.ARTERIAL_PLASMA: MDC_CONC_GLU_ARTERIAL_PLASMA,
    SampleType.INTERSTITIAL_FLUID: MDC_CONC_GLU_ISF,
    SampleType.CONTROL_SOLUTION: MDC_CONC_GLU_CONTROL,
}
# Undetermined, reserved or absent types: glucose, sample not specified.
GENERIC_GLUCOSE_CODE: Final = MDC_CONC_GLU_GEN

# Sample locations with a body site in the FHIR code table (gateway/fhir/codes.toml).
SAMPLE_LOCATION_SITES: Final = {
    SampleLocation.FINGER: "finger",
    SampleLocation.EARLOBE: "ear-lobe",
}
UNIT_CODES: Final = {
    ConcentrationUnit.KG_PER_L: (MDC_DIM_MILLI_G_PER_DL, KG_PER_L_TO_MG_PER_DL_EXP),
    ConcentrationUnit.MOL_PER_L: (MDC_DIM_MILLI_MOLE_PER_L, MOL_PER_L_TO_MMOL_PER_L_EXP),
}
# Annunciations that make the result itself doubtful (GLS §3.1.1.7); battery low does not.
QUESTIONABLE_STATUS: Final = (
    SensorStatus.SENSOR_MALFUNCTION
    | SensorStatus.SAMPLE_SIZE_INSUFFICIENT
    | SensorStatus.STRIP_INSERTION_ERROR
    | SensorStatus.STRIP_TYPE_INCORRECT
    | SensorStatus.RESULT_TOO_HIGH
    | SensorStatus.RESULT_TOO_LOW
    | SensorStatus.TEMPERATURE_TOO_HIGH
    | SensorStatus.TEMPERATURE_TOO_LOW
    | SensorStatus.READ_INTERRUPTED
    | SensorStatus.GENERAL_DEVICE_FAULT
)


def scale_exponent(value: SFloat, shift: int) -> MderNumber:
    """``value × 10^shift`` by moving the exponent only (the mantissa, hence the precision, stays).

    An SFLOAT while the exponent fits its 4 bits, else a FLOAT; special values stay special.
    """
    if value.special is not None:
        return value
    exponent = value.exponent + shift
    if -8 <= exponent <= 7:
        return SFloat(value.mantissa, exponent)
    return Float(value.mantissa, exponent)


@register
@dataclass(frozen=True, slots=True)
class GlucoseMeasurement:
    """Glucose Measurement 0x2A18.

    ``concentration``, ``sample_type`` and ``sample_location`` are present together (Flags bit 1).
    ``sample_type``/``sample_location`` are the raw nibbles (reserved values kept; see
    :class:`SampleType`, :class:`SampleLocation`). ``unit`` is Flags bit 2, kept even without a
    concentration, and ``rfu_flags`` the reserved bits 5-7, so that ``__bytes__`` is exact.
    """

    sequence_number: int
    base_time: DateTime
    time_offset_min: int | None = None
    concentration: SFloat | None = None
    sample_type: int | None = None
    sample_location: int | None = None
    unit: ConcentrationUnit = ConcentrationUnit.KG_PER_L
    sensor_status: SensorStatus | None = None
    context_follows: bool = False
    rfu_flags: int = 0

    UUID: ClassVar[int] = 0x2A18
    NAME: ClassVar[str] = "Glucose Measurement"

    def __post_init__(self) -> None:
        check_range("sequence number", self.sequence_number, 0, U16_MAX)
        if self.time_offset_min is not None:
            check_range("time offset", self.time_offset_min, S16_MIN, S16_MAX)
        present = (self.concentration, self.sample_type, self.sample_location)
        if any(p is None for p in present) and any(p is not None for p in present):
            raise ValueError("concentration, sample type and sample location go together")
        if self.sample_type is not None:
            check_range("sample type", self.sample_type, 0, NIBBLE_MAX)
        if self.sample_location is not None:
            check_range("sample location", self.sample_location, 0, NIBBLE_MAX)
        if self.sensor_status is not None:
            check_range("sensor status annunciation", int(self.sensor_status), 0, U16_MAX)
        if self.rfu_flags & ~FLAGS_RFU_MASK:
            raise ValueError(
                f"rfu_flags 0x{self.rfu_flags:02X} outside the reserved bits 0x{FLAGS_RFU_MASK:02X}"
            )

    @property
    def flags(self) -> GlucoseFlags:
        flags = GlucoseFlags(self.rfu_flags)
        if self.time_offset_min is not None:
            flags |= GlucoseFlags.TIME_OFFSET_PRESENT
        if self.concentration is not None:
            flags |= GlucoseFlags.CONCENTRATION_PRESENT
        if self.unit is ConcentrationUnit.MOL_PER_L:
            flags |= GlucoseFlags.UNIT_MOL_PER_L
        if self.sensor_status is not None:
            flags |= GlucoseFlags.SENSOR_STATUS_PRESENT
        if self.context_follows:
            flags |= GlucoseFlags.CONTEXT_FOLLOWS
        return flags

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        raw_flags = r.u8("flags")
        flags = GlucoseFlags(raw_flags & ~FLAGS_RFU_MASK)
        sequence_number = r.u16("Sequence Number")
        base_time = DateTime.read(r)
        offset = None
        if GlucoseFlags.TIME_OFFSET_PRESENT in flags:
            offset = int.from_bytes(r.take(2, "Time Offset"), "little", signed=True)
        concentration = sample_type = location = None
        if GlucoseFlags.CONCENTRATION_PRESENT in flags:
            concentration = r.sfloat("Glucose Concentration")
            type_location = r.u8("Type-Sample Location")
            sample_type, location = type_location & NIBBLE_MAX, type_location >> 4
        status = (
            SensorStatus(r.u16("Sensor Status Annunciation"))
            if GlucoseFlags.SENSOR_STATUS_PRESENT in flags
            else None
        )
        r.end()
        return cls(
            sequence_number,
            base_time,
            offset,
            concentration,
            sample_type,
            location,
            ConcentrationUnit(GlucoseFlags.UNIT_MOL_PER_L in flags),
            status,
            GlucoseFlags.CONTEXT_FOLLOWS in flags,
            raw_flags & FLAGS_RFU_MASK,
        )

    def __bytes__(self) -> bytes:
        out = bytearray(U8.pack(self.flags))
        out += U16.pack(self.sequence_number) + bytes(self.base_time)
        if self.time_offset_min is not None:
            out += self.time_offset_min.to_bytes(2, "little", signed=True)
        if self.concentration is not None:
            out += bytes(self.concentration)
            out += U8.pack((self.sample_location or 0) << 4 | (self.sample_type or 0))
        if self.sensor_status is not None:
            out += U16.pack(self.sensor_status)
        return bytes(out)

    @property
    def timestamp(self) -> DateTime:
        """The user-facing time: base time + time offset (GLS §3.1.1.3-4).

        Without an offset, or when the base time is incomplete or impossible (the offset cannot
        be applied), the base time as sent.
        """
        if not self.time_offset_min:
            return self.base_time
        base = self.base_time.to_datetime()
        if base is None:
            return self.base_time
        try:
            return DateTime.from_datetime(base + _dt.timedelta(minutes=self.time_offset_min))
        except (OverflowError, ValueError):  # beyond year 9999 or before 1582
            return self.base_time

    @property
    def type_code(self) -> int:
        """The MDC glucose term of the sample type (MDC_CONC_GLU_GEN when undetermined)."""
        known = _enum_or_none(SampleType, self.sample_type)
        return (
            GENERIC_GLUCOSE_CODE
            if known is None
            else SAMPLE_TYPE_CODES.get(known, GENERIC_GLUCOSE_CODE)
        )

    def measurements(self) -> tuple[Measurement, ...]:
        """The glucose concentration in mg/dL or mmol/L; none when the meter sent no value."""
        if self.concentration is None:
            return ()
        unit_code, shift = UNIT_CODES[self.unit]
        status = MeasurementStatus(0)
        if self.sample_type == SampleType.CONTROL_SOLUTION:
            status |= MeasurementStatus.TEST_DATA  # a control-solution check, not the patient
        conditions: frozenset[Condition] = frozenset()
        if self.sensor_status is not None:
            if self.sensor_status & QUESTIONABLE_STATUS:
                status |= MeasurementStatus.QUESTIONABLE
            if SensorStatus.TIME_FAULT in self.sensor_status:
                conditions = frozenset({Condition.DEVICE_CLOCK_NOT_SET})
        location = _enum_or_none(SampleLocation, self.sample_location)
        return (
            Measurement(
                self.type_code,
                scale_exponent(self.concentration, shift),
                unit_code,
                timestamp=self.timestamp,
                status=status,
                conditions=conditions,
                body_site=None if location is None else SAMPLE_LOCATION_SITES.get(location),
            ),
        )


def _enum_or_none(cls: type[_E], value: int | None) -> _E | None:
    if value is None:
        return None
    try:
        return cls(value)
    except ValueError:
        return None


# -- Glucose Measurement Context 0x2A34 (GLS §3.2) ----------------------------------------------


class ContextFlags(enum.IntFlag):
    """Glucose Measurement Context Flags (GLS §3.2.1.1)."""

    CARBOHYDRATE_PRESENT = 0x01  # Carbohydrate ID and Carbohydrate (kg)
    MEAL_PRESENT = 0x02
    TESTER_HEALTH_PRESENT = 0x04
    EXERCISE_PRESENT = 0x08  # Exercise Duration (s) and Exercise Intensity (%)
    MEDICATION_PRESENT = 0x10  # Medication ID and Medication
    MEDICATION_UNIT_LITERS = 0x20  # 0: kilograms, 1: liters
    HBA1C_PRESENT = 0x40
    EXTENDED_FLAGS_PRESENT = 0x80


class MedicationUnit(enum.IntEnum):
    """Context Flags bit 5: the unit of Medication."""

    KILOGRAMS = 0
    LITERS = 1


class CarbohydrateId(enum.IntEnum):
    """GLS §3.2.1.4."""

    BREAKFAST = 1
    LUNCH = 2
    DINNER = 3
    SNACK = 4
    DRINK = 5
    SUPPER = 6
    BRUNCH = 7


class Meal(enum.IntEnum):
    """GLS §3.2.1.6."""

    PREPRANDIAL = 1
    POSTPRANDIAL = 2
    FASTING = 3
    CASUAL = 4
    BEDTIME = 5


class Tester(enum.IntEnum):
    """Low nibble of the Tester-Health field (GLS §3.2.1.7)."""

    SELF = 1
    HEALTH_CARE_PROFESSIONAL = 2
    LAB_TEST = 3
    NOT_AVAILABLE = 15


class Health(enum.IntEnum):
    """High nibble of the Tester-Health field (GLS §3.2.1.8)."""

    MINOR_HEALTH_ISSUES = 1
    MAJOR_HEALTH_ISSUES = 2
    DURING_MENSES = 3
    UNDER_STRESS = 4
    NO_HEALTH_ISSUES = 5
    NOT_AVAILABLE = 15


class MedicationId(enum.IntEnum):
    """GLS §3.2.1.11."""

    RAPID_ACTING_INSULIN = 1
    SHORT_ACTING_INSULIN = 2
    INTERMEDIATE_ACTING_INSULIN = 3
    LONG_ACTING_INSULIN = 4
    PREMIXED_INSULIN = 5


def _pair(name: str, first: object | None, second: object | None) -> None:
    if (first is None) != (second is None):
        raise ValueError(f"{name} go together")


@register
@dataclass(frozen=True, slots=True)
class GlucoseMeasurementContext:
    """Glucose Measurement Context 0x2A34: what surrounded the measurement of the same sequence
    number. Identifiers and nibbles are kept raw (reserved values too); the enums above name the
    defined ones. Not a measurement source: the gateway records the measurement alone.
    """

    sequence_number: int
    extended_flags: int | None = None
    carbohydrate_id: int | None = None
    carbohydrate_kg: SFloat | None = None
    meal: int | None = None
    tester: int | None = None
    health: int | None = None
    exercise_duration_s: int | None = None  # 65535: overrun
    exercise_intensity_pct: int | None = None
    medication_id: int | None = None
    medication: SFloat | None = None
    medication_unit: MedicationUnit = MedicationUnit.KILOGRAMS
    hba1c_pct: SFloat | None = None

    UUID: ClassVar[int] = 0x2A34
    NAME: ClassVar[str] = "Glucose Measurement Context"

    def __post_init__(self) -> None:
        check_range("sequence number", self.sequence_number, 0, U16_MAX)
        _pair("carbohydrate ID and carbohydrate", self.carbohydrate_id, self.carbohydrate_kg)
        _pair("tester and health", self.tester, self.health)
        _pair(
            "exercise duration and intensity", self.exercise_duration_s, self.exercise_intensity_pct
        )
        _pair("medication ID and medication", self.medication_id, self.medication)
        for name, value, high in (
            ("extended flags", self.extended_flags, 0xFF),
            ("carbohydrate ID", self.carbohydrate_id, 0xFF),
            ("meal", self.meal, 0xFF),
            ("tester", self.tester, NIBBLE_MAX),
            ("health", self.health, NIBBLE_MAX),
            ("exercise duration", self.exercise_duration_s, U16_MAX),
            ("exercise intensity", self.exercise_intensity_pct, 0xFF),
            ("medication ID", self.medication_id, 0xFF),
        ):
            if value is not None:
                check_range(name, value, 0, high)

    @property
    def flags(self) -> ContextFlags:
        flags = ContextFlags(0)
        for present, bit in (
            (self.carbohydrate_id, ContextFlags.CARBOHYDRATE_PRESENT),
            (self.meal, ContextFlags.MEAL_PRESENT),
            (self.tester, ContextFlags.TESTER_HEALTH_PRESENT),
            (self.exercise_duration_s, ContextFlags.EXERCISE_PRESENT),
            (self.medication_id, ContextFlags.MEDICATION_PRESENT),
            (self.hba1c_pct, ContextFlags.HBA1C_PRESENT),
            (self.extended_flags, ContextFlags.EXTENDED_FLAGS_PRESENT),
        ):
            if present is not None:
                flags |= bit
        if self.medication_unit is MedicationUnit.LITERS:
            flags |= ContextFlags.MEDICATION_UNIT_LITERS
        return flags

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        flags = ContextFlags(r.u8("flags"))
        sequence_number = r.u16("Sequence Number")
        extended = r.u8("Extended Flags") if ContextFlags.EXTENDED_FLAGS_PRESENT in flags else None
        carb_id = carb = meal = tester = health = duration = intensity = None
        med_id = medication = hba1c = None
        if ContextFlags.CARBOHYDRATE_PRESENT in flags:
            carb_id, carb = r.u8("Carbohydrate ID"), r.sfloat("Carbohydrate")
        if ContextFlags.MEAL_PRESENT in flags:
            meal = r.u8("Meal")
        if ContextFlags.TESTER_HEALTH_PRESENT in flags:
            tester_health = r.u8("Tester-Health")
            tester, health = tester_health & NIBBLE_MAX, tester_health >> 4
        if ContextFlags.EXERCISE_PRESENT in flags:
            duration = r.u16("Exercise Duration")
            intensity = r.u8("Exercise Intensity")
        if ContextFlags.MEDICATION_PRESENT in flags:
            med_id, medication = r.u8("Medication ID"), r.sfloat("Medication")
        if ContextFlags.HBA1C_PRESENT in flags:
            hba1c = r.sfloat("HbA1c")
        r.end()
        return cls(
            sequence_number,
            extended,
            carb_id,
            carb,
            meal,
            tester,
            health,
            duration,
            intensity,
            med_id,
            medication,
            MedicationUnit(ContextFlags.MEDICATION_UNIT_LITERS in flags),
            hba1c,
        )

    def __bytes__(self) -> bytes:
        out = bytearray(U8.pack(self.flags))
        out += U16.pack(self.sequence_number)
        if self.extended_flags is not None:
            out += U8.pack(self.extended_flags)
        if self.carbohydrate_id is not None and self.carbohydrate_kg is not None:
            out += U8.pack(self.carbohydrate_id) + bytes(self.carbohydrate_kg)
        if self.meal is not None:
            out += U8.pack(self.meal)
        if self.tester is not None and self.health is not None:
            out += U8.pack(self.health << 4 | self.tester)
        if self.exercise_duration_s is not None and self.exercise_intensity_pct is not None:
            out += U16.pack(self.exercise_duration_s) + U8.pack(self.exercise_intensity_pct)
        if self.medication_id is not None and self.medication is not None:
            out += U8.pack(self.medication_id) + bytes(self.medication)
        if self.hba1c_pct is not None:
            out += bytes(self.hba1c_pct)
        return bytes(out)


# -- Glucose Feature 0x2A51 (GLS §3.3) ----------------------------------------------------------


class GlucoseFeature(enum.IntFlag):
    """Glucose Feature bits (GLS §3.3.1.1); bits 11-15 reserved and kept."""

    LOW_BATTERY_DETECTION = 1 << 0
    SENSOR_MALFUNCTION_DETECTION = 1 << 1
    SENSOR_SAMPLE_SIZE = 1 << 2
    SENSOR_STRIP_INSERTION_ERROR_DETECTION = 1 << 3
    SENSOR_STRIP_TYPE_ERROR_DETECTION = 1 << 4
    SENSOR_RESULT_HIGH_LOW_DETECTION = 1 << 5
    SENSOR_TEMPERATURE_HIGH_LOW_DETECTION = 1 << 6
    SENSOR_READ_INTERRUPT_DETECTION = 1 << 7
    GENERAL_DEVICE_FAULT = 1 << 8
    TIME_FAULT = 1 << 9
    MULTIPLE_BOND = 1 << 10


@register
@dataclass(frozen=True, slots=True)
class GlucoseFeatureValue:
    """Glucose Feature 0x2A51: u16."""

    features: GlucoseFeature

    UUID: ClassVar[int] = 0x2A51
    NAME: ClassVar[str] = "Glucose Feature"

    def __post_init__(self) -> None:
        check_range("glucose feature", int(self.features), 0, U16_MAX)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        features = GlucoseFeature(r.u16("features"))
        r.end()
        return cls(features)

    def __bytes__(self) -> bytes:
        return U16.pack(self.features)
