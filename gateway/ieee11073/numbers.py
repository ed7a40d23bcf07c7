"""IEEE 11073-20601 SFLOAT-Type (16 bit) and FLOAT-Type (32 bit) numbers.

Both are ``mantissa × 10^exponent`` with a signed exponent in the high bits and a signed
mantissa below it (IEEE 11073-20601 §F.8, Bluetooth PHD Transcoding WP §2.2). The exponent is kept
so that precision survives: 2.0 (``0xF014``) and 2.00 (``0xE0C8``) are different numbers and FHIR
keeps the difference. With exponent 0, five mantissa values are reserved for special values.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Self


class Special(enum.Enum):
    """Special values of SFLOAT/FLOAT (IEEE 11073-20601 §F.8 table F.2)."""

    NAN = "NaN"
    NRES = "NRes"
    POSITIVE_INFINITY = "+INF"
    NEGATIVE_INFINITY = "-INF"
    RESERVED = "reserved"


@dataclass(frozen=True, slots=True)
class _MderFloat:
    """A finite value (``special`` None) or a special value (mantissa/exponent then 0)."""

    mantissa: int = 0
    exponent: int = 0
    special: Special | None = None

    MANTISSA_BITS: ClassVar[int]
    EXPONENT_BITS: ClassVar[int]
    STRUCT: ClassVar[struct.Struct]
    SPECIAL_MANTISSAS: ClassVar[dict[Special, int]]

    def __post_init__(self) -> None:
        if self.special is not None:
            if self.mantissa or self.exponent:
                raise ValueError("a special value has mantissa 0 and exponent 0")
            return
        m_max = (1 << (self.MANTISSA_BITS - 1)) - 1
        e_max = (1 << (self.EXPONENT_BITS - 1)) - 1
        if not -m_max - 1 <= self.mantissa <= m_max:
            raise ValueError(f"mantissa {self.mantissa} outside {-m_max - 1}..{m_max}")
        if not -e_max - 1 <= self.exponent <= e_max:
            raise ValueError(f"exponent {self.exponent} outside {-e_max - 1}..{e_max}")
        if self.exponent == 0 and self._raw_mantissa() in self._SPECIAL_RAW:
            raise ValueError(
                f"mantissa {self.mantissa} with exponent 0 is reserved for a special value"
            )

    _SPECIAL_RAW: ClassVar[frozenset[int]]

    def _raw_mantissa(self) -> int:
        return self.mantissa & ((1 << self.MANTISSA_BITS) - 1)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def of(cls, special: Special) -> Self:
        """The special value ``special``."""
        return cls(special=special)

    @classmethod
    def from_decimal(cls, value: Decimal | str | int, exponent: int | None = None) -> Self:
        """Encode ``value`` keeping its written precision (``"2.00"`` → mantissa 200, exp -2).

        With ``exponent`` given, the value is rounded to that exponent instead. Raises
        ``ValueError`` when the value does not fit the type.
        """
        d = Decimal(value)
        if not d.is_finite():
            raise ValueError(f"{value!r} is not finite; use {cls.__name__}.of(Special...)")
        if exponent is None:
            sign, digits, exp = d.as_tuple()
            assert isinstance(exp, int)
            mantissa = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
            exponent = exp
            m_max = (1 << (cls.MANTISSA_BITS - 1)) - 1
            # Shed trailing zeros of a too-long mantissa before giving up (2000 → 2 × 10^3).
            while abs(mantissa) > m_max and mantissa % 10 == 0:
                mantissa //= 10
                exponent += 1
        else:
            mantissa = int(d.scaleb(-exponent).to_integral_value())
        return cls(mantissa, exponent)

    @classmethod
    def from_raw(cls, raw: int) -> Self:
        """Decode the unsigned integer as it sits in the characteristic value."""
        m_bits = cls.MANTISSA_BITS
        m_raw = raw & ((1 << m_bits) - 1)
        e_raw = raw >> m_bits
        if e_raw == 0:
            for special, value in cls.SPECIAL_MANTISSAS.items():
                if value == m_raw:
                    return cls(special=special)
        mantissa = m_raw - (1 << m_bits) if m_raw >> (m_bits - 1) else m_raw
        e_bits = cls.EXPONENT_BITS
        exponent = e_raw - (1 << e_bits) if e_raw >> (e_bits - 1) else e_raw
        return cls(mantissa, exponent)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> Self:
        """Decode from exactly ``STRUCT.size`` little-endian bytes."""
        (raw,) = cls.STRUCT.unpack(data)
        return cls.from_raw(raw)

    # -- views ---------------------------------------------------------------------------------

    @property
    def raw(self) -> int:
        """The unsigned integer as it sits in the characteristic value."""
        if self.special is not None:
            return self.SPECIAL_MANTISSAS[self.special]
        e_raw = self.exponent & ((1 << self.EXPONENT_BITS) - 1)
        return (e_raw << self.MANTISSA_BITS) | self._raw_mantissa()

    def __bytes__(self) -> bytes:
        return self.STRUCT.pack(self.raw)

    @property
    def is_finite(self) -> bool:
        return self.special is None

    @property
    def decimal(self) -> Decimal | None:
        """The exact value with its precision (``Decimal('2.00')``); None for a special value."""
        if self.special is not None:
            return None
        if self.exponent >= 0:
            return Decimal(self.mantissa * 10**self.exponent)
        return Decimal(self.mantissa).scaleb(self.exponent)

    def __float__(self) -> float:
        if self.special is Special.POSITIVE_INFINITY:
            return float("inf")
        if self.special is Special.NEGATIVE_INFINITY:
            return float("-inf")
        if self.special is not None:
            return float("nan")
        return float(self.mantissa * Decimal(10) ** self.exponent)

    def __str__(self) -> str:
        return self.special.value if self.special is not None else str(self.decimal)


def _special_raw(table: dict[Special, int]) -> frozenset[int]:
    return frozenset(table.values())


_SFLOAT_SPECIALS = {
    Special.NAN: 0x07FF,
    Special.NRES: 0x0800,
    Special.POSITIVE_INFINITY: 0x07FE,
    Special.NEGATIVE_INFINITY: 0x0802,
    Special.RESERVED: 0x0801,
}
_FLOAT_SPECIALS = {
    Special.NAN: 0x007FFFFF,
    Special.NRES: 0x00800000,
    Special.POSITIVE_INFINITY: 0x007FFFFE,
    Special.NEGATIVE_INFINITY: 0x00800002,
    Special.RESERVED: 0x00800001,
}


@dataclass(frozen=True, slots=True)
class SFloat(_MderFloat):
    """SFLOAT-Type: 4-bit exponent, 12-bit mantissa (``0xF014`` = 2.0)."""

    MANTISSA_BITS: ClassVar[int] = 12
    EXPONENT_BITS: ClassVar[int] = 4
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<H")
    SPECIAL_MANTISSAS: ClassVar[dict[Special, int]] = _SFLOAT_SPECIALS
    _SPECIAL_RAW: ClassVar[frozenset[int]] = _special_raw(_SFLOAT_SPECIALS)


@dataclass(frozen=True, slots=True)
class Float(_MderFloat):
    """FLOAT-Type: 8-bit exponent, 24-bit mantissa (``0xFF000014`` = 2.0)."""

    MANTISSA_BITS: ClassVar[int] = 24
    EXPONENT_BITS: ClassVar[int] = 8
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<I")
    SPECIAL_MANTISSAS: ClassVar[dict[Special, int]] = _FLOAT_SPECIALS
    _SPECIAL_RAW: ClassVar[frozenset[int]] = _special_raw(_FLOAT_SPECIALS)


MderNumber = SFloat | Float
"""Either width; what a measurement value holds."""
