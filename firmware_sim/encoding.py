"""Firmware-side encoders for IEEE 11073-20601 numbers and the Bluetooth Date Time.

Written as sensor firmware writes them: values arrive as scaled integers (a mantissa and the
exponent the firmware chose for the quantity), get range-checked and are packed with ``struct``.
These are deliberately independent of the gateway's codecs so that end-to-end tests cross-check two
implementations.

SFLOAT (16 bit): 4-bit signed exponent above a 12-bit signed mantissa; FLOAT (32 bit): 8-bit signed
exponent above a 24-bit signed mantissa (IEEE 11073-20601 §F.8; Bluetooth "Personal Health Devices
Transcoding" white paper §2.2). The five mantissas nearest the ends of the range are reserved for
special values (table F.2), so a finite value never uses them.
"""

from __future__ import annotations

import datetime as dt
import struct
from decimal import Decimal
from typing import Final

U8: Final = struct.Struct("<B")
U16: Final = struct.Struct("<H")
U32: Final = struct.Struct("<I")

# -- SFLOAT (IEEE 11073-20601 §F.8, table F.2) ---------------------------------------------------
SFLOAT_NAN: Final = 0x07FF
SFLOAT_NRES: Final = 0x0800
SFLOAT_POSITIVE_INFINITY: Final = 0x07FE
SFLOAT_NEGATIVE_INFINITY: Final = 0x0802
SFLOAT_RESERVED: Final = 0x0801
SFLOAT_MANTISSA_MAX: Final = 0x07FD  # 2045: 2046 and 2047 are +INF and NaN
SFLOAT_MANTISSA_MIN: Final = -0x07FD  # -2045: -2046..-2048 are -INF, reserved, NRes
SFLOAT_EXPONENT_MIN, SFLOAT_EXPONENT_MAX = -8, 7

# -- FLOAT (IEEE 11073-20601 §F.8, table F.2) ----------------------------------------------------
FLOAT_NAN: Final = 0x007FFFFF
FLOAT_NRES: Final = 0x00800000
FLOAT_POSITIVE_INFINITY: Final = 0x007FFFFE
FLOAT_NEGATIVE_INFINITY: Final = 0x00800002
FLOAT_RESERVED: Final = 0x00800001
FLOAT_MANTISSA_MAX: Final = 0x007FFFFD
FLOAT_MANTISSA_MIN: Final = -0x007FFFFD
FLOAT_EXPONENT_MIN, FLOAT_EXPONENT_MAX = -128, 127

# -- Date Time 0x2A08 (GATT Specification Supplement §3.70) -------------------------------------
DATE_TIME: Final = struct.Struct("<HBBBBB")
YEAR_MIN, YEAR_MAX = 1582, 9999


def sfloat(mantissa: int, exponent: int = 0) -> int:
    """The 16-bit SFLOAT word for ``mantissa × 10^exponent``."""
    if not SFLOAT_MANTISSA_MIN <= mantissa <= SFLOAT_MANTISSA_MAX:
        raise ValueError(f"SFLOAT mantissa {mantissa} outside ±{SFLOAT_MANTISSA_MAX}")
    if not SFLOAT_EXPONENT_MIN <= exponent <= SFLOAT_EXPONENT_MAX:
        raise ValueError(f"SFLOAT exponent {exponent} outside -8..7")
    return ((exponent & 0x0F) << 12) | (mantissa & 0x0FFF)


def float32(mantissa: int, exponent: int = 0) -> int:
    """The 32-bit FLOAT word for ``mantissa × 10^exponent``."""
    if not FLOAT_MANTISSA_MIN <= mantissa <= FLOAT_MANTISSA_MAX:
        raise ValueError(f"FLOAT mantissa {mantissa} outside ±{FLOAT_MANTISSA_MAX}")
    if not FLOAT_EXPONENT_MIN <= exponent <= FLOAT_EXPONENT_MAX:
        raise ValueError(f"FLOAT exponent {exponent} outside -128..127")
    return ((exponent & 0xFF) << 24) | (mantissa & 0x00FFFFFF)


def sfloat_of(value: float, exponent: int = 0) -> int:
    """Round ``value`` to ``10^exponent`` and encode it as SFLOAT (a firmware's fixed point)."""
    return sfloat(round(Decimal(repr(value)).scaleb(-exponent)), exponent)


def float32_of(value: float, exponent: int = 0) -> int:
    """Round ``value`` to ``10^exponent`` and encode it as FLOAT."""
    return float32(round(Decimal(repr(value)).scaleb(-exponent)), exponent)


def float32_exact(value: Decimal) -> int:
    """Encode a decimal exactly (no rounding): 0.004 → mantissa 4, exponent -3."""
    if not value.is_finite():
        raise ValueError(f"{value} is not finite")
    normal = value.normalize()
    sign, digits, exponent = normal.as_tuple()
    if not isinstance(exponent, int):  # pragma: no cover - excluded by is_finite above
        raise TypeError(exponent)
    mantissa = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    while exponent > FLOAT_EXPONENT_MAX and abs(mantissa) * 10 <= FLOAT_MANTISSA_MAX:
        mantissa, exponent = mantissa * 10, exponent - 1
    return float32(mantissa, exponent)


def pack_sfloat(word: int) -> bytes:
    return U16.pack(word)


def pack_float(word: int) -> bytes:
    return U32.pack(word)


def date_time(when: dt.datetime) -> bytes:
    """Date Time (7 bytes): year u16, month, day, hours, minutes, seconds."""
    if not YEAR_MIN <= when.year <= YEAR_MAX:
        raise ValueError(f"year {when.year} outside {YEAR_MIN}..{YEAR_MAX}")
    return DATE_TIME.pack(when.year, when.month, when.day, when.hour, when.minute, when.second)
