"""Current Time service 0x1805 (Bluetooth SIG Current Time Service v1.1, CTS §3).

Current Time 0x2A2B (read, write, notify) and Local Time Information 0x2A0F (read, optionally
write). Field layouts from the GATT Specification Supplement (GSS) entries Current Time, Exact Time
256, Day Date Time, Day of Week, Date Time (§3.70), Local Time Information, Time Zone and DST
Offset; CTS §3.1 (Current Time) and §3.2 (Local Time Information).

The gateway writes Current Time (and, when the device allows it, Local Time Information) to set a
sensor's clock: :meth:`CurrentTime.from_datetime` builds the value from the gateway's wall clock.
"""

from __future__ import annotations

import datetime as _dt
import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from gateway.ieee11073._buffer import Reader, check_range
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.registry import register

SERVICE_UUID = 0x1805

# GSS Day of Week: 0 = unknown, 1 = Monday … 7 = Sunday (ISO 8601 weekday numbers).
DAY_OF_WEEK_UNKNOWN = 0
DAY_OF_WEEK_MAX = 7
FRACTIONS_PER_SECOND = 256  # GSS Exact Time 256: Fractions256: 1/256 s
MICROSECONDS_PER_SECOND = 1_000_000

# GSS Time Zone: offset from UTC in 15-minute units, -48 (UTC-12:00) … +56 (UTC+14:00);
# -128 = time zone offset not known.
TIME_ZONE_MIN, TIME_ZONE_MAX = -48, 56
TIME_ZONE_UNKNOWN = -128
TIME_ZONE_UNIT = _dt.timedelta(minutes=15)


class AdjustReason(enum.IntFlag):
    """Current Time Adjust Reason (GSS Current Time, CTS §3.1); bits 4-7 are reserved and kept."""

    MANUAL_TIME_UPDATE = 0x01
    EXTERNAL_REFERENCE_TIME_UPDATE = 0x02
    CHANGE_OF_TIME_ZONE = 0x04
    CHANGE_OF_DST = 0x08


class DstOffset(enum.IntEnum):
    """DST Offset (GSS DST Offset); other values are reserved (kept as plain integers)."""

    STANDARD_TIME = 0
    HALF_AN_HOUR_DAYLIGHT_TIME = 2  # +0.5 h
    DAYLIGHT_TIME = 4  # +1 h
    DOUBLE_DAYLIGHT_TIME = 8  # +2 h
    UNKNOWN = 255


NO_ADJUST_REASON = AdjustReason(0)

# DST offset code → offset (GSS DST Offset): the code counts quarter hours.
_DST_CODES_BY_OFFSET = {
    _dt.timedelta(0): DstOffset.STANDARD_TIME,
    _dt.timedelta(minutes=30): DstOffset.HALF_AN_HOUR_DAYLIGHT_TIME,
    _dt.timedelta(hours=1): DstOffset.DAYLIGHT_TIME,
    _dt.timedelta(hours=2): DstOffset.DOUBLE_DAYLIGHT_TIME,
}


@register
@dataclass(frozen=True, slots=True)
class CurrentTime:
    """Current Time 0x2A2B: Exact Time 256 (Day Date Time + Fractions256) + Adjust Reason.

    10 bytes: Date Time (7), Day of Week (1), Fractions256 (1), Adjust Reason (1). ``date_time`` is
    the device's local wall-clock time (no time zone; that is Local Time Information's job).
    """

    date_time: DateTime
    day_of_week: int = DAY_OF_WEEK_UNKNOWN
    fractions256: int = 0
    adjust_reason: AdjustReason = NO_ADJUST_REASON

    UUID: ClassVar[int] = 0x2A2B
    NAME: ClassVar[str] = "Current Time"
    TAIL: ClassVar[struct.Struct] = struct.Struct("<BBB")  # day of week, fractions256, reason
    SIZE: ClassVar[int] = DateTime.SIZE + 3

    def __post_init__(self) -> None:
        check_range("day of week", self.day_of_week, DAY_OF_WEEK_UNKNOWN, DAY_OF_WEEK_MAX)
        check_range("fractions256", self.fractions256, 0, FRACTIONS_PER_SECOND - 1)
        check_range("adjust reason", int(self.adjust_reason), 0, 0xFF)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        date_time = DateTime.read(r)
        with r.field("day of week, fractions256 and adjust reason"):
            day_of_week, fractions, reason = r.unpack(cls.TAIL, "day of week, fractions, reason")
            value = cls(date_time, day_of_week, fractions, AdjustReason(reason))
        r.end()
        return value

    def __bytes__(self) -> bytes:
        return bytes(self.date_time) + self.TAIL.pack(
            self.day_of_week, self.fractions256, int(self.adjust_reason)
        )

    @classmethod
    def from_datetime(
        cls,
        value: _dt.datetime,
        reason: AdjustReason = AdjustReason.MANUAL_TIME_UPDATE,
    ) -> Self:
        """The value that sets a device clock to ``value``'s wall-clock time.

        An aware ``value`` contributes its local wall time (the device has no time zone here; send
        :class:`LocalTimeInformation` for that). Sub-second time goes into Fractions256, rounded
        down.
        """
        return cls(
            DateTime.from_datetime(value),
            value.isoweekday(),
            value.microsecond * FRACTIONS_PER_SECOND // MICROSECONDS_PER_SECOND,
            reason,
        )

    def to_datetime(self, tz: _dt.tzinfo | None = None) -> _dt.datetime | None:
        """The time as a ``datetime`` (fractions → microseconds), or None if the date is unknown."""
        base = self.date_time.to_datetime(tz)
        if base is None:
            return None
        micro = self.fractions256 * MICROSECONDS_PER_SECOND // FRACTIONS_PER_SECOND
        return base.replace(microsecond=micro)


@register
@dataclass(frozen=True, slots=True)
class LocalTimeInformation:
    """Local Time Information 0x2A0F: Time Zone (s8, 15 min units) + DST Offset (u8).

    ``dst_offset`` keeps reserved codes as plain integers so ``__bytes__`` stays exact.
    """

    time_zone: int
    dst_offset: DstOffset | int = DstOffset.STANDARD_TIME

    UUID: ClassVar[int] = 0x2A0F
    NAME: ClassVar[str] = "Local Time Information"
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<bB")

    def __post_init__(self) -> None:
        if self.time_zone != TIME_ZONE_UNKNOWN:
            check_range("time zone", self.time_zone, TIME_ZONE_MIN, TIME_ZONE_MAX)
        check_range("DST offset", int(self.dst_offset), 0, 0xFF)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        with r.field("Local Time Information"):
            time_zone, dst = r.unpack(cls.STRUCT, "time zone and DST offset")
            try:
                dst_offset: DstOffset | int = DstOffset(dst)
            except ValueError:
                dst_offset = dst  # reserved for future use: keep, do not fail
            value = cls(time_zone, dst_offset)
        r.end()
        return value

    def __bytes__(self) -> bytes:
        return self.STRUCT.pack(self.time_zone, int(self.dst_offset))

    @classmethod
    def from_datetime(cls, value: _dt.datetime) -> Self:
        """Time zone and DST of an aware ``value`` (``utcoffset() - dst()`` and ``dst()``).

        Raises ``ValueError`` for a naive datetime, an offset that is not a multiple of 15 minutes
        or outside -12:00…+14:00, or a DST amount the characteristic cannot express.
        """
        offset = value.utcoffset()
        if offset is None:
            raise ValueError("an aware datetime is needed to derive the time zone")
        dst = value.dst() or _dt.timedelta(0)
        standard = offset - dst
        if standard % TIME_ZONE_UNIT:
            raise ValueError(f"UTC offset {standard} is not a multiple of 15 minutes")
        try:
            dst_code = _DST_CODES_BY_OFFSET[dst]
        except KeyError:
            raise ValueError(f"DST offset {dst} has no DST Offset code") from None
        return cls(standard // TIME_ZONE_UNIT, dst_code)

    @property
    def utc_offset(self) -> _dt.timedelta | None:
        """Standard offset plus DST, or None when either is unknown or reserved."""
        if self.time_zone == TIME_ZONE_UNKNOWN:
            return None
        for offset, code in _DST_CODES_BY_OFFSET.items():
            if code == self.dst_offset:
                return self.time_zone * TIME_ZONE_UNIT + offset
        return None
