"""Offset-walking reader and writer for characteristic values.

Radio bytes are hostile: every read checks the length first and raises :class:`DecodeError` naming
the characteristic, the offset and what was expected. Codecs never slice raw bytes themselves.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager

from gateway.errors import DecodeError
from gateway.ieee11073.numbers import Float, SFloat

U8 = struct.Struct("<B")
U16 = struct.Struct("<H")
U32 = struct.Struct("<I")


class Reader:
    """Reads little-endian fields from ``data``; ``what`` names the characteristic in errors."""

    __slots__ = ("data", "offset", "what")

    def __init__(self, data: bytes | bytearray | memoryview, what: str) -> None:
        self.data = bytes(data)
        self.offset = 0
        self.what = what

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset

    def error(self, expected: str, offset: int | None = None) -> DecodeError:
        return DecodeError(self.what, self.offset if offset is None else offset, expected)

    def _need(self, size: int, field: str) -> None:
        if self.remaining < size:
            got = self.remaining
            raise self.error(f"{size} byte(s) of {field}, found {got}")

    def unpack(self, st: struct.Struct, field: str) -> tuple[int, ...]:
        self._need(st.size, field)
        values = st.unpack_from(self.data, self.offset)
        self.offset += st.size
        return values

    def u8(self, field: str) -> int:
        return self.unpack(U8, field)[0]

    def u16(self, field: str) -> int:
        return self.unpack(U16, field)[0]

    def u24(self, field: str) -> int:
        self._need(3, field)
        value = int.from_bytes(self.data[self.offset : self.offset + 3], "little")
        self.offset += 3
        return value

    def u32(self, field: str) -> int:
        return self.unpack(U32, field)[0]

    def sfloat(self, field: str) -> SFloat:
        return SFloat.from_raw(self.u16(field))

    def float32(self, field: str) -> Float:
        return Float.from_raw(self.u32(field))

    def take(self, size: int, field: str) -> bytes:
        self._need(size, field)
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def rest(self) -> bytes:
        chunk = self.data[self.offset :]
        self.offset = len(self.data)
        return chunk

    def end(self) -> None:
        """Assert the value is fully consumed: trailing bytes mean flags and layout disagree."""
        if self.remaining:
            raise self.error(f"end of value, found {self.remaining} extra byte(s)")

    @contextmanager
    def field(self, name: str) -> Iterator[None]:
        """Turn a range check (``ValueError``) raised while building ``name`` into a DecodeError."""
        start = self.offset
        try:
            yield
        except DecodeError:
            raise
        except ValueError as exc:
            raise self.error(f"valid {name} ({exc})", offset=start) from exc


def check_range(name: str, value: int, low: int, high: int) -> None:
    """Raise ``ValueError`` unless ``low <= value <= high``; used in ``__post_init__``."""
    if not low <= value <= high:
        raise ValueError(f"{name} {value} outside {low}..{high}")
