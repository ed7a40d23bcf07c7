"""The GHS observation time stamp: the GSS "Elapsed Time" structure.

Sources ([ST], [SIM], [CLI], [ETS]: see :mod:`gateway.ieee11073.ghs`); little-endian:

=================================== ============================================ ===============
field                               layout                                       source
=================================== ============================================ ===============
Time Stamp                          9 bytes Elapsed Time: flags u8, value u48,    ST, SIM, CLI,
                                    sync source u8, TZ/DST offset s8 (15 min)     ETS
=================================== ============================================ ===============
"""

from __future__ import annotations

import datetime as _dt
import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, Final, Self

from gateway.ieee11073._buffer import Reader, check_range
from gateway.ieee11073.ghs._common import U8_MAX, U48_MAX, known


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
            return cls(value, TimeFlags(flags), known(TimeSource, source), offset)

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
