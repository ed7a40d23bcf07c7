"""ACOM observations and bundles as GHS frames them (class, length, flags), and their measurements.

Sources ([ST], [SIM], [CLI]: see :mod:`gateway.ieee11073.ghs`); little-endian:

=================================== ============================================ ===============
field                               layout                                       source
=================================== ============================================ ===============
stored: Record Number               u32 before the observation, inside the        ST, SIM, CLI
                                    segmented data (so in the first segment)
Observation Class Type              u8 (header.py)                                ST, SIM, CLI
Length                              u16: the bytes after the Length field (flags  ST (SIM/CLI
                                    onwards)                                     differ, below)
Observation Flags and header fields header.py                                     ST, SIM, CLI
value                               values.py, or for a bundle:                   ST, SIM, CLI
bundle value                        count u8 + complete observations (own class,  ST, SIM, CLI
                                    length, flags); bundle header fields apply to
                                    members that omit them
=================================== ============================================ ===============

Where the sources disagree or are silent, and what this module does:

- Length: ST counts the bytes after the Length field (its SpO2 example: Length 27 for a 30-byte
  object; its qualification database stores ``sizeof(object) - 3``); SIM and CLI count the whole
  object including class and length. This module follows ST, the newer implementation that is run
  against the SIG's tester; a Philips-style object therefore decodes with a length error.
- Observation Type is mandatory for a single observation (CLI comment quoting the spec), yet ST's
  string and sample-array examples have none. Decoding accepts that; such observations give no
  Measurement (in a bundle the bundle's type applies).

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
import struct
from dataclasses import dataclass
from typing import Final, Self

from gateway.ieee11073._buffer import U8, U16, U32, Reader, check_range
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.ghs._common import U16_MAX, U32_MAX
from gateway.ieee11073.ghs.elapsed_time import ElapsedTime
from gateway.ieee11073.ghs.header import (
    MAX_LIST_ENTRIES,
    NO_HEADER,
    STATUS_TO_MEASUREMENT_STATUS,
    SUPPORTED_OBSERVATION_FLAGS,
    ObservationClass,
    ObservationFlags,
    ObservationHeader,
    ObservationStatus,
)
from gateway.ieee11073.ghs.values import (
    VALUE_READERS,
    CompoundValue,
    NumericValue,
    ObservationValue,
    SampleArrayValue,
)
from gateway.ieee11073.measurement import Measurement, MeasurementStatus

# -- ACOM object header: class u8, length u16, flags u16 ------------------------------------------
OBJECT_HEADER = struct.Struct("<BHH")
LENGTH_FIELD_OFFSET: Final = 1  # the u16 length follows the class type byte
LENGTH_COUNTS_FROM: Final = 3  # ST: Length counts the bytes after itself (flags onwards)
MIN_LENGTH: Final = U16.size  # at least the flags
RECORD_NUMBER_SIZE: Final = U32.size  # stored observations: u32 record number before the object


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
class StoredHealthObservation:
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
