"""Health Thermometer service 0x1809 (Bluetooth SIG Health Thermometer Service v1.0, HTS §3).

Temperature Measurement 0x2A1C (indicate), Temperature Type 0x2A1D (read) and Intermediate
Temperature 0x2A1E (notify, same layout as Temperature Measurement). Field layouts: GATT
Specification Supplement (GSS), characteristics "Temperature Measurement" and "Temperature Type".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Final, Self

from gateway.ieee11073 import mdc
from gateway.ieee11073._buffer import U8, Reader, check_range
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.measurement import Measurement
from gateway.ieee11073.numbers import Float
from gateway.ieee11073.registry import register

SERVICE_UUID = 0x1809
U8_MAX = 0xFF
FLAGS_RFU_MASK = 0xF8  # GSS Temperature Measurement: Flags bits 3-7 reserved for future use


class TemperatureFlags(enum.IntFlag):
    """Temperature Measurement Flags (GSS, Flags field)."""

    UNITS_FAHRENHEIT = 0x01  # bit 0: 0 Celsius, 1 Fahrenheit
    TIME_STAMP_PRESENT = 0x02
    TEMPERATURE_TYPE_PRESENT = 0x04


class TemperatureUnit(enum.IntEnum):
    """Flags bit 0: the unit of the temperature value."""

    CELSIUS = 0
    FAHRENHEIT = 1


TEMPERATURE_UNIT_CODES: Final = {
    TemperatureUnit.CELSIUS: mdc.MDC_DIM_DEGC,
    TemperatureUnit.FAHRENHEIT: mdc.MDC_DIM_FAHR,
}


class TemperatureType(enum.IntEnum):
    """Temperature Type values (GSS Temperature Type; 0 and 10-255 reserved)."""

    ARMPIT = 1
    BODY = 2  # "Body (general)"
    EAR = 3  # "usually ear lobe"
    FINGER = 4
    GI_TRACT = 5  # "Gastro-intestinal Tract"
    MOUTH = 6
    RECTUM = 7
    TOE = 8
    TYMPANUM = 9  # "ear drum"


# Measurement.body_site keys; the FHIR code table maps them to SNOMED CT body sites.
BODY_SITES: Final = {
    TemperatureType.ARMPIT: "armpit",
    TemperatureType.BODY: "body",
    TemperatureType.EAR: "ear",
    TemperatureType.FINGER: "finger",
    TemperatureType.GI_TRACT: "gi-tract",
    TemperatureType.MOUTH: "mouth",
    TemperatureType.RECTUM: "rectum",
    TemperatureType.TOE: "toe",
    TemperatureType.TYMPANUM: "tympanum",
}


def _temperature_type(raw: int) -> TemperatureType | int:
    try:
        return TemperatureType(raw)
    except ValueError:
        return raw  # reserved for future use: keep, do not fail


@dataclass(frozen=True, slots=True)
class _TemperatureLayout:
    """The Temperature Measurement layout, shared by Intermediate Temperature.

    ``rfu_flags`` keeps the reserved Flags bits 3-7 as the sensor sent them, so that ``__bytes__``
    is the exact inverse of ``from_bytes``; the other flags follow from the fields.
    """

    temperature: Float
    unit: TemperatureUnit = TemperatureUnit.CELSIUS
    timestamp: DateTime | None = None
    temperature_type: TemperatureType | int | None = None
    rfu_flags: int = 0

    UUID: ClassVar[int]
    NAME: ClassVar[str]

    def __post_init__(self) -> None:
        if self.temperature_type is not None:
            check_range("temperature type", int(self.temperature_type), 0, U8_MAX)
        if self.rfu_flags & ~FLAGS_RFU_MASK:
            raise ValueError(
                f"rfu_flags 0x{self.rfu_flags:02X} outside the reserved bits 0x{FLAGS_RFU_MASK:02X}"
            )

    @property
    def flags(self) -> TemperatureFlags:
        flags = TemperatureFlags(self.rfu_flags)
        if self.unit is TemperatureUnit.FAHRENHEIT:
            flags |= TemperatureFlags.UNITS_FAHRENHEIT
        if self.timestamp is not None:
            flags |= TemperatureFlags.TIME_STAMP_PRESENT
        if self.temperature_type is not None:
            flags |= TemperatureFlags.TEMPERATURE_TYPE_PRESENT
        return flags

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        raw_flags = r.u8("flags")
        flags = TemperatureFlags(raw_flags & ~FLAGS_RFU_MASK)
        temperature = r.float32("Temperature Measurement Value")
        unit = (
            TemperatureUnit.FAHRENHEIT
            if TemperatureFlags.UNITS_FAHRENHEIT in flags
            else TemperatureUnit.CELSIUS
        )
        timestamp = DateTime.read(r) if TemperatureFlags.TIME_STAMP_PRESENT in flags else None
        temperature_type = (
            _temperature_type(r.u8("Temperature Type"))
            if TemperatureFlags.TEMPERATURE_TYPE_PRESENT in flags
            else None
        )
        r.end()
        return cls(temperature, unit, timestamp, temperature_type, raw_flags & FLAGS_RFU_MASK)

    def __bytes__(self) -> bytes:
        out = bytearray(U8.pack(self.flags))
        out += bytes(self.temperature)
        if self.timestamp is not None:
            out += bytes(self.timestamp)
        if self.temperature_type is not None:
            out += U8.pack(int(self.temperature_type))
        return bytes(out)

    def measurements(self) -> tuple[Measurement, ...]:
        """One body temperature (MDC_TEMP_BODY) with the body site the temperature type names."""
        kind = (
            None if self.temperature_type is None else _temperature_type(int(self.temperature_type))
        )
        body_site = BODY_SITES[kind] if isinstance(kind, TemperatureType) else None
        return (
            Measurement(
                mdc.MDC_TEMP_BODY,
                self.temperature,
                TEMPERATURE_UNIT_CODES[self.unit],
                timestamp=self.timestamp,
                body_site=body_site,
            ),
        )


@register
@dataclass(frozen=True, slots=True)
class TemperatureMeasurement(_TemperatureLayout):
    """Temperature Measurement 0x2A1C: the final reading (indicated)."""

    UUID: ClassVar[int] = 0x2A1C
    NAME: ClassVar[str] = "Temperature Measurement"


@register
@dataclass(frozen=True, slots=True)
class IntermediateTemperature(_TemperatureLayout):
    """Intermediate Temperature 0x2A1E: readings while the measurement settles (notified)."""

    UUID: ClassVar[int] = 0x2A1E
    NAME: ClassVar[str] = "Intermediate Temperature"


@register
@dataclass(frozen=True, slots=True)
class TemperatureTypeValue:
    """Temperature Type 0x2A1D: one byte; reserved values are kept as integers."""

    temperature_type: TemperatureType | int

    UUID: ClassVar[int] = 0x2A1D
    NAME: ClassVar[str] = "Temperature Type"

    def __post_init__(self) -> None:
        check_range("temperature type", int(self.temperature_type), 0, U8_MAX)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        raw = r.u8("temperature type")
        r.end()
        return cls(_temperature_type(raw))

    def __bytes__(self) -> bytes:
        return U8.pack(int(self.temperature_type))
