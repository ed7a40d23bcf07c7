"""Date Time (0x2A08) and the Current Time characteristic's Exact Time 256 parts.

Date Time is 7 bytes: year u16, month, day, hours, minutes, seconds (GATT Specification
Supplement §3.70). Year, month or day 0 means "not known".
"""

from __future__ import annotations

import datetime as _dt
import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from gateway.ieee11073._buffer import Reader, check_range

YEAR_UNKNOWN = 0  # GSS §3.70: 0 = year is not known
YEAR_MIN, YEAR_MAX = 1582, 9999  # GSS §3.70 valid range


@dataclass(frozen=True, slots=True)
class DateTime:
    """A device's own wall-clock time; zero year/month/day mean unknown (no time zone)."""

    year: int
    month: int
    day: int
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    UUID: ClassVar[int] = 0x2A08
    NAME: ClassVar[str] = "Date Time"
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<HBBBBB")
    SIZE: ClassVar[int] = 7

    def __post_init__(self) -> None:
        if self.year != YEAR_UNKNOWN:
            check_range("year", self.year, YEAR_MIN, YEAR_MAX)
        check_range("month", self.month, 0, 12)
        check_range("day", self.day, 0, 31)
        check_range("hours", self.hours, 0, 23)
        check_range("minutes", self.minutes, 0, 59)
        check_range("seconds", self.seconds, 0, 59)

    @classmethod
    def read(cls, reader: Reader) -> Self:
        """Read the 7 bytes at the reader's offset (used inside other characteristics)."""
        with reader.field("Date Time"):
            fields = reader.unpack(cls.STRUCT, "Date Time")
            return cls(*fields)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        reader = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        value = cls.read(reader)
        reader.end()
        return value

    def __bytes__(self) -> bytes:
        return self.STRUCT.pack(
            self.year, self.month, self.day, self.hours, self.minutes, self.seconds
        )

    @property
    def is_complete(self) -> bool:
        """True when year, month and day are all known."""
        return bool(self.year and self.month and self.day)

    def to_datetime(self, tz: _dt.tzinfo | None = None) -> _dt.datetime | None:
        """A ``datetime`` when the date is complete and valid, else None."""
        if not self.is_complete:
            return None
        try:
            return _dt.datetime(
                self.year, self.month, self.day, self.hours, self.minutes, self.seconds, tzinfo=tz
            )
        except ValueError:  # 31 February and friends: a complete but impossible date
            return None

    @classmethod
    def from_datetime(cls, value: _dt.datetime) -> Self:
        return cls(value.year, value.month, value.day, value.hour, value.minute, value.second)

    def compact(self) -> str:
        """``YYYYMMDDhhmmss`` with zeros for unknown parts: the PHD IG identifier's timestamp."""
        return (
            f"{self.year:04d}{self.month:02d}{self.day:02d}"
            f"{self.hours:02d}{self.minutes:02d}{self.seconds:02d}"
        )
