"""The ACOM observation header: class type, flags, measurement status and the optional fields.

Sources ([ST], [CLI], [IG] …: see :mod:`gateway.ieee11073.ghs`); little-endian:

=================================== ============================================ ===============
field                               layout                                       source
=================================== ============================================ ===============
Observation Class Type              u8: 1 numeric, 2 simple discrete, 3 string,   ST, SIM, CLI
                                    4 sample array, 5 compound discrete event,
                                    6 compound state/event, 7 compound,
                                    8 TLV-encoded, 0xFF bundle
Observation Flags                   u16: bit0 type, 1 time stamp, 2 duration,    ST, CLI
                                    3 status, 4 object id, 5 patient id,
                                    6 supplemental, 7 derived-from, 8 has-member,
                                    9 TLVs, 10-15 reserved
Observation Type                    u32 MDC code                                  ST, SIM, CLI
Time Stamp                          9 bytes Elapsed Time (elapsed_time.py)        ST, SIM, CLI
Measurement Duration                FLOAT, seconds                                CLI
Measurement Status                  u16 bits (see ObservationStatus)              CLI, IG
Object Id                           u32                                           ST, CLI
Patient Id                          u8                                            ST, SIM, CLI
Supplemental Info / Derived From /  count u8 + count × u32                        ST, SIM, CLI
Has Member
TLVs (header) / TLV-encoded value   count u8 + count × (type u32, length u16,     ST, SIM, CLI
                                    format type u8, value of that length)
=================================== ============================================ ===============

Where the sources disagree: Measurement Status bits. CLI has invalid 0, questionable 1, not
available 2, calibrating 4, test data 5, early estimate 6, threshold error 14, thresholding
disabled 15 (bit 3 unnamed). The IG lists the ACOM conditions in the order invalid, questionable,
not-available, calibrating, test-data, early-estimate, manually-entered, setting, threshold error,
thresholding disabled. This module follows the IG order for bits 0-7 and CLI for bits 14-15.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from dataclasses import dataclass
from typing import Final, Self

from gateway.ieee11073._buffer import U8, U16, U32, Reader, check_range
from gateway.ieee11073.ghs._common import U8_MAX, U16_MAX, U32_MAX
from gateway.ieee11073.ghs.elapsed_time import ElapsedTime
from gateway.ieee11073.measurement import MeasurementStatus
from gateway.ieee11073.numbers import Float

MAX_LIST_ENTRIES: Final = U8_MAX  # every list in an observation has a u8 count


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


def read_tlvs(r: Reader) -> tuple[Tlv, ...]:
    count = r.u8("TLV count")
    return tuple(Tlv.read(r) for _ in range(count))


def tlvs_bytes(tlvs: tuple[Tlv, ...]) -> bytes:
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
                check_codes(name, codes)
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
            read_codes(r, "supplemental information")
            if f.SUPPLEMENTAL_INFORMATION_PRESENT in flags
            else None
        )
        derived_from = read_codes(r, "derived-from") if f.DERIVED_FROM_PRESENT in flags else None
        has_member = read_codes(r, "has-member") if f.HAS_MEMBER_PRESENT in flags else None
        tlvs = read_tlvs(r) if f.TLVS_PRESENT in flags else None
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
                out += codes_bytes(codes)
        if self.tlvs is not None:
            out += tlvs_bytes(self.tlvs)
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


def check_codes(name: str, codes: tuple[int, ...]) -> None:
    check_range(f"{name} count", len(codes), 0, MAX_LIST_ENTRIES)
    for code in codes:
        check_range(name, code, 0, U32_MAX)


def read_codes(r: Reader, name: str) -> tuple[int, ...]:
    count = r.u8(f"{name} count")
    if r.remaining < count * U32.size:
        raise r.error(f"{count} × 4 bytes of {name}, found {r.remaining}")
    return tuple(r.u32(name) for _ in range(count))


def codes_bytes(codes: tuple[int, ...]) -> bytes:
    return U8.pack(len(codes)) + b"".join(U32.pack(code) for code in codes)
