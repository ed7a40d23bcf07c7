"""The GHS characteristics, registered as codecs: Live and Stored Health Observations (one whole
segment each), GHS Control Point and Health Sensor Features.

Sources ([ST], [SIM], [CLI]: see :mod:`gateway.ieee11073.ghs`); little-endian:

=================================== ============================================ ===============
field                               layout                                       source
=================================== ============================================ ===============
Live / Stored Health Observations   segmentation header (segmentation.py), then   ST, SIM, CLI
                                    the segmented data (acom.py)
GHS Control Point                   u8: 0x01 start live, 0x02 stop; responses     ST, SIM, CLI
                                    0x80 success, 0x81 server busy, 0x82 error
                                    (live observations not configured)
Health Sensor Features              flags u8 (bit0 device specializations), count ST, SIM, CLI
                                    u8 + u32 types, [count u8 + (u16 partition-8
                                    term code, u8 version)]
=================================== ============================================ ===============
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, Final, Self

from gateway.ieee11073._buffer import U8, Reader, check_range
from gateway.ieee11073.ghs._common import (
    GHS_CONTROL_POINT_UUID,
    HEALTH_SENSOR_FEATURES_UUID,
    LIVE_HEALTH_OBSERVATIONS_NAME,
    LIVE_HEALTH_OBSERVATIONS_UUID,
    STORED_HEALTH_OBSERVATIONS_NAME,
    STORED_HEALTH_OBSERVATIONS_UUID,
    U8_MAX,
    U16_MAX,
    U32_MAX,
    known,
    label,
)
from gateway.ieee11073.ghs.acom import AcomObject, StoredHealthObservation, decode_observation
from gateway.ieee11073.ghs.header import check_codes, codes_bytes, read_codes
from gateway.ieee11073.ghs.segmentation import (
    SEGMENT_COUNTER_MODULO,
    as_whole_segment,
    whole_segment,
)
from gateway.ieee11073.measurement import Measurement
from gateway.ieee11073.registry import register

MDC_PARTITION_SHIFT: Final = 16
MDC_PARTITION_DEVICE_SPECIALIZATION: Final = 8  # IEEE 11073-10101 partition 8 (MDC_DEV_SPEC_*)


@register
@dataclass(frozen=True, slots=True)
class LiveHealthObservations:
    """Live Health Observations 0x2B8B holding one complete segment (first and last bits set).

    Longer observations span several notifications: feed those to :meth:`Reassembler.live`.
    """

    observation: AcomObject
    segment_counter: int = 0

    UUID: ClassVar[int] = LIVE_HEALTH_OBSERVATIONS_UUID
    NAME: ClassVar[str] = LIVE_HEALTH_OBSERVATIONS_NAME

    def __post_init__(self) -> None:
        check_range("segment counter", self.segment_counter, 0, SEGMENT_COUNTER_MODULO - 1)

    @classmethod
    def describe(cls) -> str:
        return label(cls.NAME, cls.UUID)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        counter, payload = whole_segment(data, cls.describe())
        return cls(decode_observation(payload, cls.describe()), counter)

    def __bytes__(self) -> bytes:
        return as_whole_segment(bytes(self.observation), self.segment_counter)

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
    NAME: ClassVar[str] = STORED_HEALTH_OBSERVATIONS_NAME

    def __post_init__(self) -> None:
        check_range("segment counter", self.segment_counter, 0, SEGMENT_COUNTER_MODULO - 1)
        check_range("record number", self.record_number, 0, U32_MAX)

    @classmethod
    def describe(cls) -> str:
        return label(cls.NAME, cls.UUID)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        counter, payload = whole_segment(data, cls.describe())
        stored = StoredHealthObservation.from_bytes(payload, cls.describe())
        return cls(stored.record_number, stored.observation, counter)

    def __bytes__(self) -> bytes:
        return as_whole_segment(bytes(self.stored), self.segment_counter)

    @property
    def stored(self) -> StoredHealthObservation:
        return StoredHealthObservation(self.record_number, self.observation)

    def measurements(self) -> tuple[Measurement, ...]:
        return self.stored.measurements()


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
        r = Reader(data, label(cls.NAME, cls.UUID))
        value = cls(known(GhsControlPointOpCode, r.u8("op code")))
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
        check_codes("observation type", self.observation_types)
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
        r = Reader(data, label(cls.NAME, cls.UUID))
        flags = r.u8("flags")
        types = read_codes(r, "observation type")
        specs: tuple[DeviceSpecialization, ...] | None = None
        if flags & FeatureFlags.DEVICE_SPECIALIZATIONS_PRESENT:
            count = r.u8("device specialization count")
            raw = [r.unpack(DEVICE_SPECIALIZATION, "device specialization") for _ in range(count)]
            specs = tuple(DeviceSpecialization(code, version) for code, version in raw)
        r.end()
        return cls(types, specs, flags & ~int(FeatureFlags.DEVICE_SPECIALIZATIONS_PRESENT))

    def __bytes__(self) -> bytes:
        out = U8.pack(self.flags) + codes_bytes(self.observation_types)
        if self.device_specializations is not None:
            out += U8.pack(len(self.device_specializations))
            for spec in self.device_specializations:
                out += DEVICE_SPECIALIZATION.pack(spec.term_code, spec.version)
        return out
