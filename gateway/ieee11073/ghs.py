"""Generic Health Sensor service 0x1840 (Bluetooth SIG GHSS v1.0, adopted 2023-06-13).

Live Health Observations 0x2B8B and Stored Health Observations 0x2BDD (notify/indicate, segmented),
Health Sensor Features 0x2BF3 (read) and GHS Control Point 0x2BF4 (write + indicate). Observations
are the IEEE 11073-10206 ACOM objects as GHSS encodes them.

Sources, and which one each field follows
=========================================

Only the title page of the GHSS v1.0 text (bluetooth.com GHSS/out/en/index-en.html) could be read
with the tools here; its field tables could not. The layout follows open implementations instead:

- [ST] STMicroelectronics GHS sensor firmware, 2024, whose example objects are annotated field by
  field and fed to the SIG's qualification tester (``GHS_APP_PTS_TestDBInit``):
  stm32-hotspot/STM32WBA-BLE-GenericHealthSensor @cedc31b
  Projects/NUCLEO-WBA55CG/Applications/BLE/BLE_GenericHealthSensor/STM32_WPAN/App/ghs_app.c
  (NumericOxygenSaturation, SimpleDiscreteObservation, StringObservation, SampleArrayObservation,
  TLVEncodedObservation, CompoundObservationBloodPressure, CompoundDiscreteBloodPressureStatus,
  CompoundDiscreteEvent, ObservationBundle; ``GHS_APP_UpdateStoredHealthObservation``,
  ``ghsapp_send_segment``), ghs_cp.c, ghs_racp.c; and STMicroelectronics/STM32CubeWBA
  Projects/NUCLEO-WBA25CE/Applications/BLE/BLE_GenericHealth_PulseOximeter/STM32_WPAN/App.
- [SIM] philips-labs/BLE-GHS-Server-Simulator @271f2aa and [CLI] philips-labs/BLE-GHS-Client-Example
  @4850963 (Philips; GHSS acknowledges E. Moll and A. Nabi of Philips as authors), 2023-07-20:
  observations/*.kt, extensions/ByteExtensions.kt (``asBLEDataSegments``, ``withLengthPrefix``),
  extensions/DateExtensions.kt, GhsObservationSendHandler.kt, GhsControlPointHandler.kt,
  GenericHealthSensorPacketHandler.kt, GhsFeaturesHandler.kt, ObservationExtensions.kt.
- [ETS] GSS "Elapsed Time" structure (GHSS time stamps), as in Zephyr
  include/zephyr/bluetooth/services/ets.h (flag bits, resolution codes, time sync sources).
- [IG] HL7 PHD IG (HL7/phd @5af8412), StructureDefinition-PhdBaseObservation-notes.md: the ACOM
  measurement status conditions in order, "the Bluetooth SIG GHS specification adds more".
- [UUID] bleak/uuids.py (Bluetooth assigned numbers): 0x2BF3 is Health Sensor Features; 0x2BF0
  (named in DESIGN/briefs) is Battery Energy Status.

Field by field (all multi-byte fields little-endian):

=================================== ============================================ ===============
field                               layout                                       source
=================================== ============================================ ===============
Segmentation Header                 u8: bit0 first, bit1 last, bits2-7 rolling   ST, SIM, CLI
                                    counter 0-63, continuing across observations
stored: Record Number               u32 before the observation, inside the        ST, SIM, CLI
                                    segmented data (so in the first segment)
Observation Class Type              u8: 1 numeric, 2 simple discrete, 3 string,   ST, SIM, CLI
                                    4 sample array, 5 compound discrete event,
                                    6 compound state/event, 7 compound,
                                    8 TLV-encoded, 0xFF bundle
Length                              u16: the bytes after the Length field (flags  ST (SIM/CLI
                                    onwards)                                     differ, below)
Observation Flags                   u16: bit0 type, 1 time stamp, 2 duration,    ST, CLI
                                    3 status, 4 object id, 5 patient id,
                                    6 supplemental, 7 derived-from, 8 has-member,
                                    9 TLVs, 10-15 reserved
Observation Type                    u32 MDC code                                  ST, SIM, CLI
Time Stamp                          9 bytes Elapsed Time: flags u8, value u48,    ST, SIM, CLI,
                                    sync source u8, TZ/DST offset s8 (15 min)     ETS
Measurement Duration                FLOAT, seconds                                CLI
Measurement Status                  u16 bits (see ObservationStatus)              CLI, IG
Object Id                           u32                                           ST, CLI
Patient Id                          u8                                            ST, SIM, CLI
Supplemental Info / Derived From /  count u8 + count × u32                        ST, SIM, CLI
Has Member
TLVs (header) / TLV-encoded value   count u8 + count × (type u32, length u16,     ST, SIM, CLI
                                    format type u8, value of that length)
numeric value                       unit u16 (partition 4 term code) + FLOAT      ST, SIM, CLI
simple discrete value               u32 MDC code                                  ST, SIM, CLI
string value                        length u16 (bytes) + UTF-8                    ST, CLI
sample array value                  unit u16, scale factor FLOAT, offset FLOAT,   ST, SIM, CLI
                                    sample period FLOAT (s), samples per period
                                    u8, bytes per sample u8, number of samples
                                    u32, samples
compound discrete event value       count u8 + count × u32                        ST, SIM, CLI
compound state/event value          n u8, supported mask n, state/event mask n,   ST, SIM, CLI
                                    value n bytes
compound value                      count u8 + count × (type u32, value class     ST, SIM, CLI
                                    u8 (1-6), value)
bundle value                        count u8 + complete observations (own class,  ST, SIM, CLI
                                    length, flags); bundle header fields apply to
                                    members that omit them
GHS Control Point                   u8: 0x01 start live, 0x02 stop; responses     ST, SIM, CLI
                                    0x80 success, 0x81 server busy, 0x82 error
                                    (live observations not configured)
Health Sensor Features              flags u8 (bit0 device specializations), count ST, SIM, CLI
                                    u8 + u32 types, [count u8 + (u16 partition-8
                                    term code, u8 version)]
=================================== ============================================ ===============

Where the sources disagree or are silent, and what this module does:

- Length: ST counts the bytes after the Length field (its SpO2 example: Length 27 for a 30-byte
  object; its qualification database stores ``sizeof(object) - 3``); SIM and CLI count the whole
  object including class and length. This module follows ST, the newer implementation that is run
  against the SIG's tester; a Philips-style object therefore decodes with a length error.
- Number of samples: ST's SampleArrayObservation example has a u32 (its Length agrees); its two
  ECG waveform examples have a single byte (one of them with a Length that fits neither). SIM and
  CLI use u32, as does this module.
- Measurement Status bits: CLI has invalid 0, questionable 1, not available 2, calibrating 4, test
  data 5, early estimate 6, threshold error 14, thresholding disabled 15 (bit 3 unnamed). The IG
  lists the ACOM conditions in the order invalid, questionable, not-available, calibrating,
  test-data, early-estimate, manually-entered, setting, threshold error, thresholding disabled.
  This module follows the IG order for bits 0-7 and CLI for bits 14-15.
- Sample signedness: no source says. Samples are decoded as unsigned integers, the IEEE 11073
  default (20601 needs an explicit marker for signed samples and GHSS has no such field; ST's ECG
  examples are unsigned values around a mid-scale code): physical value = offset + scale factor ×
  sample. :data:`SAMPLES_SIGNED` is the one switch.
- Segment counter: SIM continues the rolling counter across observations and ST increments it
  before each segment; a first segment is therefore accepted with any counter and continuation
  segments must follow it by one (mod 64).
- Observation Type is mandatory for a single observation (CLI comment quoting the spec), yet ST's
  string and sample-array examples have none. Decoding accepts that; such observations give no
  Measurement (in a bundle the bundle's type applies).
- Sample arrays must have 1-4 bytes per sample, at least 1 sample per period and a whole number of
  periods (FHIR SampledData needs that for its dimensions); SIM's default of 255 samples per
  period with 1-dimensional data would be rejected.

Mapping to :class:`Measurement`: numeric → value + unit; sample array → ``samples`` (the
:class:`SampleArray` keeps every FLOAT and sample exactly) + unit; compound → ``components`` (its
numeric and sample-array components); bundle → its members, each with the bundle's header fields
where it has none. The time stamp becomes the device's wall-clock :class:`DateTime` (UTC stamps
with the TZ/DST offset in use are shifted to local time; tick counters give no time stamp;
sub-second parts are dropped); patient id → ``user_index``; supplemental information →
``supplemental``; the status bits map through :data:`STATUS_TO_MEASUREMENT_STATUS`; stored
observations add ``FROM_STORAGE``. Measurement duration has no Measurement field yet.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final, Generic, Self, TypeVar

from gateway.errors import DecodeError
from gateway.ieee11073._buffer import U8, U16, U32, Reader, check_range
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.measurement import Measurement, MeasurementStatus, SampleArray
from gateway.ieee11073.numbers import Float
from gateway.ieee11073.registry import register

SERVICE_UUID = 0x1840
LIVE_HEALTH_OBSERVATIONS_UUID = 0x2B8B
STORED_HEALTH_OBSERVATIONS_UUID = 0x2BDD
OBSERVATION_SCHEDULE_CHANGED_UUID = 0x2BF1
HEALTH_SENSOR_FEATURES_UUID = 0x2BF3
GHS_CONTROL_POINT_UUID = 0x2BF4
ELAPSED_TIME_SERVICE_UUID = 0x183F
CURRENT_ELAPSED_TIME_UUID = 0x2BF2

U8_MAX: Final = 0xFF
U16_MAX: Final = 0xFFFF
U32_MAX: Final = 0xFFFF_FFFF
U48_MAX: Final = (1 << 48) - 1

# -- segmentation (SIM ByteExtensions.kt asBLEDataSegments, CLI GenericHealthSensorPacketHandler) --
SEGMENT_FIRST: Final = 0x01
SEGMENT_LAST: Final = 0x02
SEGMENT_COUNTER_SHIFT: Final = 2
SEGMENT_COUNTER_MODULO: Final = 64
SEGMENTATION_HEADER_SIZE: Final = 1
ATT_NOTIFICATION_OVERHEAD: Final = 3  # Core Vol 3 Part F §3.4.7.1: op code + attribute handle
ATT_MTU_MIN: Final = 23  # Core Vol 3 Part F §3.2.8: LE minimum ATT_MTU
ATT_MTU_MAX: Final = 517  # 512-byte attribute value + 5 (largest useful ATT_MTU)
RECORD_NUMBER_SIZE: Final = 4  # stored observations: u32 record number before the object
DEFAULT_MAX_OBSERVATION_SIZE: Final = 16 * 1024  # Reassembler cap; the format allows 65535

# -- ACOM object header: class u8, length u16, flags u16 ------------------------------------------
OBJECT_HEADER = struct.Struct("<BHH")
LENGTH_FIELD_OFFSET: Final = 1  # the u16 length follows the class type byte
LENGTH_COUNTS_FROM: Final = 3  # ST: Length counts the bytes after itself (flags onwards)
MIN_LENGTH: Final = U16.size  # at least the flags
MAX_LIST_ENTRIES: Final = U8_MAX  # every list in an observation has a u8 count

# -- sample arrays -------------------------------------------------------------------------------
SAMPLES_SIGNED: Final = False  # see module docstring: 11073 samples are unsigned by default
BYTES_PER_SAMPLE_MAX: Final = 4
SAMPLE_ARRAY_HEAD = struct.Struct("<HIIIBBI")  # unit, scale, offset, period, spp, bps, count
_SAMPLE_FORMAT_CODES: Final = {1: "B", 2: "H", 4: "I"}

MDC_PARTITION_SHIFT: Final = 16
MDC_PARTITION_DEVICE_SPECIALIZATION: Final = 8  # IEEE 11073-10101 partition 8 (MDC_DEV_SPEC_*)


# =================================================================================================
# Time stamp: the GSS Elapsed Time structure
# =================================================================================================


class TimeFlags(enum.IntFlag):
    """Elapsed Time flags (ETS; Zephyr ``BT_ETS_FLAG_*``); bits 6-7 reserved, kept."""

    TICK_COUNTER = 0x01  # the value counts ticks, not time of day
    UTC = 0x02  # time of day is UTC (else local time)
    RESOLUTION_BIT0 = 0x04
    RESOLUTION_BIT1 = 0x08
    TZ_DST_USED = 0x10  # the TZ/DST offset field is meaningful
    CURRENT_TIMELINE = 0x20  # stamped on the device's current timeline (clock not reset since)


RESOLUTION_MASK: Final = TimeFlags.RESOLUTION_BIT0 | TimeFlags.RESOLUTION_BIT1
RESOLUTION_SHIFT: Final = 2


class TimeResolution(enum.IntEnum):
    """Elapsed Time flags bits 2-3 (ETS; Zephyr ``bt_ets_time_resolution``)."""

    SECOND = 0
    HUNDRED_MILLISECONDS = 1
    MILLISECOND = 2
    HUNDRED_MICROSECONDS = 3


RESOLUTION_STEP: Final = {
    TimeResolution.SECOND: _dt.timedelta(seconds=1),
    TimeResolution.HUNDRED_MILLISECONDS: _dt.timedelta(milliseconds=100),
    TimeResolution.MILLISECOND: _dt.timedelta(milliseconds=1),
    TimeResolution.HUNDRED_MICROSECONDS: _dt.timedelta(microseconds=100),
}
TIME_EPOCH: Final = _dt.datetime(2000, 1, 1)  # noqa: DTZ001 - ETS epoch; a wall-clock origin
TZ_DST_UNIT: Final = _dt.timedelta(minutes=15)
TIME_VALUE_SIZE: Final = 6  # u48
S8 = struct.Struct("<b")


class TimeSource(enum.IntEnum):
    """Time Synchronization Source Type (GSS; Zephyr ``BT_ETS_TIME_SOURCE_*``)."""

    UNKNOWN = 0
    NETWORK_TIME_PROTOCOL = 1
    GPS = 2
    RADIO_TIME_SIGNAL = 3
    MANUAL = 4
    ATOMIC_CLOCK = 5
    CELLULAR_NETWORK = 6
    NOT_SYNCHRONIZED = 7


@dataclass(frozen=True, slots=True)
class ElapsedTime:
    """An observation time stamp: ``value`` units of the flags' resolution.

    For a time of day the origin is 2000-01-01 00:00:00 (UTC or local per :attr:`TimeFlags.UTC`);
    for a tick counter the origin is the device's own. ``tz_dst_offset`` is UTC offset incl. DST
    in 15-minute units.
    """

    value: int
    flags: TimeFlags = TimeFlags.CURRENT_TIMELINE
    sync_source: TimeSource | int = TimeSource.UNKNOWN
    tz_dst_offset: int = 0

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<B6sBb")
    SIZE: ClassVar[int] = 9

    def __post_init__(self) -> None:
        check_range("time value", self.value, 0, U48_MAX)
        check_range("time flags", int(self.flags), 0, U8_MAX)
        check_range("time sync source", int(self.sync_source), 0, U8_MAX)
        check_range("TZ/DST offset", self.tz_dst_offset, -128, 127)

    @classmethod
    def read(cls, reader: Reader) -> Self:
        with reader.field("time stamp"):
            flags = reader.u8("time stamp flags")
            value = int.from_bytes(reader.take(TIME_VALUE_SIZE, "time value"), "little")
            source = reader.u8("time sync source")
            (offset,) = reader.unpack(S8, "TZ/DST offset")
            return cls(value, TimeFlags(flags), _known(TimeSource, source), offset)

    def __bytes__(self) -> bytes:
        return self.STRUCT.pack(
            int(self.flags),
            self.value.to_bytes(TIME_VALUE_SIZE, "little"),
            int(self.sync_source),
            self.tz_dst_offset,
        )

    @property
    def resolution(self) -> TimeResolution:
        return TimeResolution((self.flags & RESOLUTION_MASK) >> RESOLUTION_SHIFT)

    @classmethod
    def from_datetime(
        cls,
        value: _dt.datetime,
        *,
        resolution: TimeResolution = TimeResolution.SECOND,
        utc: bool = False,
        tz_dst_offset: int | None = None,
        sync_source: TimeSource | int = TimeSource.UNKNOWN,
    ) -> Self:
        """Stamp a naive wall-clock (``utc=False``) or UTC (``utc=True``) time, rounded down."""
        flags = TimeFlags.CURRENT_TIMELINE | TimeFlags(resolution << RESOLUTION_SHIFT)
        if utc:
            flags |= TimeFlags.UTC
        if tz_dst_offset is not None:
            flags |= TimeFlags.TZ_DST_USED
        ticks = (value.replace(tzinfo=None) - TIME_EPOCH) // RESOLUTION_STEP[resolution]
        return cls(ticks, flags, sync_source, tz_dst_offset or 0)

    def to_datetime(self) -> _dt.datetime | None:
        """The device's wall-clock time (naive), or None for a tick counter / out-of-range value.

        A UTC time with the TZ/DST offset in use is shifted to local time, so the result is
        comparable with the local Date Time other services send.
        """
        if TimeFlags.TICK_COUNTER in self.flags:
            return None
        try:
            moment = TIME_EPOCH + self.value * RESOLUTION_STEP[self.resolution]
            if TimeFlags.UTC in self.flags and TimeFlags.TZ_DST_USED in self.flags:
                moment += self.tz_dst_offset * TZ_DST_UNIT
        except OverflowError:
            return None
        return moment


# =================================================================================================
# Observation header fields
# =================================================================================================


class ObservationClass(enum.IntEnum):
    """Observation Class Type (ST example comments, SIM/CLI ObservationClass)."""

    NUMERIC = 0x01
    SIMPLE_DISCRETE = 0x02
    STRING = 0x03
    SAMPLE_ARRAY = 0x04
    COMPOUND_DISCRETE_EVENT = 0x05
    COMPOUND_STATE_EVENT = 0x06
    COMPOUND = 0x07
    TLV_ENCODED = 0x08
    BUNDLE = 0xFF


class ObservationFlags(enum.IntFlag):
    """Observation Flags: which optional header fields follow, in this order (ST, CLI)."""

    TYPE_PRESENT = 1 << 0
    TIMESTAMP_PRESENT = 1 << 1
    DURATION_PRESENT = 1 << 2
    STATUS_PRESENT = 1 << 3
    OBJECT_ID_PRESENT = 1 << 4
    PATIENT_ID_PRESENT = 1 << 5
    SUPPLEMENTAL_INFORMATION_PRESENT = 1 << 6
    DERIVED_FROM_PRESENT = 1 << 7
    HAS_MEMBER_PRESENT = 1 << 8
    TLVS_PRESENT = 1 << 9


SUPPORTED_OBSERVATION_FLAGS: Final = (1 << 10) - 1  # bits 0-9; reserved 10-15 are rejected


class ObservationStatus(enum.IntFlag):
    """Measurement Status (IG condition order for bits 0-7, CLI for 14-15); others kept."""

    INVALID = 1 << 0
    QUESTIONABLE = 1 << 1
    NOT_AVAILABLE = 1 << 2
    CALIBRATION_ONGOING = 1 << 3
    TEST_DATA = 1 << 4
    EARLY_ESTIMATE = 1 << 5
    MANUALLY_ENTERED = 1 << 6
    SETTING = 1 << 7
    THRESHOLD_ERROR = 1 << 14
    THRESHOLDING_DISABLED = 1 << 15


# ACOM status bit → the gateway's MeasurementStatus. MANUALLY_ENTERED, SETTING, THRESHOLD_ERROR and
# THRESHOLDING_DISABLED have no MeasurementStatus counterpart yet: kept in the dataclass only.
STATUS_TO_MEASUREMENT_STATUS: Final = {
    ObservationStatus.INVALID: MeasurementStatus.INVALID,
    ObservationStatus.QUESTIONABLE: MeasurementStatus.QUESTIONABLE,
    ObservationStatus.NOT_AVAILABLE: MeasurementStatus.NOT_AVAILABLE,
    ObservationStatus.CALIBRATION_ONGOING: MeasurementStatus.CALIBRATION_ONGOING,
    ObservationStatus.TEST_DATA: MeasurementStatus.TEST_DATA,
    ObservationStatus.EARLY_ESTIMATE: MeasurementStatus.EARLY_INDICATION,
}


@dataclass(frozen=True, slots=True)
class Tlv:
    """One TLV: attribute type (MDC code), format type (Bluetooth format, e.g. 0x04 uint8), value.

    Wire: type u32, length u16 (of the value), format u8, value (ST TLVEncodedObservation, CLI
    tlvObservationValue, SIM TLValue.asGHSBytes).
    """

    type_code: int
    format_type: int
    value: bytes

    def __post_init__(self) -> None:
        check_range("TLV type", self.type_code, 0, U32_MAX)
        check_range("TLV format type", self.format_type, 0, U8_MAX)
        check_range("TLV value length", len(self.value), 0, U16_MAX)

    @classmethod
    def read(cls, r: Reader) -> Self:
        type_code, size, format_type = r.unpack(TLV_HEAD, "TLV type, length and format")
        return cls(type_code, format_type, r.take(size, "TLV value"))

    def __bytes__(self) -> bytes:
        return TLV_HEAD.pack(self.type_code, len(self.value), self.format_type) + self.value


TLV_HEAD = struct.Struct("<IHB")


def _read_tlvs(r: Reader) -> tuple[Tlv, ...]:
    count = r.u8("TLV count")
    return tuple(Tlv.read(r) for _ in range(count))


def _tlvs_bytes(tlvs: tuple[Tlv, ...]) -> bytes:
    return U8.pack(len(tlvs)) + b"".join(bytes(t) for t in tlvs)


@dataclass(frozen=True, slots=True)
class ObservationHeader:
    """The optional fields after Observation Flags; None = absent (the flag is derived from it).

    For a list field, ``()`` is present with a count of 0 and differs from None.
    """

    type_code: int | None = None
    timestamp: ElapsedTime | None = None
    duration: Float | None = None  # seconds
    status: ObservationStatus | None = None
    object_id: int | None = None
    patient_id: int | None = None
    supplemental: tuple[int, ...] | None = None  # MDC codes
    derived_from: tuple[int, ...] | None = None  # object ids
    has_member: tuple[int, ...] | None = None  # object ids
    tlvs: tuple[Tlv, ...] | None = None

    def __post_init__(self) -> None:
        if self.type_code is not None:
            check_range("observation type", self.type_code, 0, U32_MAX)
        if self.status is not None:
            check_range("measurement status", int(self.status), 0, U16_MAX)
        if self.object_id is not None:
            check_range("object id", self.object_id, 0, U32_MAX)
        if self.patient_id is not None:
            check_range("patient id", self.patient_id, 0, U8_MAX)
        for name, codes in self._lists():
            if codes is not None:
                _check_codes(name, codes)
        if self.tlvs is not None:
            check_range("TLV count", len(self.tlvs), 0, MAX_LIST_ENTRIES)

    def _lists(self) -> tuple[tuple[str, tuple[int, ...] | None], ...]:
        return (
            ("supplemental information", self.supplemental),
            ("derived-from", self.derived_from),
            ("has-member", self.has_member),
        )

    @property
    def flags(self) -> ObservationFlags:
        present = (
            (ObservationFlags.TYPE_PRESENT, self.type_code),
            (ObservationFlags.TIMESTAMP_PRESENT, self.timestamp),
            (ObservationFlags.DURATION_PRESENT, self.duration),
            (ObservationFlags.STATUS_PRESENT, self.status),
            (ObservationFlags.OBJECT_ID_PRESENT, self.object_id),
            (ObservationFlags.PATIENT_ID_PRESENT, self.patient_id),
            (ObservationFlags.SUPPLEMENTAL_INFORMATION_PRESENT, self.supplemental),
            (ObservationFlags.DERIVED_FROM_PRESENT, self.derived_from),
            (ObservationFlags.HAS_MEMBER_PRESENT, self.has_member),
            (ObservationFlags.TLVS_PRESENT, self.tlvs),
        )
        flags = ObservationFlags(0)
        for flag, value in present:
            if value is not None:
                flags |= flag
        return flags

    @classmethod
    def read(cls, r: Reader, flags: ObservationFlags) -> Self:
        f = ObservationFlags
        type_code = r.u32("observation type") if f.TYPE_PRESENT in flags else None
        timestamp = ElapsedTime.read(r) if f.TIMESTAMP_PRESENT in flags else None
        duration = r.float32("measurement duration") if f.DURATION_PRESENT in flags else None
        status = (
            ObservationStatus(r.u16("measurement status")) if f.STATUS_PRESENT in flags else None
        )
        object_id = r.u32("object id") if f.OBJECT_ID_PRESENT in flags else None
        patient_id = r.u8("patient id") if f.PATIENT_ID_PRESENT in flags else None
        supplemental = (
            _read_codes(r, "supplemental information")
            if f.SUPPLEMENTAL_INFORMATION_PRESENT in flags
            else None
        )
        derived_from = _read_codes(r, "derived-from") if f.DERIVED_FROM_PRESENT in flags else None
        has_member = _read_codes(r, "has-member") if f.HAS_MEMBER_PRESENT in flags else None
        tlvs = _read_tlvs(r) if f.TLVS_PRESENT in flags else None
        return cls(
            type_code,
            timestamp,
            duration,
            status,
            object_id,
            patient_id,
            supplemental,
            derived_from,
            has_member,
            tlvs,
        )

    def __bytes__(self) -> bytes:
        out = bytearray()
        if self.type_code is not None:
            out += U32.pack(self.type_code)
        if self.timestamp is not None:
            out += bytes(self.timestamp)
        if self.duration is not None:
            out += bytes(self.duration)
        if self.status is not None:
            out += U16.pack(int(self.status))
        if self.object_id is not None:
            out += U32.pack(self.object_id)
        if self.patient_id is not None:
            out += U8.pack(self.patient_id)
        for _, codes in self._lists():
            if codes is not None:
                out += _codes_bytes(codes)
        if self.tlvs is not None:
            out += _tlvs_bytes(self.tlvs)
        return bytes(out)

    def over(self, parent: ObservationHeader) -> ObservationHeader:
        """This header with absent fields taken from ``parent`` (a bundle's header)."""
        inherited = {
            f.name: getattr(parent, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is None
        }
        return dataclasses.replace(self, **inherited)


NO_HEADER: Final = ObservationHeader()


def _check_codes(name: str, codes: tuple[int, ...]) -> None:
    check_range(f"{name} count", len(codes), 0, MAX_LIST_ENTRIES)
    for code in codes:
        check_range(name, code, 0, U32_MAX)


def _read_codes(r: Reader, name: str) -> tuple[int, ...]:
    count = r.u8(f"{name} count")
    if r.remaining < count * U32.size:
        raise r.error(f"{count} × 4 bytes of {name}, found {r.remaining}")
    return tuple(r.u32(name) for _ in range(count))


def _codes_bytes(codes: tuple[int, ...]) -> bytes:
    return U8.pack(len(codes)) + b"".join(U32.pack(code) for code in codes)


# =================================================================================================
# Observation values
# =================================================================================================


@dataclass(frozen=True, slots=True)
class NumericValue:
    """Numeric observation value: MDC unit (partition 4 term code) and a FLOAT."""

    unit_code: int
    value: Float

    CLASS: ClassVar[ObservationClass] = ObservationClass.NUMERIC
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<HI")

    def __post_init__(self) -> None:
        check_range("unit code", self.unit_code, 0, U16_MAX)

    @classmethod
    def read(cls, r: Reader) -> Self:
        unit, raw = r.unpack(cls.STRUCT, "numeric value (unit and FLOAT)")
        return cls(unit, Float.from_raw(raw))

    def __bytes__(self) -> bytes:
        return self.STRUCT.pack(self.unit_code, self.value.raw)


@dataclass(frozen=True, slots=True)
class SimpleDiscreteValue:
    """Simple discrete observation value: one MDC code."""

    code: int

    CLASS: ClassVar[ObservationClass] = ObservationClass.SIMPLE_DISCRETE

    def __post_init__(self) -> None:
        check_range("discrete value", self.code, 0, U32_MAX)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(r.u32("discrete value"))

    def __bytes__(self) -> bytes:
        return U32.pack(self.code)


@dataclass(frozen=True, slots=True)
class StringValue:
    """String observation value: u16 byte length + UTF-8."""

    text: str

    CLASS: ClassVar[ObservationClass] = ObservationClass.STRING

    def __post_init__(self) -> None:
        check_range("string length in bytes", len(self.text.encode("utf-8")), 0, U16_MAX)

    @classmethod
    def read(cls, r: Reader) -> Self:
        size = r.u16("string length")
        start = r.offset
        raw = r.take(size, "string")
        try:
            return cls(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise r.error(f"UTF-8 text ({exc.reason})", offset=start + exc.start) from exc

    def __bytes__(self) -> bytes:
        raw = self.text.encode("utf-8")
        return U16.pack(len(raw)) + raw


@dataclass(frozen=True, slots=True)
class SampleArrayValue:
    """Sample array value: ``physical = offset + scale_factor × sample``.

    ``sample_period`` is the time in seconds between two groups of ``samples_per_period``
    samples (250 Hz single-lead ECG: 0.004 s, 1 per period). Samples are unsigned integers of
    ``bytes_per_sample`` bytes (see :data:`SAMPLES_SIGNED`).
    """

    unit_code: int
    scale_factor: Float
    offset: Float
    sample_period: Float
    samples_per_period: int
    bytes_per_sample: int
    samples: tuple[int, ...]

    CLASS: ClassVar[ObservationClass] = ObservationClass.SAMPLE_ARRAY

    def __post_init__(self) -> None:
        check_range("unit code", self.unit_code, 0, U16_MAX)
        check_range("samples per period", self.samples_per_period, 1, U8_MAX)
        check_range("bytes per sample", self.bytes_per_sample, 1, BYTES_PER_SAMPLE_MAX)
        check_range("number of samples", len(self.samples), 0, U32_MAX)
        if len(self.samples) % self.samples_per_period:
            raise ValueError(
                f"{len(self.samples)} samples are not whole periods of {self.samples_per_period}"
            )
        if self.samples:  # one pass each for the extremes: this runs for every ECG strip
            low, high = sample_range(self.bytes_per_sample)
            check_range("sample", min(self.samples), low, high)
            check_range("sample", max(self.samples), low, high)

    @classmethod
    def read(cls, r: Reader) -> Self:
        unit, scale, offset, period, per_period, size, count = r.unpack(
            SAMPLE_ARRAY_HEAD, "sample array header"
        )
        if not 1 <= size <= BYTES_PER_SAMPLE_MAX:
            raise r.error(f"bytes per sample 1-{BYTES_PER_SAMPLE_MAX}, found {size}", r.offset - 5)
        if r.remaining < count * size:
            raise r.error(f"{count} samples of {size} byte(s), found {r.remaining} byte(s)")
        samples = _unpack_samples(r.take(count * size, "samples"), size, count)
        with r.field("sample array"):
            return cls(
                unit,
                Float.from_raw(scale),
                Float.from_raw(offset),
                Float.from_raw(period),
                per_period,
                size,
                samples,
            )

    def __bytes__(self) -> bytes:
        head = SAMPLE_ARRAY_HEAD.pack(
            self.unit_code,
            self.scale_factor.raw,
            self.offset.raw,
            self.sample_period.raw,
            self.samples_per_period,
            self.bytes_per_sample,
            len(self.samples),
        )
        return head + _pack_samples(self.samples, self.bytes_per_sample)

    def sample_array(self) -> SampleArray:
        return SampleArray(
            self.scale_factor,
            self.offset,
            self.sample_period,
            self.samples_per_period,
            self.bytes_per_sample,
            self.samples,
        )


def sample_range(size: int) -> tuple[int, int]:
    """Smallest and largest sample of ``size`` bytes (depends on :data:`SAMPLES_SIGNED`)."""
    bits = 8 * size
    if SAMPLES_SIGNED:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _sample_format(size: int, count: int) -> str | None:
    code = _SAMPLE_FORMAT_CODES.get(size)
    if code is None:
        return None
    return f"<{count}{code.lower() if SAMPLES_SIGNED else code}"


def _unpack_samples(raw: bytes, size: int, count: int) -> tuple[int, ...]:
    fmt = _sample_format(size, count)
    if fmt is not None:
        return struct.unpack(fmt, raw)  # integer formats: already ints
    return tuple(
        int.from_bytes(raw[i : i + size], "little", signed=SAMPLES_SIGNED)
        for i in range(0, count * size, size)
    )


def _pack_samples(samples: tuple[int, ...], size: int) -> bytes:
    fmt = _sample_format(size, len(samples))
    if fmt is not None:
        return struct.pack(fmt, *samples)
    return b"".join(s.to_bytes(size, "little", signed=SAMPLES_SIGNED) for s in samples)


@dataclass(frozen=True, slots=True)
class CompoundDiscreteEventValue:
    """Compound discrete event value: a list of MDC event codes."""

    codes: tuple[int, ...]

    CLASS: ClassVar[ObservationClass] = ObservationClass.COMPOUND_DISCRETE_EVENT

    def __post_init__(self) -> None:
        _check_codes("event code", self.codes)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(_read_codes(r, "event code"))

    def __bytes__(self) -> bytes:
        return _codes_bytes(self.codes)


@dataclass(frozen=True, slots=True)
class CompoundStateEventValue:
    """Compound state/event value: supported mask, state-or-event mask and value, n bytes each."""

    supported: bytes
    state_or_event: bytes
    value: bytes

    CLASS: ClassVar[ObservationClass] = ObservationClass.COMPOUND_STATE_EVENT

    def __post_init__(self) -> None:
        check_range("state/event size", len(self.value), 1, U8_MAX)
        if not len(self.supported) == len(self.state_or_event) == len(self.value):
            raise ValueError("supported, state/event and value masks differ in size")

    @classmethod
    def read(cls, r: Reader) -> Self:
        size = r.u8("state/event size")
        supported = r.take(size, "supported mask")
        state_or_event = r.take(size, "state/event mask")
        value = r.take(size, "state/event value")
        with r.field("compound state/event value"):
            return cls(supported, state_or_event, value)

    def __bytes__(self) -> bytes:
        return U8.pack(len(self.value)) + self.supported + self.state_or_event + self.value


ComponentValue = (
    NumericValue
    | SimpleDiscreteValue
    | StringValue
    | SampleArrayValue
    | CompoundDiscreteEventValue
    | CompoundStateEventValue
)

COMPONENT_READERS: Final[dict[ObservationClass, Callable[[Reader], ComponentValue]]] = {
    ObservationClass.NUMERIC: NumericValue.read,
    ObservationClass.SIMPLE_DISCRETE: SimpleDiscreteValue.read,
    ObservationClass.STRING: StringValue.read,
    ObservationClass.SAMPLE_ARRAY: SampleArrayValue.read,
    ObservationClass.COMPOUND_DISCRETE_EVENT: CompoundDiscreteEventValue.read,
    ObservationClass.COMPOUND_STATE_EVENT: CompoundStateEventValue.read,
}


@dataclass(frozen=True, slots=True)
class Component:
    """One component of a compound observation: its MDC type and a non-compound value."""

    type_code: int
    value: ComponentValue

    def __post_init__(self) -> None:
        check_range("component type", self.type_code, 0, U32_MAX)

    @classmethod
    def read(cls, r: Reader) -> Self:
        type_code = r.u32("component type")
        raw_class = r.u8("component value type")
        kind = _known(ObservationClass, raw_class)
        reader = COMPONENT_READERS.get(kind) if isinstance(kind, ObservationClass) else None
        if reader is None:
            raise r.error(f"a component value type 1-6, found 0x{raw_class:02X}", r.offset - 1)
        return cls(type_code, reader(r))

    def __bytes__(self) -> bytes:
        return U32.pack(self.type_code) + U8.pack(self.value.CLASS) + bytes(self.value)


@dataclass(frozen=True, slots=True)
class CompoundValue:
    """Compound observation value: components each with their own type and value."""

    components: tuple[Component, ...]

    CLASS: ClassVar[ObservationClass] = ObservationClass.COMPOUND

    def __post_init__(self) -> None:
        check_range("component count", len(self.components), 0, MAX_LIST_ENTRIES)

    @classmethod
    def read(cls, r: Reader) -> Self:
        count = r.u8("component count")
        components = tuple(Component.read(r) for _ in range(count))
        return cls(components)

    def __bytes__(self) -> bytes:
        return U8.pack(len(self.components)) + b"".join(bytes(c) for c in self.components)


@dataclass(frozen=True, slots=True)
class TlvEncodedValue:
    """TLV-encoded observation value: a list of TLVs (count u8)."""

    entries: tuple[Tlv, ...]

    CLASS: ClassVar[ObservationClass] = ObservationClass.TLV_ENCODED

    def __post_init__(self) -> None:
        check_range("TLV count", len(self.entries), 0, MAX_LIST_ENTRIES)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(_read_tlvs(r))

    def __bytes__(self) -> bytes:
        return _tlvs_bytes(self.entries)


ObservationValue = ComponentValue | CompoundValue | TlvEncodedValue

VALUE_READERS: Final[dict[ObservationClass, Callable[[Reader], ObservationValue]]] = {
    **COMPONENT_READERS,
    ObservationClass.COMPOUND: CompoundValue.read,
    ObservationClass.TLV_ENCODED: TlvEncodedValue.read,
}


# =================================================================================================
# Observations and bundles
# =================================================================================================


NO_STATUS: Final = MeasurementStatus(0)


def _measurement_status(status: ObservationStatus | None) -> MeasurementStatus:
    result = MeasurementStatus(0)
    for bit, mapped in STATUS_TO_MEASUREMENT_STATUS.items():
        if status is not None and bit in status:
            result |= mapped
    return result


def _device_time(stamp: ElapsedTime | None) -> DateTime | None:
    moment = None if stamp is None else stamp.to_datetime()
    return None if moment is None else DateTime.from_datetime(moment)


def _value_measurement(type_code: int, value: ObservationValue) -> Measurement | None:
    """The bare Measurement of one value (no header fields); None for non-numeric kinds."""
    if isinstance(value, NumericValue):
        return Measurement(type_code, value.value, value.unit_code)
    if isinstance(value, SampleArrayValue):
        return Measurement(type_code, unit_code=value.unit_code, samples=value.sample_array())
    if isinstance(value, CompoundValue):
        parts = tuple(
            part
            for c in value.components
            if (part := _value_measurement(c.type_code, c.value)) is not None
        )
        return Measurement(type_code, components=parts) if parts else None
    return None  # discrete codes, strings, events and states have no Measurement form (yet)


@dataclass(frozen=True, slots=True)
class Observation:
    """A single ACOM observation: its value (the class follows from it) and header fields."""

    value: ObservationValue
    header: ObservationHeader = NO_HEADER

    @property
    def observation_class(self) -> ObservationClass:
        return self.value.CLASS

    def __bytes__(self) -> bytes:
        return _object_bytes(self.value.CLASS, self.header, bytes(self.value))

    def measurements(
        self,
        parent: ObservationHeader = NO_HEADER,
        extra_status: MeasurementStatus = NO_STATUS,
    ) -> tuple[Measurement, ...]:
        """Numeric, sample-array and compound observations → one Measurement; others → ()."""
        header = self.header.over(parent)
        if header.type_code is None:
            return ()
        bare = _value_measurement(header.type_code, self.value)
        if bare is None:
            return ()
        return (
            dataclasses.replace(
                bare,
                timestamp=_device_time(header.timestamp),
                status=_measurement_status(header.status) | extra_status,
                supplemental=header.supplemental or (),
                user_index=header.patient_id,
            ),
        )


@dataclass(frozen=True, slots=True)
class ObservationBundle:
    """Several observations sharing the bundle's header fields (members may override them)."""

    observations: tuple[Observation, ...]
    header: ObservationHeader = NO_HEADER

    def __post_init__(self) -> None:
        check_range("bundled observation count", len(self.observations), 0, MAX_LIST_ENTRIES)

    @property
    def observation_class(self) -> ObservationClass:
        return ObservationClass.BUNDLE

    def __bytes__(self) -> bytes:
        value = U8.pack(len(self.observations)) + b"".join(bytes(o) for o in self.observations)
        return _object_bytes(ObservationClass.BUNDLE, self.header, value)

    def measurements(
        self,
        extra_status: MeasurementStatus = NO_STATUS,
    ) -> tuple[Measurement, ...]:
        return tuple(
            m for o in self.observations for m in o.measurements(self.header, extra_status)
        )


AcomObject = Observation | ObservationBundle


def _object_bytes(kind: ObservationClass, header: ObservationHeader, value: bytes) -> bytes:
    fields = bytes(header) + value
    length = U16.size + len(fields)  # flags and what follows (ST: bytes after the Length field)
    if length > U16_MAX:
        raise ValueError(f"observation of {length} bytes does not fit the u16 length field")
    return OBJECT_HEADER.pack(kind, length, header.flags) + fields


def _read_object(r: Reader, *, in_bundle: bool) -> AcomObject:
    start = r.offset
    raw_class, length, raw_flags = r.unpack(OBJECT_HEADER, "observation class, length and flags")
    try:
        kind = ObservationClass(raw_class)
    except ValueError:
        raise r.error(f"a known observation class type, found 0x{raw_class:02X}", start) from None
    if kind is ObservationClass.BUNDLE and in_bundle:
        raise r.error("an observation inside a bundle, found a nested bundle", start)
    available = len(r.data) - start - LENGTH_COUNTS_FROM
    if not MIN_LENGTH <= length <= available:
        raise r.error(
            f"an observation length {MIN_LENGTH}-{available}, found {length}",
            start + LENGTH_FIELD_OFFSET,
        )
    flags = ObservationFlags(raw_flags)
    if raw_flags & ~SUPPORTED_OBSERVATION_FLAGS:
        raise r.error(
            f"observation flags within 0x{SUPPORTED_OBSERVATION_FLAGS:04X} (bits 10-15 are "
            f"reserved and may announce unknown fields), found 0x{raw_flags:04X}",
            start + LENGTH_FIELD_OFFSET + U16.size,
        )
    with r.field("observation header"):
        header = ObservationHeader.read(r, flags)
    obj: AcomObject
    if kind is ObservationClass.BUNDLE:
        count = r.u8("bundled observation count")
        members = tuple(_read_member(r) for _ in range(count))
        with r.field("observation bundle"):
            obj = ObservationBundle(members, header)
    else:
        obj = Observation(VALUE_READERS[kind](r), header)
    used = r.offset - start - LENGTH_COUNTS_FROM
    if used != length:
        raise r.error(
            f"an observation with the declared length {length}, its fields take {used}",
            start + LENGTH_FIELD_OFFSET,
        )
    return obj


def _read_member(r: Reader) -> Observation:
    member = _read_object(r, in_bundle=True)
    assert isinstance(member, Observation)  # nested bundles are rejected by _read_object
    return member


def decode_observation(data: bytes, what: str = "ACOM observation") -> AcomObject:
    """Decode one complete observation or bundle (a reassembled live payload)."""
    r = Reader(data, what)
    obj = _read_object(r, in_bundle=False)
    r.end()
    return obj


@dataclass(frozen=True, slots=True)
class StoredObservation:
    """A reassembled stored payload: the record number, then the observation or bundle."""

    record_number: int
    observation: AcomObject

    def __post_init__(self) -> None:
        check_range("record number", self.record_number, 0, U32_MAX)

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "stored ACOM observation") -> Self:
        r = Reader(data, what)
        record_number = r.u32("record number")
        obj = _read_object(r, in_bundle=False)
        r.end()
        return cls(record_number, obj)

    def __bytes__(self) -> bytes:
        return U32.pack(self.record_number) + bytes(self.observation)

    def measurements(self) -> tuple[Measurement, ...]:
        """The observation's measurements, marked as coming from the device's storage."""
        return self.observation.measurements(extra_status=MeasurementStatus.FROM_STORAGE)


# =================================================================================================
# Segmentation and the characteristics that carry observations
# =================================================================================================


@dataclass(frozen=True, slots=True)
class SegmentationHeader:
    """The first byte of every observation notification."""

    first: bool
    last: bool
    counter: int

    def __post_init__(self) -> None:
        check_range("segment counter", self.counter, 0, SEGMENT_COUNTER_MODULO - 1)

    @classmethod
    def from_byte(cls, raw: int) -> Self:
        return cls(
            bool(raw & SEGMENT_FIRST), bool(raw & SEGMENT_LAST), raw >> SEGMENT_COUNTER_SHIFT
        )

    def __int__(self) -> int:
        return (
            (self.counter << SEGMENT_COUNTER_SHIFT)
            | (SEGMENT_FIRST if self.first else 0)
            | (SEGMENT_LAST if self.last else 0)
        )


def segment(payload: bytes, mtu: int, counter: int = 0) -> list[bytes]:
    """Split a complete payload into notification values for an ATT_MTU of ``mtu``.

    ``payload`` is an observation (live) or record number + observation (stored); ``counter`` is
    the segment counter of the first segment; later ones count on modulo 64.
    """
    check_range("ATT_MTU", mtu, ATT_MTU_MIN, ATT_MTU_MAX)
    check_range("segment counter", counter, 0, SEGMENT_COUNTER_MODULO - 1)
    if not payload:
        raise ValueError("nothing to segment")
    size = mtu - ATT_NOTIFICATION_OVERHEAD - SEGMENTATION_HEADER_SIZE
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
    last = len(chunks) - 1
    headers = (
        SegmentationHeader(i == 0, i == last, (counter + i) % SEGMENT_COUNTER_MODULO)
        for i in range(len(chunks))
    )
    return [U8.pack(int(h)) + chunk for h, chunk in zip(headers, chunks, strict=True)]


T = TypeVar("T")


class Reassembler(Generic[T]):
    """Joins segmented notifications into complete observations (pure: no I/O, no clock).

    ``feed`` returns the decoded object when a last segment completes it, else None. Errors raise
    :class:`DecodeError` and drop the partial observation, so the next correct sequence decodes:
    a continuation with no first segment, a counter that does not follow the previous one, more
    bytes than ``max_size`` or than the declared length. A first segment that arrives while another
    observation is incomplete drops the incomplete one (DecodeError) and starts anew with it; if
    that segment is also a last one, it is dropped too (the error cannot carry a result).

    ATT notifications are reliable and ordered within a connection, so these errors mean a sensor
    bug or a restart: call :meth:`reset` whenever the subscription is (re)established.
    """

    __slots__ = ("_buffer", "_decode", "_expected", "_length_offset", "max_size", "what")

    def __init__(
        self,
        decode: Callable[[bytes, str], T],
        what: str,
        *,
        length_offset: int,
        max_size: int = DEFAULT_MAX_OBSERVATION_SIZE,
    ) -> None:
        if max_size < length_offset + U16.size + MIN_LENGTH:
            raise ValueError(f"max_size {max_size} cannot hold an observation header")
        self._decode = decode
        self.what = what
        self._length_offset = length_offset
        self.max_size = max_size
        self._buffer = bytearray()
        self._expected: int | None = None  # counter of the next segment; None = idle

    @staticmethod
    def live(max_size: int = DEFAULT_MAX_OBSERVATION_SIZE) -> Reassembler[AcomObject]:
        """For Live Health Observations 0x2B8B."""
        return Reassembler(
            decode_observation,
            LiveHealthObservations.describe(),
            length_offset=LENGTH_FIELD_OFFSET,
            max_size=max_size,
        )

    @staticmethod
    def stored(max_size: int = DEFAULT_MAX_OBSERVATION_SIZE) -> Reassembler[StoredObservation]:
        """For Stored Health Observations 0x2BDD (record number, then the observation)."""
        return Reassembler(
            StoredObservation.from_bytes,
            StoredHealthObservations.describe(),
            length_offset=RECORD_NUMBER_SIZE + LENGTH_FIELD_OFFSET,
            max_size=max_size,
        )

    @property
    def in_progress(self) -> bool:
        return self._expected is not None

    def reset(self) -> None:
        self._buffer.clear()
        self._expected = None

    def _fail(self, expected: str) -> DecodeError:
        self.reset()
        return DecodeError(self.what, 0, expected)

    def feed(self, notification: bytes) -> T | None:
        if not notification:
            raise self._fail("a segmentation header byte, found an empty notification")
        header = SegmentationHeader.from_byte(notification[0])
        data = notification[SEGMENTATION_HEADER_SIZE:]
        abandoned = len(self._buffer) if self.in_progress else None
        if header.first:
            self.reset()
        elif self._expected is None:
            raise self._fail(
                f"a first segment (bit 0 set), found segment {header.counter} of an observation "
                "whose start was missed"
            )
        elif header.counter != self._expected:
            raise self._fail(
                f"segment {self._expected}, found segment {header.counter} (segments lost)"
            )
        self._buffer += data
        self._expected = (header.counter + 1) % SEGMENT_COUNTER_MODULO
        self._check_size()
        if abandoned is not None and header.first:
            if header.last:
                self.reset()
            raise DecodeError(
                self.what,
                0,
                f"a continuation segment, found a new first segment: the previous observation "
                f"({abandoned} bytes so far) was dropped",
            )
        if not header.last:
            return None
        payload = bytes(self._buffer)
        self.reset()
        return self._decode(payload, f"{self.what}, reassembled")

    def _check_size(self) -> None:
        size = len(self._buffer)
        if size > self.max_size:
            raise self._fail(f"an observation of at most {self.max_size} bytes, found {size}+")
        end = self._length_offset + U16.size
        if size >= end:
            (length,) = U16.unpack_from(self._buffer, self._length_offset)
            declared = end + length
            if declared > self.max_size:
                raise self._fail(
                    f"an observation of at most {self.max_size} bytes, declared {declared}"
                )
            if size > declared:
                raise self._fail(f"the declared {declared} bytes, received {size}")


@register
@dataclass(frozen=True, slots=True)
class LiveHealthObservations:
    """Live Health Observations 0x2B8B holding one complete segment (first and last bits set).

    Longer observations span several notifications: feed those to :meth:`Reassembler.live`.
    """

    observation: AcomObject
    segment_counter: int = 0

    UUID: ClassVar[int] = LIVE_HEALTH_OBSERVATIONS_UUID
    NAME: ClassVar[str] = "Live Health Observations"

    def __post_init__(self) -> None:
        check_range("segment counter", self.segment_counter, 0, SEGMENT_COUNTER_MODULO - 1)

    @classmethod
    def describe(cls) -> str:
        return f"{cls.NAME} (0x{cls.UUID:04X})"

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        counter = _single_segment(data, cls.describe())
        return cls(decode_observation(data[SEGMENTATION_HEADER_SIZE:], cls.describe()), counter)

    def __bytes__(self) -> bytes:
        header = SegmentationHeader(first=True, last=True, counter=self.segment_counter)
        return U8.pack(int(header)) + bytes(self.observation)

    def measurements(self) -> tuple[Measurement, ...]:
        return self.observation.measurements()


@register
@dataclass(frozen=True, slots=True)
class StoredHealthObservations:
    """Stored Health Observations 0x2BDD holding one complete segment (record number + object)."""

    record_number: int
    observation: AcomObject
    segment_counter: int = 0

    UUID: ClassVar[int] = STORED_HEALTH_OBSERVATIONS_UUID
    NAME: ClassVar[str] = "Stored Health Observations"

    def __post_init__(self) -> None:
        check_range("segment counter", self.segment_counter, 0, SEGMENT_COUNTER_MODULO - 1)
        check_range("record number", self.record_number, 0, U32_MAX)

    @classmethod
    def describe(cls) -> str:
        return f"{cls.NAME} (0x{cls.UUID:04X})"

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        counter = _single_segment(data, cls.describe())
        stored = StoredObservation.from_bytes(data[SEGMENTATION_HEADER_SIZE:], cls.describe())
        return cls(stored.record_number, stored.observation, counter)

    def __bytes__(self) -> bytes:
        header = SegmentationHeader(first=True, last=True, counter=self.segment_counter)
        return U8.pack(int(header)) + bytes(self.stored)

    @property
    def stored(self) -> StoredObservation:
        return StoredObservation(self.record_number, self.observation)

    def measurements(self) -> tuple[Measurement, ...]:
        return self.stored.measurements()


def _single_segment(data: bytes, what: str) -> int:
    """The counter of a notification that must hold a whole observation (first and last set)."""
    r = Reader(data, what)
    header = SegmentationHeader.from_byte(r.u8("segmentation header"))
    if not (header.first and header.last):
        raise r.error(
            "a single complete segment (first and last bits set); feed segmented notifications "
            f"to Reassembler, found first={header.first} last={header.last}",
            offset=0,
        )
    return header.counter


# =================================================================================================
# Control point and features
# =================================================================================================


class GhsControlPointOpCode(enum.IntEnum):
    """GHS Control Point op codes (requests) and response codes (SIM/CLI)."""

    START_SEND_LIVE_OBSERVATIONS = 0x01
    STOP_SEND_LIVE_OBSERVATIONS = 0x02
    SUCCESS = 0x80
    SERVER_BUSY = 0x81
    ERROR_LIVE_OBSERVATIONS = 0x82  # live observations not configured (CCCD off)


RESPONSE_CODE_MIN: Final = 0x80


@register
@dataclass(frozen=True, slots=True)
class GhsControlPoint:
    """GHS Control Point 0x2BF4: one op code byte (requests 0x01/0x02, responses ≥ 0x80)."""

    op_code: GhsControlPointOpCode | int

    UUID: ClassVar[int] = GHS_CONTROL_POINT_UUID
    NAME: ClassVar[str] = "GHS Control Point"

    def __post_init__(self) -> None:
        check_range("op code", int(self.op_code), 0, U8_MAX)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        value = cls(_known(GhsControlPointOpCode, r.u8("op code")))
        r.end()
        return value

    def __bytes__(self) -> bytes:
        return U8.pack(int(self.op_code))

    @property
    def is_response(self) -> bool:
        return int(self.op_code) >= RESPONSE_CODE_MIN


START_LIVE_OBSERVATIONS: Final = GhsControlPoint(GhsControlPointOpCode.START_SEND_LIVE_OBSERVATIONS)
STOP_LIVE_OBSERVATIONS: Final = GhsControlPoint(GhsControlPointOpCode.STOP_SEND_LIVE_OBSERVATIONS)


class FeatureFlags(enum.IntFlag):
    """Health Sensor Features flags (SIM featureFlagsFor, CLI GhsFeaturesHandler)."""

    DEVICE_SPECIALIZATIONS_PRESENT = 0x01


DEVICE_SPECIALIZATION = struct.Struct("<HB")  # partition-8 term code, version


@dataclass(frozen=True, slots=True)
class DeviceSpecialization:
    """A supported IEEE 11073 device specialization (MDC_DEV_SPEC_PROFILE_*) and its version."""

    term_code: int  # within partition 8; the wire carries 16 bits
    version: int

    def __post_init__(self) -> None:
        check_range("device specialization", self.term_code, 0, U16_MAX)
        check_range("specialization version", self.version, 0, U8_MAX)

    @property
    def mdc_code(self) -> int:
        return (MDC_PARTITION_DEVICE_SPECIALIZATION << MDC_PARTITION_SHIFT) | self.term_code


@register
@dataclass(frozen=True, slots=True)
class HealthSensorFeatures:
    """Health Sensor Features 0x2BF3: supported observation types, optional specializations.

    ``other_flags`` keeps flag bits 1-7, unknown here, for an exact ``__bytes__``.
    """

    observation_types: tuple[int, ...]
    device_specializations: tuple[DeviceSpecialization, ...] | None = None
    other_flags: int = 0

    UUID: ClassVar[int] = HEALTH_SENSOR_FEATURES_UUID
    NAME: ClassVar[str] = "Health Sensor Features"

    def __post_init__(self) -> None:
        _check_codes("observation type", self.observation_types)
        if self.device_specializations is not None:
            check_range("device specialization count", len(self.device_specializations), 0, U8_MAX)
        check_range("other feature flags", self.other_flags, 0, U8_MAX)
        if self.other_flags & FeatureFlags.DEVICE_SPECIALIZATIONS_PRESENT:
            raise ValueError("bit 0 follows from device_specializations")

    @property
    def flags(self) -> int:
        present = self.device_specializations is not None
        return self.other_flags | (FeatureFlags.DEVICE_SPECIALIZATIONS_PRESENT if present else 0)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        flags = r.u8("flags")
        types = _read_codes(r, "observation type")
        specs: tuple[DeviceSpecialization, ...] | None = None
        if flags & FeatureFlags.DEVICE_SPECIALIZATIONS_PRESENT:
            count = r.u8("device specialization count")
            raw = [r.unpack(DEVICE_SPECIALIZATION, "device specialization") for _ in range(count)]
            specs = tuple(DeviceSpecialization(code, version) for code, version in raw)
        r.end()
        return cls(types, specs, flags & ~int(FeatureFlags.DEVICE_SPECIALIZATIONS_PRESENT))

    def __bytes__(self) -> bytes:
        out = U8.pack(self.flags) + _codes_bytes(self.observation_types)
        if self.device_specializations is not None:
            out += U8.pack(len(self.device_specializations))
            for spec in self.device_specializations:
                out += DEVICE_SPECIALIZATION.pack(spec.term_code, spec.version)
        return out


E = TypeVar("E", bound=enum.IntEnum)


def _known(enum_type: type[E], raw: int) -> E | int:
    try:
        return enum_type(raw)
    except ValueError:
        return raw  # a value this gateway does not know yet: keep it for the exact inverse
