"""Blood Pressure service 0x1810 (Bluetooth SIG Blood Pressure Service v1.1.1, BLS §3).

Blood Pressure Measurement 0x2A35 (indicate), Intermediate Cuff Pressure 0x2A36 (notify) and Blood
Pressure Feature 0x2A49 (read). Field layouts: GATT Specification Supplement (GSS), characteristics
"Blood Pressure Measurement", "Intermediate Cuff Pressure" and "Blood Pressure Feature".

Intermediate Cuff Pressure has the Blood Pressure Measurement layout: its first compound field is
the current cuff pressure and the other two are unused (sensors send NaN or 0; both are kept).
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final, Self

from gateway.ieee11073 import mdc
from gateway.ieee11073._buffer import U8, U16, Reader, check_range
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.measurement import Condition, Measurement
from gateway.ieee11073.numbers import SFloat, Special
from gateway.ieee11073.registry import register

SERVICE_UUID = 0x1810

# IEEE 11073-10101 MDC_PRESS_CUFF, partition 2 (SCADA) term 19228: the pressure in the cuff while a
# measurement runs (its siblings MDC_PRESS_CUFF_SYS/DIA/MEAN are 150301-150303).
MDC_PRESS_CUFF: Final = 150300

SFLOAT_NAN: Final = SFloat.of(Special.NAN)  # what the unused Intermediate Cuff Pressure fields hold
USER_ID_UNKNOWN = 0xFF  # GSS Blood Pressure Measurement, User ID: 255 = "Unknown User"
U8_MAX, U16_MAX = 0xFF, 0xFFFF


class BloodPressureFlags(enum.IntFlag):
    """Blood Pressure Measurement / Intermediate Cuff Pressure Flags (GSS, Flags field)."""

    UNITS_KPA = 0x01  # bit 0: 0 mmHg, 1 kPa
    TIME_STAMP_PRESENT = 0x02
    PULSE_RATE_PRESENT = 0x04
    USER_ID_PRESENT = 0x08
    MEASUREMENT_STATUS_PRESENT = 0x10


FLAGS_RFU_MASK = 0xE0  # GSS: Flags bits 5-7 reserved for future use


class PressureUnit(enum.IntEnum):
    """Flags bit 0: the unit of the three compound values."""

    MMHG = 0
    KPA = 1


PRESSURE_UNIT_CODES: Final = {
    PressureUnit.MMHG: mdc.MDC_DIM_MMHG,
    PressureUnit.KPA: mdc.MDC_DIM_KILO_PASCAL,
}


class BloodPressureStatus(enum.IntFlag):
    """Measurement Status field (GSS Blood Pressure Measurement, Measurement Status), u16.

    Bits 3-4 are one 2-bit field, Pulse Rate Range Detection: 0 within range, 1 exceeds upper limit
    (``PULSE_RATE_ABOVE_RANGE``), 2 less than lower limit (``PULSE_RATE_BELOW_RANGE``), 3 reserved
    (both bits set). Bits 6-15 are reserved; unknown bits are kept.
    """

    BODY_MOVEMENT = 0x0001
    CUFF_TOO_LOOSE = 0x0002
    IRREGULAR_PULSE = 0x0004
    PULSE_RATE_ABOVE_RANGE = 0x0008
    PULSE_RATE_BELOW_RANGE = 0x0010
    IMPROPER_POSITION = 0x0020


class PulseRateRange(enum.IntEnum):
    """Measurement Status bits 3-4, Pulse Rate Range Detection Flags (GSS)."""

    WITHIN_RANGE = 0
    ABOVE_UPPER_LIMIT = 1
    BELOW_LOWER_LIMIT = 2
    RESERVED = 3


PULSE_RATE_RANGE_SHIFT = 3
PULSE_RATE_RANGE_MASK = 0b11 << PULSE_RATE_RANGE_SHIFT

_STATUS_CONDITIONS: Final = (
    (BloodPressureStatus.BODY_MOVEMENT, Condition.BODY_MOVEMENT),
    (BloodPressureStatus.CUFF_TOO_LOOSE, Condition.CUFF_TOO_LOOSE),
    (BloodPressureStatus.IRREGULAR_PULSE, Condition.IRREGULAR_PULSE),
    (BloodPressureStatus.IMPROPER_POSITION, Condition.IMPROPER_POSITION),
)
_PULSE_RANGE_CONDITIONS: Final = {
    PulseRateRange.ABOVE_UPPER_LIMIT: Condition.PULSE_RATE_ABOVE_RANGE,
    PulseRateRange.BELOW_LOWER_LIMIT: Condition.PULSE_RATE_BELOW_RANGE,
}
# The conditions that qualify the pulse rate itself, repeated on the pulse-rate measurement.
_PULSE_CONDITIONS: Final = frozenset(
    {
        Condition.IRREGULAR_PULSE,
        Condition.PULSE_RATE_ABOVE_RANGE,
        Condition.PULSE_RATE_BELOW_RANGE,
    }
)


def pulse_rate_range(status: BloodPressureStatus) -> PulseRateRange:
    """The 2-bit Pulse Rate Range field of ``status`` (value 3 is reserved)."""
    return PulseRateRange((status & PULSE_RATE_RANGE_MASK) >> PULSE_RATE_RANGE_SHIFT)


def _conditions(status: BloodPressureStatus | None) -> frozenset[Condition]:
    if status is None:
        return frozenset()
    found = {condition for bit, condition in _STATUS_CONDITIONS if bit in status}
    pulse = _PULSE_RANGE_CONDITIONS.get(pulse_rate_range(status))
    if pulse is not None:
        found.add(pulse)
    return frozenset(found)


# -- the layout both measurement characteristics share -------------------------------------------


class _BloodPressureLayout(abc.ABC):
    """Flags, three compound SFLOATs, then the optional time stamp, pulse rate, user ID and status.

    One implementation for Blood Pressure Measurement and Intermediate Cuff Pressure, which share
    this layout and differ in what their three compound fields are called and mean
    (:meth:`_compound`, ``COMPOUND_FIELDS``) and in the measurements they give.
    """

    __slots__ = ()

    UUID: ClassVar[int]
    NAME: ClassVar[str]
    COMPOUND_FIELDS: ClassVar[tuple[str, str, str]]  # the names errors give the three SFLOATs

    unit: PressureUnit
    timestamp: DateTime | None
    pulse_rate: SFloat | None
    user_id: int | None
    status: BloodPressureStatus | None
    rfu_flags: int

    if TYPE_CHECKING:  # the dataclass subclasses generate it; from_bytes calls it positionally

        def __init__(
            self,
            first: SFloat,
            second: SFloat,
            third: SFloat,
            unit: PressureUnit = ...,
            timestamp: DateTime | None = ...,
            pulse_rate: SFloat | None = ...,
            user_id: int | None = ...,
            status: BloodPressureStatus | None = ...,
            rfu_flags: int = ...,
        ) -> None: ...

    @abc.abstractmethod
    def _compound(self) -> tuple[SFloat, SFloat, SFloat]:
        """The three compound fields in wire order; each characteristic names its own."""

    def __post_init__(self) -> None:
        if self.user_id is not None:
            check_range("user ID", self.user_id, 0, U8_MAX)
        if self.status is not None:
            check_range("measurement status", int(self.status), 0, U16_MAX)
        if self.rfu_flags & ~FLAGS_RFU_MASK:
            raise ValueError(
                f"rfu_flags 0x{self.rfu_flags:02X} outside the reserved bits 0x{FLAGS_RFU_MASK:02X}"
            )

    @property
    def flags(self) -> BloodPressureFlags:
        flags = BloodPressureFlags(self.rfu_flags)
        if self.unit is PressureUnit.KPA:
            flags |= BloodPressureFlags.UNITS_KPA
        if self.timestamp is not None:
            flags |= BloodPressureFlags.TIME_STAMP_PRESENT
        if self.pulse_rate is not None:
            flags |= BloodPressureFlags.PULSE_RATE_PRESENT
        if self.user_id is not None:
            flags |= BloodPressureFlags.USER_ID_PRESENT
        if self.status is not None:
            flags |= BloodPressureFlags.MEASUREMENT_STATUS_PRESENT
        return flags

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        raw_flags = r.u8("flags")
        flags = BloodPressureFlags(raw_flags & ~FLAGS_RFU_MASK)
        first, second, third = (r.sfloat(name) for name in cls.COMPOUND_FIELDS)
        unit = PressureUnit.KPA if BloodPressureFlags.UNITS_KPA in flags else PressureUnit.MMHG
        timestamp = DateTime.read(r) if BloodPressureFlags.TIME_STAMP_PRESENT in flags else None
        pulse = r.sfloat("Pulse Rate") if BloodPressureFlags.PULSE_RATE_PRESENT in flags else None
        user_id = r.u8("User ID") if BloodPressureFlags.USER_ID_PRESENT in flags else None
        status = (
            BloodPressureStatus(r.u16("Measurement Status"))
            if BloodPressureFlags.MEASUREMENT_STATUS_PRESENT in flags
            else None
        )
        r.end()
        return cls(
            first,
            second,
            third,
            unit,
            timestamp,
            pulse,
            user_id,
            status,
            raw_flags & FLAGS_RFU_MASK,
        )

    def __bytes__(self) -> bytes:
        out = bytearray(U8.pack(self.flags))
        out += b"".join(bytes(value) for value in self._compound())
        if self.timestamp is not None:
            out += bytes(self.timestamp)
        if self.pulse_rate is not None:
            out += bytes(self.pulse_rate)
        if self.user_id is not None:
            out += U8.pack(self.user_id)
        if self.status is not None:
            out += U16.pack(self.status)
        return bytes(out)

    @property
    def conditions(self) -> frozenset[Condition]:
        """The measurement conditions the status field reports."""
        return _conditions(self.status)

    @property
    def user_index(self) -> int | None:
        """The user ID, None when absent or "Unknown User"."""
        return None if self.user_id is None or self.user_id == USER_ID_UNKNOWN else self.user_id


# Systolic, diastolic and mean arterial pressure: the components of MDC_PRESS_BLD_NONINV.
_COMPOUND_CODES: Final = (
    mdc.MDC_PRESS_BLD_NONINV_SYS,
    mdc.MDC_PRESS_BLD_NONINV_DIA,
    mdc.MDC_PRESS_BLD_NONINV_MEAN,
)


@register
@dataclass(frozen=True, slots=True)
class BloodPressureMeasurement(_BloodPressureLayout):
    """Blood Pressure Measurement 0x2A35.

    ``rfu_flags`` keeps the reserved Flags bits 5-7 as the sensor sent them, so that ``__bytes__``
    is the exact inverse of ``from_bytes``; every other flag follows from which fields are present.
    """

    systolic: SFloat
    diastolic: SFloat
    mean_arterial_pressure: SFloat
    unit: PressureUnit = PressureUnit.MMHG
    timestamp: DateTime | None = None
    pulse_rate: SFloat | None = None
    user_id: int | None = None
    status: BloodPressureStatus | None = None
    rfu_flags: int = 0

    UUID: ClassVar[int] = 0x2A35
    NAME: ClassVar[str] = "Blood Pressure Measurement"
    COMPOUND_FIELDS: ClassVar[tuple[str, str, str]] = (
        "Systolic",
        "Diastolic",
        "Mean Arterial Pressure",
    )

    def _compound(self) -> tuple[SFloat, SFloat, SFloat]:
        return self.systolic, self.diastolic, self.mean_arterial_pressure

    def measurements(self) -> tuple[Measurement, ...]:
        """The compound blood pressure (systolic/diastolic/mean) and, when sent, the pulse rate."""
        unit_code = PRESSURE_UNIT_CODES[self.unit]
        conditions = self.conditions
        components = tuple(
            Measurement(code, value, unit_code)
            for code, value in zip(_COMPOUND_CODES, self._compound(), strict=True)
        )
        compound = Measurement(
            mdc.MDC_PRESS_BLD_NONINV,
            timestamp=self.timestamp,
            conditions=conditions,
            components=components,
            user_index=self.user_index,
        )
        if self.pulse_rate is None:
            return (compound,)
        pulse = Measurement(
            mdc.MDC_PULS_RATE_NON_INV,
            self.pulse_rate,
            mdc.MDC_DIM_BEAT_PER_MIN,
            timestamp=self.timestamp,
            conditions=conditions & _PULSE_CONDITIONS,
            user_index=self.user_index,
        )
        return compound, pulse


@register
@dataclass(frozen=True, slots=True)
class IntermediateCuffPressure(_BloodPressureLayout):
    """Intermediate Cuff Pressure 0x2A36: the cuff pressure while a measurement is under way.

    ``unused_diastolic`` and ``unused_mean`` are the two unused compound fields, kept as received
    (NaN by the specification; some sensors send 0) so that ``__bytes__`` is exact.
    """

    cuff_pressure: SFloat
    unused_diastolic: SFloat = SFLOAT_NAN
    unused_mean: SFloat = SFLOAT_NAN
    unit: PressureUnit = PressureUnit.MMHG
    timestamp: DateTime | None = None
    pulse_rate: SFloat | None = None
    user_id: int | None = None
    status: BloodPressureStatus | None = None
    rfu_flags: int = 0

    UUID: ClassVar[int] = 0x2A36
    NAME: ClassVar[str] = "Intermediate Cuff Pressure"
    COMPOUND_FIELDS: ClassVar[tuple[str, str, str]] = (
        "Current Cuff Pressure",
        "unused Diastolic",
        "unused Mean Arterial Pressure",
    )

    def _compound(self) -> tuple[SFloat, SFloat, SFloat]:
        return self.cuff_pressure, self.unused_diastolic, self.unused_mean

    def measurements(self) -> tuple[Measurement, ...]:
        """One measurement: the current cuff pressure (MDC_PRESS_CUFF)."""
        return (
            Measurement(
                MDC_PRESS_CUFF,
                self.cuff_pressure,
                PRESSURE_UNIT_CODES[self.unit],
                timestamp=self.timestamp,
                conditions=self.conditions,
                user_index=self.user_index,
            ),
        )


class BloodPressureFeature(enum.IntFlag):
    """Blood Pressure Feature bits (GSS Blood Pressure Feature; bits 6-8 added by BLS v1.1)."""

    BODY_MOVEMENT_DETECTION = 1 << 0
    CUFF_FIT_DETECTION = 1 << 1
    IRREGULAR_PULSE_DETECTION = 1 << 2
    PULSE_RATE_RANGE_DETECTION = 1 << 3
    MEASUREMENT_POSITION_DETECTION = 1 << 4
    MULTIPLE_BONDS = 1 << 5
    E2E_CRC = 1 << 6
    USER_DATA_SERVICE = 1 << 7
    USER_FACING_TIME = 1 << 8


@register
@dataclass(frozen=True, slots=True)
class BloodPressureFeatureValue:
    """Blood Pressure Feature 0x2A49: u16; reserved bits are kept, not rejected."""

    features: BloodPressureFeature

    UUID: ClassVar[int] = 0x2A49
    NAME: ClassVar[str] = "Blood Pressure Feature"

    def __post_init__(self) -> None:
        check_range("blood pressure feature", int(self.features), 0, U16_MAX)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        features = BloodPressureFeature(r.u16("features"))
        r.end()
        return cls(features)

    def __bytes__(self) -> bytes:
        return U16.pack(self.features)
