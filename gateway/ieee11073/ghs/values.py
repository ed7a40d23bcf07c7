"""ACOM observation values: numeric, discrete, string, sample array, compound, state/event, TLV.

Sources ([ST], [SIM], [CLI]: see :mod:`gateway.ieee11073.ghs`); little-endian:

=================================== ============================================ ===============
field                               layout                                       source
=================================== ============================================ ===============
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
TLV-encoded value                   count u8 + TLVs (header.py)                   ST, SIM, CLI
=================================== ============================================ ===============

Where the sources disagree or are silent, and what this module does:

- Number of samples: ST's SampleArrayObservation example has a u32 (its Length agrees); its two
  ECG waveform examples have a single byte (one of them with a Length that fits neither). SIM and
  CLI use u32, as does this module.
- Sample signedness: no source says. Samples are decoded as unsigned integers, the IEEE 11073
  default (20601 needs an explicit marker for signed samples and GHSS has no such field; ST's ECG
  examples are unsigned values around a mid-scale code): physical value = offset + scale factor ×
  sample. :data:`SAMPLES_SIGNED` is the one switch.
- Sample arrays must have 1-4 bytes per sample, at least 1 sample per period and a whole number of
  periods (FHIR SampledData needs that for its dimensions); SIM's default of 255 samples per
  period with 1-dimensional data would be rejected.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final, Self

from gateway.ieee11073._buffer import U8, U16, U32, Reader, check_range
from gateway.ieee11073.ghs._common import U8_MAX, U16_MAX, U32_MAX, known
from gateway.ieee11073.ghs.header import (
    MAX_LIST_ENTRIES,
    ObservationClass,
    Tlv,
    check_codes,
    codes_bytes,
    read_codes,
    read_tlvs,
    tlvs_bytes,
)
from gateway.ieee11073.measurement import SampleArray
from gateway.ieee11073.numbers import Float

SAMPLES_SIGNED: Final = False  # see the module docstring: 11073 samples are unsigned by default
BYTES_PER_SAMPLE_MAX: Final = 4
SAMPLE_ARRAY_HEAD = struct.Struct("<HIIIBBI")  # unit, scale, offset, period, spp, bps, count
_SAMPLE_FORMAT_CODES: Final = {1: "B", 2: "H", 4: "I"}


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
        check_codes("event code", self.codes)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(read_codes(r, "event code"))

    def __bytes__(self) -> bytes:
        return codes_bytes(self.codes)


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
        kind = known(ObservationClass, raw_class)
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
        return cls(read_tlvs(r))

    def __bytes__(self) -> bytes:
        return tlvs_bytes(self.entries)


ObservationValue = ComponentValue | CompoundValue | TlvEncodedValue

VALUE_READERS: Final[dict[ObservationClass, Callable[[Reader], ObservationValue]]] = {
    **COMPONENT_READERS,
    ObservationClass.COMPOUND: CompoundValue.read,
    ObservationClass.TLV_ENCODED: TlvEncodedValue.read,
}
