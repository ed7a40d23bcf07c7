"""GHS segmentation: the header byte of every observation notification, splitting a payload into
notifications and joining them again (:class:`Reassembler`, pure: no I/O, no clock).

Sources ([ST], [SIM], [CLI]: see :mod:`gateway.ieee11073.ghs`; SIM ByteExtensions.kt
``asBLEDataSegments``, CLI GenericHealthSensorPacketHandler.kt):

=================================== ============================================ ===============
field                               layout                                       source
=================================== ============================================ ===============
Segmentation Header                 u8: bit0 first, bit1 last, bits2-7 rolling   ST, SIM, CLI
                                    counter 0-63, continuing across observations
=================================== ============================================ ===============

Where the sources disagree: SIM continues the rolling segment counter across observations and ST
increments it before each segment; a first segment is therefore accepted with any counter and
continuation segments must follow it by one (mod 64).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, Self, TypeVar

from gateway.errors import DecodeError
from gateway.ieee11073._buffer import U8, U16, Reader, check_range
from gateway.ieee11073.ghs._common import (
    LIVE_HEALTH_OBSERVATIONS_NAME,
    LIVE_HEALTH_OBSERVATIONS_UUID,
    STORED_HEALTH_OBSERVATIONS_NAME,
    STORED_HEALTH_OBSERVATIONS_UUID,
    label,
)
from gateway.ieee11073.ghs.acom import (
    LENGTH_FIELD_OFFSET,
    MIN_LENGTH,
    RECORD_NUMBER_SIZE,
    AcomObject,
    StoredHealthObservation,
    decode_observation,
)

SEGMENT_FIRST: Final = 0x01
SEGMENT_LAST: Final = 0x02
SEGMENT_COUNTER_SHIFT: Final = 2
SEGMENT_COUNTER_MODULO: Final = 64
SEGMENTATION_HEADER_SIZE: Final = 1
ATT_NOTIFICATION_OVERHEAD: Final = 3  # Core Vol 3 Part F §3.4.7.1: op code + attribute handle
ATT_MTU_MIN: Final = 23  # Core Vol 3 Part F §3.2.8: LE minimum ATT_MTU
ATT_MTU_MAX: Final = 517  # 512-byte attribute value + 5 (largest useful ATT_MTU)
DEFAULT_MAX_OBSERVATION_SIZE: Final = 16 * 1024  # Reassembler cap; the format allows 65535


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
            label(LIVE_HEALTH_OBSERVATIONS_NAME, LIVE_HEALTH_OBSERVATIONS_UUID),
            length_offset=LENGTH_FIELD_OFFSET,
            max_size=max_size,
        )

    @staticmethod
    def stored(
        max_size: int = DEFAULT_MAX_OBSERVATION_SIZE,
    ) -> Reassembler[StoredHealthObservation]:
        """For Stored Health Observations 0x2BDD (record number, then the observation)."""
        return Reassembler(
            StoredHealthObservation.from_bytes,
            label(STORED_HEALTH_OBSERVATIONS_NAME, STORED_HEALTH_OBSERVATIONS_UUID),
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


def whole_segment(data: bytes, what: str) -> tuple[int, bytes]:
    """The counter and payload of a notification that must hold a whole observation (first and
    last bits set)."""
    r = Reader(data, what)
    header = SegmentationHeader.from_byte(r.u8("segmentation header"))
    if not (header.first and header.last):
        raise r.error(
            "a single complete segment (first and last bits set); feed segmented notifications "
            f"to Reassembler, found first={header.first} last={header.last}",
            offset=0,
        )
    return header.counter, data[SEGMENTATION_HEADER_SIZE:]


def as_whole_segment(payload: bytes, counter: int) -> bytes:
    """``payload`` as one notification value with the first and last bits set."""
    return U8.pack(int(SegmentationHeader(first=True, last=True, counter=counter))) + payload
