"""Pulse Oximeter service 0x1822 (Bluetooth SIG Pulse Oximeter Service v1.0, PLXS §3).

PLX Spot-Check Measurement 0x2A5E (indicate), PLX Continuous Measurement 0x2A5F (notify) and PLX
Features 0x2A60 (read). Field layouts: GATT Specification Supplement (GSS), characteristics "PLX
Spot-Check Measurement", "PLX Continuous Measurement" and "PLX Features".

The Fast and Slow SpO2/PR pairs of the continuous measurement are the same quantities averaged over
a shorter or longer time; IEEE 11073-10404 tells them apart by a Supplemental-Types code
(MDC_MODALITY_FAST / _SLOW), and a spot check is MDC_MODALITY_SPOT, as in the HL7 PHD IG examples.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Final, Self

from gateway.ieee11073 import mdc
from gateway.ieee11073._buffer import U8, U16, Reader, check_range
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.measurement import Condition, Measurement, MeasurementStatus
from gateway.ieee11073.numbers import SFloat
from gateway.ieee11073.registry import register

SERVICE_UUID = 0x1822

# IEEE 11073-10101 codes, partition 2 (SCADA) << 16 | term code. Term codes as published in the
# 10101 nomenclature tables used by 11073-10404 (pulse oximeter); MDC_MODALITY_SPOT 150588 also
# appears in the HL7 PHD IG examples (numeric-spotnumeric.json).
MDC_PULS_OXIM_PERF_REL: Final = 150448  # term 19376: relative perfusion, the Pulse Amplitude Index
MDC_MODALITY_FAST: Final = 150580  # term 19508
MDC_MODALITY_SLOW: Final = 150584  # term 19512
MDC_MODALITY_SPOT: Final = 150588  # term 19516

U16_MAX, U24_MAX = 0xFFFF, 0xFFFFFF
FLAGS_RFU_MASK = 0xE0  # GSS: Flags bits 5-7 of both measurements are reserved for future use
U24_SIZE = 3


class PlxMeasurementStatus(enum.IntFlag):
    """Measurement Status field, u16 (GSS PLX Spot-Check Measurement); bits 0-4 reserved."""

    MEASUREMENT_ONGOING = 1 << 5
    EARLY_ESTIMATED_DATA = 1 << 6
    VALIDATED_DATA = 1 << 7
    FULLY_QUALIFIED_DATA = 1 << 8
    DATA_FROM_MEASUREMENT_STORAGE = 1 << 9
    DATA_FOR_DEMONSTRATION = 1 << 10
    DATA_FOR_TESTING = 1 << 11
    CALIBRATION_ONGOING = 1 << 12
    MEASUREMENT_UNAVAILABLE = 1 << 13
    QUESTIONABLE_MEASUREMENT_DETECTED = 1 << 14
    INVALID_MEASUREMENT_DETECTED = 1 << 15


_STATUS_MAP: Final = (
    (PlxMeasurementStatus.MEASUREMENT_ONGOING, MeasurementStatus.ONGOING),
    (PlxMeasurementStatus.EARLY_ESTIMATED_DATA, MeasurementStatus.EARLY_INDICATION),
    (PlxMeasurementStatus.VALIDATED_DATA, MeasurementStatus.VALIDATED),
    (PlxMeasurementStatus.FULLY_QUALIFIED_DATA, MeasurementStatus.FULLY_QUALIFIED),
    (PlxMeasurementStatus.DATA_FROM_MEASUREMENT_STORAGE, MeasurementStatus.FROM_STORAGE),
    (PlxMeasurementStatus.DATA_FOR_DEMONSTRATION, MeasurementStatus.DEMO_DATA),
    (PlxMeasurementStatus.DATA_FOR_TESTING, MeasurementStatus.TEST_DATA),
    (PlxMeasurementStatus.CALIBRATION_ONGOING, MeasurementStatus.CALIBRATION_ONGOING),
    (PlxMeasurementStatus.MEASUREMENT_UNAVAILABLE, MeasurementStatus.NOT_AVAILABLE),
    (PlxMeasurementStatus.QUESTIONABLE_MEASUREMENT_DETECTED, MeasurementStatus.QUESTIONABLE),
    (PlxMeasurementStatus.INVALID_MEASUREMENT_DETECTED, MeasurementStatus.INVALID),
)


class PlxDeviceSensorStatus(enum.IntFlag):
    """Device and Sensor Status field, u24 (GSS PLX Spot-Check Measurement); bits 16-23 reserved."""

    EXTENDED_DISPLAY_UPDATE_ONGOING = 1 << 0
    EQUIPMENT_MALFUNCTION_DETECTED = 1 << 1
    SIGNAL_PROCESSING_IRREGULARITY_DETECTED = 1 << 2
    INADEQUATE_SIGNAL_DETECTED = 1 << 3
    POOR_SIGNAL_DETECTED = 1 << 4
    LOW_PERFUSION_DETECTED = 1 << 5
    ERRATIC_SIGNAL_DETECTED = 1 << 6
    NONPULSATILE_SIGNAL_DETECTED = 1 << 7
    QUESTIONABLE_PULSE_DETECTED = 1 << 8
    SIGNAL_ANALYSIS_ONGOING = 1 << 9
    SENSOR_INTERFERENCE_DETECTED = 1 << 10
    SENSOR_UNCONNECTED_TO_USER = 1 << 11
    UNKNOWN_SENSOR_CONNECTED = 1 << 12
    SENSOR_DISPLACED = 1 << 13
    SENSOR_MALFUNCTIONING = 1 << 14
    SENSOR_DISCONNECTED = 1 << 15


def _status(status: PlxMeasurementStatus | None) -> MeasurementStatus:
    out = MeasurementStatus(0)
    if status is not None:
        for bit, mapped in _STATUS_MAP:
            if bit in status:
                out |= mapped
    return out


def _check(
    status: PlxMeasurementStatus | None,
    device_status: PlxDeviceSensorStatus | None,
    rfu_flags: int,
) -> None:
    if status is not None:
        check_range("measurement status", int(status), 0, U16_MAX)
    if device_status is not None:
        check_range("device and sensor status", int(device_status), 0, U24_MAX)
    if rfu_flags & ~FLAGS_RFU_MASK:
        raise ValueError(
            f"rfu_flags 0x{rfu_flags:02X} outside the reserved bits 0x{FLAGS_RFU_MASK:02X}"
        )


def _read_status(r: Reader, present: bool) -> PlxMeasurementStatus | None:
    return PlxMeasurementStatus(r.u16("Measurement Status")) if present else None


def _read_device_status(r: Reader, present: bool) -> PlxDeviceSensorStatus | None:
    return PlxDeviceSensorStatus(r.u24("Device and Sensor Status")) if present else None


def _write_tail(
    status: PlxMeasurementStatus | None,
    device_status: PlxDeviceSensorStatus | None,
    pulse_amplitude_index: SFloat | None,
) -> bytes:
    out = bytearray()
    if status is not None:
        out += U16.pack(status)
    if device_status is not None:
        out += int(device_status).to_bytes(U24_SIZE, "little")
    if pulse_amplitude_index is not None:
        out += bytes(pulse_amplitude_index)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class _Context:
    """What every measurement of one characteristic value shares."""

    timestamp: DateTime | None
    status: MeasurementStatus
    conditions: frozenset[Condition]

    def oximetry(
        self, spo2: SFloat, pulse_rate: SFloat, supplemental: tuple[int, ...]
    ) -> tuple[Measurement, Measurement]:
        return (
            self.measurement(mdc.MDC_PULS_OXIM_SAT_O2, spo2, mdc.MDC_DIM_PERCENT, supplemental),
            self.measurement(
                mdc.MDC_PULS_OXIM_PULS_RATE, pulse_rate, mdc.MDC_DIM_BEAT_PER_MIN, supplemental
            ),
        )

    def measurement(
        self, code: int, value: SFloat, unit_code: int, supplemental: tuple[int, ...] = ()
    ) -> Measurement:
        return Measurement(
            code,
            value,
            unit_code,
            timestamp=self.timestamp,
            status=self.status,
            conditions=self.conditions,
            supplemental=supplemental,
        )

    def pulse_amplitude_index(self, value: SFloat | None) -> tuple[Measurement, ...]:
        if value is None:
            return ()
        return (self.measurement(MDC_PULS_OXIM_PERF_REL, value, mdc.MDC_DIM_PERCENT),)


class SpotCheckFlags(enum.IntFlag):
    """PLX Spot-Check Measurement Flags (GSS, Flags field)."""

    TIMESTAMP_PRESENT = 0x01
    MEASUREMENT_STATUS_PRESENT = 0x02
    DEVICE_SENSOR_STATUS_PRESENT = 0x04
    PULSE_AMPLITUDE_INDEX_PRESENT = 0x08
    DEVICE_CLOCK_NOT_SET = 0x10


@register
@dataclass(frozen=True, slots=True)
class PlxSpotCheckMeasurement:
    """PLX Spot-Check Measurement 0x2A5E.

    Flags follow from which fields are present, except ``device_clock_not_set`` (flags bit 4) and
    ``rfu_flags`` (reserved bits 5-7 as received, kept so that ``__bytes__`` is exact).
    """

    spo2: SFloat
    pulse_rate: SFloat
    timestamp: DateTime | None = None
    measurement_status: PlxMeasurementStatus | None = None
    device_sensor_status: PlxDeviceSensorStatus | None = None
    pulse_amplitude_index: SFloat | None = None
    device_clock_not_set: bool = False
    rfu_flags: int = 0

    UUID: ClassVar[int] = 0x2A5E
    NAME: ClassVar[str] = "PLX Spot-Check Measurement"

    def __post_init__(self) -> None:
        _check(self.measurement_status, self.device_sensor_status, self.rfu_flags)

    @property
    def flags(self) -> SpotCheckFlags:
        flags = SpotCheckFlags(self.rfu_flags)
        if self.timestamp is not None:
            flags |= SpotCheckFlags.TIMESTAMP_PRESENT
        if self.measurement_status is not None:
            flags |= SpotCheckFlags.MEASUREMENT_STATUS_PRESENT
        if self.device_sensor_status is not None:
            flags |= SpotCheckFlags.DEVICE_SENSOR_STATUS_PRESENT
        if self.pulse_amplitude_index is not None:
            flags |= SpotCheckFlags.PULSE_AMPLITUDE_INDEX_PRESENT
        if self.device_clock_not_set:
            flags |= SpotCheckFlags.DEVICE_CLOCK_NOT_SET
        return flags

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        raw_flags = r.u8("flags")
        flags = SpotCheckFlags(raw_flags & ~FLAGS_RFU_MASK)
        spo2 = r.sfloat("SpO2")
        pulse_rate = r.sfloat("PR")
        timestamp = DateTime.read(r) if SpotCheckFlags.TIMESTAMP_PRESENT in flags else None
        status = _read_status(r, SpotCheckFlags.MEASUREMENT_STATUS_PRESENT in flags)
        device_status = _read_device_status(r, SpotCheckFlags.DEVICE_SENSOR_STATUS_PRESENT in flags)
        pai = (
            r.sfloat("Pulse Amplitude Index")
            if SpotCheckFlags.PULSE_AMPLITUDE_INDEX_PRESENT in flags
            else None
        )
        r.end()
        return cls(
            spo2,
            pulse_rate,
            timestamp,
            status,
            device_status,
            pai,
            SpotCheckFlags.DEVICE_CLOCK_NOT_SET in flags,
            raw_flags & FLAGS_RFU_MASK,
        )

    def __bytes__(self) -> bytes:
        out = bytearray(U8.pack(self.flags))
        out += bytes(self.spo2) + bytes(self.pulse_rate)
        if self.timestamp is not None:
            out += bytes(self.timestamp)
        out += _write_tail(
            self.measurement_status, self.device_sensor_status, self.pulse_amplitude_index
        )
        return bytes(out)

    def measurements(self) -> tuple[Measurement, ...]:
        """SpO2 and pulse rate (supplemental MDC_MODALITY_SPOT), then the PAI when sent."""
        context = _Context(
            self.timestamp,
            _status(self.measurement_status),
            frozenset({Condition.DEVICE_CLOCK_NOT_SET})
            if self.device_clock_not_set
            else frozenset(),
        )
        return (
            *context.oximetry(self.spo2, self.pulse_rate, (MDC_MODALITY_SPOT,)),
            *context.pulse_amplitude_index(self.pulse_amplitude_index),
        )


class ContinuousFlags(enum.IntFlag):
    """PLX Continuous Measurement Flags (GSS, Flags field)."""

    SPO2PR_FAST_PRESENT = 0x01
    SPO2PR_SLOW_PRESENT = 0x02
    MEASUREMENT_STATUS_PRESENT = 0x04
    DEVICE_SENSOR_STATUS_PRESENT = 0x08
    PULSE_AMPLITUDE_INDEX_PRESENT = 0x10


@dataclass(frozen=True, slots=True)
class SpO2PulseRate:
    """One SpO2PR pair of the continuous measurement: SpO2 in %, pulse rate in /min."""

    spo2: SFloat
    pulse_rate: SFloat

    @classmethod
    def read(cls, r: Reader, which: str) -> Self:
        return cls(r.sfloat(f"SpO2PR-{which} SpO2"), r.sfloat(f"SpO2PR-{which} PR"))

    def __bytes__(self) -> bytes:
        return bytes(self.spo2) + bytes(self.pulse_rate)


@register
@dataclass(frozen=True, slots=True)
class PlxContinuousMeasurement:
    """PLX Continuous Measurement 0x2A5F: the normal SpO2PR pair, optional fast and slow pairs.

    Flags follow from which fields are present; ``rfu_flags`` keeps reserved bits 5-7 as received.
    """

    spo2: SFloat
    pulse_rate: SFloat
    fast: SpO2PulseRate | None = None
    slow: SpO2PulseRate | None = None
    measurement_status: PlxMeasurementStatus | None = None
    device_sensor_status: PlxDeviceSensorStatus | None = None
    pulse_amplitude_index: SFloat | None = None
    rfu_flags: int = 0

    UUID: ClassVar[int] = 0x2A5F
    NAME: ClassVar[str] = "PLX Continuous Measurement"

    def __post_init__(self) -> None:
        _check(self.measurement_status, self.device_sensor_status, self.rfu_flags)

    @property
    def flags(self) -> ContinuousFlags:
        flags = ContinuousFlags(self.rfu_flags)
        if self.fast is not None:
            flags |= ContinuousFlags.SPO2PR_FAST_PRESENT
        if self.slow is not None:
            flags |= ContinuousFlags.SPO2PR_SLOW_PRESENT
        if self.measurement_status is not None:
            flags |= ContinuousFlags.MEASUREMENT_STATUS_PRESENT
        if self.device_sensor_status is not None:
            flags |= ContinuousFlags.DEVICE_SENSOR_STATUS_PRESENT
        if self.pulse_amplitude_index is not None:
            flags |= ContinuousFlags.PULSE_AMPLITUDE_INDEX_PRESENT
        return flags

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        raw_flags = r.u8("flags")
        flags = ContinuousFlags(raw_flags & ~FLAGS_RFU_MASK)
        spo2 = r.sfloat("SpO2PR-Normal SpO2")
        pulse_rate = r.sfloat("SpO2PR-Normal PR")
        fast = (
            SpO2PulseRate.read(r, "Fast") if ContinuousFlags.SPO2PR_FAST_PRESENT in flags else None
        )
        slow = (
            SpO2PulseRate.read(r, "Slow") if ContinuousFlags.SPO2PR_SLOW_PRESENT in flags else None
        )
        status = _read_status(r, ContinuousFlags.MEASUREMENT_STATUS_PRESENT in flags)
        device_status = _read_device_status(
            r, ContinuousFlags.DEVICE_SENSOR_STATUS_PRESENT in flags
        )
        pai = (
            r.sfloat("Pulse Amplitude Index")
            if ContinuousFlags.PULSE_AMPLITUDE_INDEX_PRESENT in flags
            else None
        )
        r.end()
        return cls(
            spo2,
            pulse_rate,
            fast,
            slow,
            status,
            device_status,
            pai,
            raw_flags & FLAGS_RFU_MASK,
        )

    def __bytes__(self) -> bytes:
        out = bytearray(U8.pack(self.flags))
        out += bytes(self.spo2) + bytes(self.pulse_rate)
        for pair in (self.fast, self.slow):
            if pair is not None:
                out += bytes(pair)
        out += _write_tail(
            self.measurement_status, self.device_sensor_status, self.pulse_amplitude_index
        )
        return bytes(out)

    def measurements(self) -> tuple[Measurement, ...]:
        """Normal SpO2 and PR; fast and slow pairs with their modality; then the PAI when sent."""
        context = _Context(None, _status(self.measurement_status), frozenset())
        out = list(context.oximetry(self.spo2, self.pulse_rate, ()))
        for pair, modality in ((self.fast, MDC_MODALITY_FAST), (self.slow, MDC_MODALITY_SLOW)):
            if pair is not None:
                out.extend(context.oximetry(pair.spo2, pair.pulse_rate, (modality,)))
        out.extend(context.pulse_amplitude_index(self.pulse_amplitude_index))
        return tuple(out)


class PlxSupportedFeatures(enum.IntFlag):
    """PLX Features, Supported Features field, u16 (GSS PLX Features); bits 8-15 reserved."""

    MEASUREMENT_STATUS_SUPPORT_PRESENT = 1 << 0
    DEVICE_SENSOR_STATUS_SUPPORT_PRESENT = 1 << 1
    SPOT_CHECK_MEASUREMENT_STORAGE = 1 << 2
    SPOT_CHECK_TIMESTAMP = 1 << 3
    SPO2PR_FAST = 1 << 4
    SPO2PR_SLOW = 1 << 5
    PULSE_AMPLITUDE_INDEX = 1 << 6
    MULTIPLE_BONDS = 1 << 7


@register
@dataclass(frozen=True, slots=True)
class PlxFeatures:
    """PLX Features 0x2A60: supported features, then which status bits the sensor can report.

    ``supported`` is the field as sent; its bits 0 and 1 say whether the Measurement Status
    Support (u16) and Device and Sensor Status Support (u24) fields follow, so they must agree
    with ``measurement_status_support`` and ``device_sensor_status_support`` being set.
    """

    supported: PlxSupportedFeatures
    measurement_status_support: PlxMeasurementStatus | None = None
    device_sensor_status_support: PlxDeviceSensorStatus | None = None

    UUID: ClassVar[int] = 0x2A60
    NAME: ClassVar[str] = "PLX Features"

    def __post_init__(self) -> None:
        check_range("supported features", int(self.supported), 0, U16_MAX)
        _check(self.measurement_status_support, self.device_sensor_status_support, 0)
        for bit, value in (
            (
                PlxSupportedFeatures.MEASUREMENT_STATUS_SUPPORT_PRESENT,
                self.measurement_status_support,
            ),
            (
                PlxSupportedFeatures.DEVICE_SENSOR_STATUS_SUPPORT_PRESENT,
                self.device_sensor_status_support,
            ),
        ):
            if (bit in self.supported) != (value is not None):
                raise ValueError(f"supported feature {bit.name} disagrees with its field")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        supported = PlxSupportedFeatures(r.u16("Supported Features"))
        status = (
            PlxMeasurementStatus(r.u16("Measurement Status Support"))
            if PlxSupportedFeatures.MEASUREMENT_STATUS_SUPPORT_PRESENT in supported
            else None
        )
        device_status = (
            PlxDeviceSensorStatus(r.u24("Device and Sensor Status Support"))
            if PlxSupportedFeatures.DEVICE_SENSOR_STATUS_SUPPORT_PRESENT in supported
            else None
        )
        r.end()
        return cls(supported, status, device_status)

    def __bytes__(self) -> bytes:
        return U16.pack(self.supported) + _write_tail(
            self.measurement_status_support, self.device_sensor_status_support, None
        )
