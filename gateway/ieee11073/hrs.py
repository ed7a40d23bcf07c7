"""Heart Rate service 0x180D (Bluetooth SIG Heart Rate Service v1.0, HRS §3).

Heart Rate Measurement 0x2A37 (notify), Body Sensor Location 0x2A38 (read), Heart Rate Control
Point 0x2A39 (write).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Self

from gateway.ieee11073 import mdc
from gateway.ieee11073._buffer import U8, U16, Reader, check_range
from gateway.ieee11073.measurement import Condition, Measurement
from gateway.ieee11073.numbers import Float
from gateway.ieee11073.registry import register

SERVICE_UUID = 0x180D
RR_RESOLUTION_S = Decimal(1) / Decimal(1024)  # HRS §3.1.1.5: RR-Interval in 1/1024 s
RR_MS_QUANTUM = Decimal("0.1")
U8_MAX, U16_MAX = 0xFF, 0xFFFF


class HeartRateFlags(enum.IntFlag):
    """Heart Rate Measurement flags (HRS §3.1.1.1)."""

    VALUE_FORMAT_UINT16 = 0x01
    SENSOR_CONTACT_DETECTED = 0x02  # bit 1, meaningful only with SUPPORTED
    SENSOR_CONTACT_SUPPORTED = 0x04  # bit 2
    ENERGY_EXPENDED_PRESENT = 0x08
    RR_INTERVAL_PRESENT = 0x10


RESERVED_FLAGS_MASK = 0xE0  # HRS §3.1.1.1: bits 5-7 reserved for future use; kept, not acted on


class SensorContact(enum.Enum):
    """Sensor Contact Status bits 1-2 (HRS §3.1.1.1): 0/1 not supported, 2 not detected, 3
    detected."""

    NOT_SUPPORTED = 0
    NOT_DETECTED = 2
    DETECTED = 3


class BodySensorLocation(enum.IntEnum):
    """Body Sensor Location 0x2A38 values (HRS §3.2)."""

    OTHER = 0
    CHEST = 1
    WRIST = 2
    FINGER = 3
    HAND = 4
    EAR_LOBE = 5
    FOOT = 6


@register
@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    """Heart Rate Measurement 0x2A37.

    ``uint16`` chooses the heart rate's width on the wire (flags bit 0);
    ``contact_not_supported_bit`` keeps which of the two "not supported" encodings (0 or 1) the
    sensor used and ``reserved_flags`` the RFU bits, so that ``__bytes__`` is the exact inverse of
    ``from_bytes``.
    """

    heart_rate: int
    sensor_contact: SensorContact = SensorContact.NOT_SUPPORTED
    energy_expended_kj: int | None = None
    rr_intervals: tuple[int, ...] | None = None  # in 1/1024 s
    uint16: bool = False
    contact_not_supported_bit: bool = False
    reserved_flags: int = 0

    UUID: ClassVar[int] = 0x2A37
    NAME: ClassVar[str] = "Heart Rate Measurement"

    def __post_init__(self) -> None:
        check_range("heart rate", self.heart_rate, 0, U16_MAX if self.uint16 else U8_MAX)
        if self.energy_expended_kj is not None:
            check_range("energy expended", self.energy_expended_kj, 0, U16_MAX)
        for rr in self.rr_intervals or ():
            check_range("RR interval", rr, 0, U16_MAX)
        if (
            self.contact_not_supported_bit
            and self.sensor_contact is not SensorContact.NOT_SUPPORTED
        ):
            raise ValueError("contact_not_supported_bit only applies when contact is not supported")
        if self.reserved_flags & ~RESERVED_FLAGS_MASK:
            raise ValueError(f"reserved_flags 0x{self.reserved_flags:02X} outside mask 0xE0")

    @property
    def flags(self) -> HeartRateFlags:
        flags = HeartRateFlags(self.reserved_flags)
        if self.uint16:
            flags |= HeartRateFlags.VALUE_FORMAT_UINT16
        if self.sensor_contact is SensorContact.NOT_SUPPORTED:
            if self.contact_not_supported_bit:
                flags |= HeartRateFlags.SENSOR_CONTACT_DETECTED
        else:
            flags |= HeartRateFlags.SENSOR_CONTACT_SUPPORTED
            if self.sensor_contact is SensorContact.DETECTED:
                flags |= HeartRateFlags.SENSOR_CONTACT_DETECTED
        if self.energy_expended_kj is not None:
            flags |= HeartRateFlags.ENERGY_EXPENDED_PRESENT
        if self.rr_intervals is not None:
            flags |= HeartRateFlags.RR_INTERVAL_PRESENT
        return flags

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        raw_flags = r.u8("flags")
        flags = HeartRateFlags(raw_flags)
        uint16 = HeartRateFlags.VALUE_FORMAT_UINT16 in flags
        heart_rate = r.u16("heart rate (uint16)") if uint16 else r.u8("heart rate (uint8)")
        if HeartRateFlags.SENSOR_CONTACT_SUPPORTED in flags:
            contact = (
                SensorContact.DETECTED
                if HeartRateFlags.SENSOR_CONTACT_DETECTED in flags
                else SensorContact.NOT_DETECTED
            )
            not_supported_bit = False
        else:
            contact = SensorContact.NOT_SUPPORTED
            not_supported_bit = HeartRateFlags.SENSOR_CONTACT_DETECTED in flags
        energy = (
            r.u16("energy expended") if HeartRateFlags.ENERGY_EXPENDED_PRESENT in flags else None
        )
        rr: tuple[int, ...] | None = None
        if HeartRateFlags.RR_INTERVAL_PRESENT in flags:
            if r.remaining == 0 or r.remaining % U16.size:
                raise r.error(f"one or more 2-byte RR intervals, found {r.remaining} byte(s)")
            rr = tuple(r.u16("RR interval") for _ in range(r.remaining // U16.size))
        r.end()
        return cls(
            heart_rate,
            contact,
            energy,
            rr,
            uint16,
            not_supported_bit,
            raw_flags & RESERVED_FLAGS_MASK,
        )

    def __bytes__(self) -> bytes:
        out = bytearray(U8.pack(self.flags))
        out += U16.pack(self.heart_rate) if self.uint16 else U8.pack(self.heart_rate)
        if self.energy_expended_kj is not None:
            out += U16.pack(self.energy_expended_kj)
        for rr in self.rr_intervals or ():
            out += U16.pack(rr)
        return bytes(out)

    def measurements(self) -> tuple[Measurement, ...]:
        conditions = (
            frozenset({Condition.SENSOR_CONTACT_NOT_DETECTED})
            if self.sensor_contact is SensorContact.NOT_DETECTED
            else frozenset()
        )
        out = [
            Measurement(
                mdc.MDC_ECG_HEART_RATE,
                Float(self.heart_rate, 0),
                mdc.MDC_DIM_BEAT_PER_MIN,
                conditions=conditions,
            )
        ]
        # RR in 1/1024 s → ms, kept to 0.1 ms: finer than the 0.98 ms the sensor resolves.
        out.extend(
            Measurement(
                mdc.MDC_ECG_TIME_PD_RR_GL,
                Float.from_decimal((rr * 1000 * RR_RESOLUTION_S).quantize(RR_MS_QUANTUM)),
                mdc.MDC_DIM_MILLI_SEC,
            )
            for rr in self.rr_intervals or ()
        )
        return tuple(out)


@register
@dataclass(frozen=True, slots=True)
class BodySensorLocationValue:
    """Body Sensor Location 0x2A38: one byte; unknown values are kept as integers."""

    location: BodySensorLocation | int

    UUID: ClassVar[int] = 0x2A38
    NAME: ClassVar[str] = "Body Sensor Location"

    def __post_init__(self) -> None:
        check_range("body sensor location", int(self.location), 0, U8_MAX)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        raw = r.u8("location")
        r.end()
        try:
            return cls(BodySensorLocation(raw))
        except ValueError:
            return cls(raw)  # reserved for future use: keep, do not fail

    def __bytes__(self) -> bytes:
        return U8.pack(int(self.location))
