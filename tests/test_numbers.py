"""SFLOAT / FLOAT (IEEE 11073-20601 §F.8) and Date Time (GSS Date Time) as the codecs use them."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.errors import DecodeError
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.numbers import Float, SFloat, Special

# IEEE 11073-20601 §F.8 table F.2 (reproduced in docs/standards.md): the reserved special values.
SPECIALS = [
    (Special.NAN, 0x07FF, 0x007FFFFF),
    (Special.NRES, 0x0800, 0x00800000),
    (Special.POSITIVE_INFINITY, 0x07FE, 0x007FFFFE),
    (Special.NEGATIVE_INFINITY, 0x0802, 0x00800002),
    (Special.RESERVED, 0x0801, 0x00800001),
]


@pytest.mark.parametrize(("special", "sfloat_raw", "float_raw"), SPECIALS)
def test_special_values_decode_both_widths(
    special: Special, sfloat_raw: int, float_raw: int
) -> None:
    assert SFloat.from_raw(sfloat_raw) == SFloat(special=special)
    assert Float.from_raw(float_raw) == Float(special=special)


@pytest.mark.parametrize(("special", "sfloat_raw", "float_raw"), SPECIALS)
def test_special_values_encode_both_widths(
    special: Special, sfloat_raw: int, float_raw: int
) -> None:
    assert SFloat.of(special).raw == sfloat_raw
    assert bytes(SFloat.of(special)) == sfloat_raw.to_bytes(2, "little")
    assert Float.of(special).raw == float_raw
    assert bytes(Float.of(special)) == float_raw.to_bytes(4, "little")


@pytest.mark.parametrize(("special", "sfloat_raw", "float_raw"), SPECIALS)
def test_special_values_have_no_decimal(special: Special, sfloat_raw: int, float_raw: int) -> None:
    for value in (SFloat.from_raw(sfloat_raw), Float.from_raw(float_raw)):
        assert value.decimal is None
        assert not value.is_finite
        assert str(value) == special.value


def test_special_values_as_python_floats() -> None:
    assert float(SFloat.of(Special.POSITIVE_INFINITY)) == float("inf")
    assert float(Float.of(Special.NEGATIVE_INFINITY)) == float("-inf")
    assert math.isnan(float(SFloat.of(Special.NAN)))
    assert math.isnan(float(Float.of(Special.NRES)))


def test_special_mantissa_with_nonzero_exponent_is_a_number() -> None:
    # Only exponent 0 reserves the special mantissas (§F.8): 0x17FF is 2047 × 10^1.
    assert SFloat.from_raw(0x17FF) == SFloat(2047, 1)
    assert Float.from_raw(0x017FFFFF) == Float(0x7FFFFF, 1)


# docs/standards.md examples (IEEE 11073-20601 §F.8; 0xF014 and 0xE0C8 from the PHD IG "MDER FLOATs
# and SFLOATs" page).
@pytest.mark.parametrize(
    ("raw", "expected", "decimal"),
    [
        (0xF014, SFloat(20, -1), "2.0"),
        (0xE0C8, SFloat(200, -2), "2.00"),
        (0x1002, SFloat(2, 1), "20"),
    ],
)
def test_design_sfloat_examples(raw: int, expected: SFloat, decimal: str) -> None:
    value = SFloat.from_raw(raw)
    assert value == expected
    assert value.decimal == Decimal(decimal)
    assert str(value.decimal) == decimal  # the precision survives, not just the value
    assert value.raw == raw


def test_design_float_example() -> None:
    value = Float.from_raw(0xFF000014)
    assert value == Float(20, -1)
    assert str(value.decimal) == "2.0"
    assert bytes(value) == bytes.fromhex("140000FF")


def test_precision_is_kept_apart() -> None:
    assert SFloat.from_raw(0xF014) != SFloat.from_raw(0xE0C8)
    assert SFloat.from_raw(0xF014).decimal == SFloat.from_raw(0xE0C8).decimal


def test_every_sfloat_round_trips() -> None:
    # The whole 16-bit space: raw → value → raw and bytes → value → bytes.
    for raw in range(1 << 16):
        value = SFloat.from_raw(raw)
        assert value.raw == raw, hex(raw)
        data = raw.to_bytes(2, "little")
        assert SFloat.from_bytes(data) == value
        assert bytes(value) == data


@settings(derandomize=True, max_examples=500)
@given(st.integers(min_value=0, max_value=(1 << 32) - 1))
def test_float_round_trips(raw: int) -> None:
    value = Float.from_raw(raw)
    assert value.raw == raw
    data = raw.to_bytes(4, "little")
    assert Float.from_bytes(data) == value
    assert bytes(value) == data


FLOAT_SPECIAL_RAW = frozenset(float_raw for _, _, float_raw in SPECIALS)


@settings(derandomize=True, max_examples=300)
@given(
    st.integers(min_value=-(1 << 23), max_value=(1 << 23) - 1),
    st.integers(min_value=-128, max_value=127),
)
def test_float_decimal_is_exact(mantissa: int, exponent: int) -> None:
    assume(exponent != 0 or mantissa & 0xFFFFFF not in FLOAT_SPECIAL_RAW)
    value = Float(mantissa, exponent)
    assert value.decimal == Decimal(mantissa) * Decimal(10) ** exponent
    again = Float.from_decimal(value.decimal)
    assert again.decimal == value.decimal
    if exponent <= 0:  # a fraction keeps its digits, so the precision comes back too
        assert again == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.00", SFloat(200, -2)),
        ("2.0", SFloat(20, -1)),
        ("36.6", SFloat(366, -1)),
        ("-0.5", SFloat(-5, -1)),
        ("0.000", SFloat(0, -3)),
        ("2047.0E1", SFloat(2047, 1)),
        ("20000", SFloat(2000, 1)),  # too long a mantissa sheds its trailing zeros
        ("1E+7", SFloat(1, 7)),
    ],
)
def test_sfloat_from_decimal_keeps_written_precision(text: str, expected: SFloat) -> None:
    assert SFloat.from_decimal(text) == expected


def test_from_decimal_accepts_decimal_and_int() -> None:
    assert SFloat.from_decimal(Decimal("98.6")) == SFloat(986, -1)
    assert Float.from_decimal(120) == Float(120, 0)


@pytest.mark.parametrize(
    ("value", "exponent", "expected"),
    [
        ("36.66", -1, SFloat(367, -1)),
        ("36.65", -1, SFloat(366, -1)),  # the decimal context rounds half to even
        ("120", -1, SFloat(1200, -1)),
        ("1234", 1, SFloat(123, 1)),
    ],
)
def test_from_decimal_with_exponent_rounds(value: str, exponent: int, expected: SFloat) -> None:
    assert SFloat.from_decimal(value, exponent=exponent) == expected


def test_float_from_decimal_precision() -> None:
    assert Float.from_decimal("37.60") == Float(3760, -2)
    assert Float.from_decimal("8388605") == Float(8388605, 0)  # largest below the specials
    assert Float.from_decimal("83886070") == Float(8388607, 1)


@pytest.mark.parametrize(
    ("cls", "value", "message"),
    [
        (SFloat, "NaN", "not finite"),
        (SFloat, "Infinity", "not finite"),
        (SFloat, "2048", "mantissa 2048 outside"),  # beyond 12 bits, no trailing zero to shed
        (SFloat, "1E-9", "exponent -9 outside"),
        (SFloat, "2047", "reserved for a special value"),  # exponent 0, mantissa 0x7FF is NaN
        (SFloat, "-2046", "reserved for a special value"),  # 0x802 is -INF
        (Float, "8388608", "mantissa 8388608 outside"),
        (Float, "1E+128", "exponent 128 outside"),
        (Float, "-8388606", "reserved for a special value"),  # 0x800002 is -INF
    ],
)
def test_from_decimal_rejects_what_does_not_fit(
    cls: type[SFloat | Float], value: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        cls.from_decimal(value)


def test_constructor_range_checks() -> None:
    with pytest.raises(ValueError, match="mantissa 2048 outside"):
        SFloat(2048, 0)
    with pytest.raises(ValueError, match="exponent 8 outside"):
        SFloat(1, 8)
    with pytest.raises(ValueError, match="special value has mantissa 0"):
        Float(1, 0, Special.NAN)


# -- Date Time (GSS Date Time 0x2A08) --------------------------------------------------------------


# Nordic Android-BLE-Common-Library, ble-common/src/test/.../callback/DateTimeDataCallbackTest.java
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (bytes([0xE2, 0x07, 4, 17, 15, 51, 0]), DateTime(2018, 4, 17, 15, 51, 0)),
        (bytes([0x00, 0x00, 0, 0, 18, 26, 32]), DateTime(0, 0, 0, 18, 26, 32)),
    ],
)
def test_date_time_vectors(data: bytes, expected: DateTime) -> None:
    value = DateTime.from_bytes(data)
    assert value == expected
    assert bytes(value) == data


def test_date_time_unknown_parts() -> None:
    value = DateTime(0, 4, 17, 20, 41, 59)
    assert not value.is_complete
    assert value.to_datetime() is None
    assert value.compact() == "00000417204159"


# GSS Date Time: year 1582-9999 or 0, month 0-12, day 0-31, hours 0-23, minutes 0-59, seconds 0-59.
@pytest.mark.parametrize(
    ("data", "field"),
    [
        (bytes([0x2D, 0x06, 1, 1, 0, 0, 0]), "year"),  # 1581
        (bytes([0x10, 0x27, 1, 1, 0, 0, 0]), "year"),  # 10000
        (bytes([0xE8, 0x07, 13, 1, 0, 0, 0]), "month"),
        (bytes([0xE8, 0x07, 1, 32, 0, 0, 0]), "day"),
        (bytes([0xE8, 0x07, 1, 1, 24, 0, 0]), "hours"),
        (bytes([0xE8, 0x07, 1, 1, 0, 60, 0]), "minutes"),
        (bytes([0xE8, 0x07, 1, 1, 0, 0, 60]), "seconds"),
    ],
)
def test_date_time_range_checks_raise_decode_error(data: bytes, field: str) -> None:
    with pytest.raises(DecodeError) as info:
        DateTime.from_bytes(data)
    assert info.value.characteristic == "Date Time (0x2A08)"
    assert info.value.offset == 0
    assert f"valid Date Time ({field} " in str(info.value)


def test_date_time_limits_accepted() -> None:
    assert DateTime.from_bytes(bytes([0x2E, 0x06, 12, 31, 23, 59, 59])) == DateTime(
        1582, 12, 31, 23, 59, 59
    )
    assert DateTime.from_bytes(bytes([0x0F, 0x27, 0, 0, 0, 0, 0])) == DateTime(9999, 0, 0)


@pytest.mark.parametrize(
    ("data", "offset"),
    [(bytes([0xE2, 0x07, 4, 17, 15, 51]), 0), (bytes([0xE2, 0x07, 4, 17, 15, 51, 0, 0]), 7)],
)
def test_date_time_length_checks(data: bytes, offset: int) -> None:
    with pytest.raises(DecodeError) as info:
        DateTime.from_bytes(data)
    assert (info.value.characteristic, info.value.offset) == ("Date Time (0x2A08)", offset)


def test_date_time_constructor_range_check() -> None:
    with pytest.raises(ValueError, match=r"month 13 outside 0\.\.12"):
        DateTime(2024, 13, 1)
