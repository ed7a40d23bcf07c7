"""FHIR JSON text as it travels (wire form) and as it is signed (RFC 8785 canonical form).

Wire form: compact UTF-8 JSON in which :class:`~decimal.Decimal` values are written with the digits
they carry, so ``Decimal("2.00")`` stays ``2.00`` (FHIR keeps precision, DESIGN.md §4). Parsing
reads every JSON number with a fraction or exponent back as a ``Decimal`` and refuses what a
signature cannot be defined over: duplicate member names (parsers disagree on which one wins),
``NaN`` / ``Infinity`` and non-JSON text.

Canonical form (what the signature covers): RFC 8785 (JCS), written by :func:`canonical` and
checked byte for byte against the ``rfc8785`` package in the tests. JCS
defines a number as an IEEE-754 double (RFC 8785 §3.2.2.3): a ``Decimal`` is therefore
canonicalised as the double nearest to its exact decimal value (Python's ``float(Decimal)`` is
correctly rounded), then written with the ECMAScript number-to-string rule. So ``2.00``, ``2.0`` and
``2`` canonicalise alike (``2``), and any JCS implementation that parses the wire text as JSON
numbers reproduces the bytes: a receiver need not know this module to verify. The price is that a
change that only alters trailing zeros of a decimal (``2.00`` → ``2.0``) is not caught by the
signature; values themselves, and every other member, are. Integers beyond ±2^53 and non-finite
numbers have no canonical form and are refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any, Final, NoReturn

import simplejson

from gateway.errors import BedsideError

JSON_MAX_SAFE_INTEGER = 2**53 - 1  # RFC 8785 §3.2.2.3 / I-JSON (RFC 7493 §2.2)


class FhirJsonError(BedsideError, ValueError):
    """Text that is not acceptable JSON, or a value without a JSON / canonical form."""


# Built once: per-call keyword processing costs as much as the encoding of a small Bundle. No
# cycle check (our values are trees) and no namedtuple / for_json lookups (each costs a lookup per
# value).
_ENCODER: Final = simplejson.JSONEncoder(
    use_decimal=True,
    ensure_ascii=False,
    separators=(",", ":"),
    allow_nan=False,
    check_circular=False,
    namedtuple_as_object=False,
    for_json=False,
)


def dumps(obj: object) -> str:
    """Compact wire JSON; ``Decimal`` values keep their digits; NaN/Infinity are refused."""
    try:
        text: str = _ENCODER.encode(obj)
    except (TypeError, ValueError, RecursionError) as exc:
        raise FhirJsonError(f"value has no JSON form: {exc}") from exc
    return text


def _reject_constant(name: str) -> NoReturn:
    raise FhirJsonError(f"{name} is not a JSON number (RFC 8259 §6)")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FhirJsonError(f"duplicate member name {key!r} (RFC 8259 §4; RFC 7493 §2.3)")
        out[key] = value
    return out


def loads(text: str | bytes) -> Any:
    """Parse wire JSON: fractions/exponents as ``Decimal``; duplicates and NaN refused."""
    try:
        return json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_members,
        )
    except FhirJsonError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise FhirJsonError(f"not JSON text: {exc}") from exc


def es6_number(value: float) -> str:
    """ECMAScript Number::toString of a finite double (RFC 8785 §3.2.2.3, ECMA-262 §7.1.12.1).

    Python's ``repr`` gives the same shortest round-trip digits; only the layout differs (JS
    switches to exponent form below 1e-6 and from 1e21, and writes ``e-7`` / ``e+21``).
    """
    if value == 0:
        return "0"  # also -0
    text = repr(value)
    sign = ""
    if text[0] == "-":
        sign, text = "-", text[1:]
    mantissa, _, exponent = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    all_digits = whole + fraction
    significant = all_digits.lstrip("0")
    # n: position of the decimal point relative to the first significant digit (ECMA-262 "n").
    point = len(whole) + (int(exponent) if exponent else 0) - (len(all_digits) - len(significant))
    digits = significant.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        return sign + digits + "0" * (point - k)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    exp = point - 1  # steps 9-10: exponent form
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{head}e{'+' if exp > 0 else '-'}{abs(exp)}"


def _utf16_order(item: tuple[str, object]) -> bytes:
    return item[0].encode("utf-16-be", "surrogatepass")  # RFC 8785 §3.2.3: UTF-16 code units


def _jcs(value: object, out: list[str], path: str) -> None:  # noqa: PLR0912 - one dispatch
    kind = type(value)
    if kind is str:
        out.append(encode_basestring(value))  # type: ignore[arg-type]
    elif isinstance(value, Mapping):
        out.append("{")
        first = True
        for key in value:
            if not isinstance(key, str):
                raise FhirJsonError(f"{path}: member name {key!r} is not a string")
        for key, item in sorted(value.items(), key=_utf16_order):
            if not first:
                out.append(",")
            first = False
            out.append(encode_basestring(key))
            out.append(":")
            _jcs(item, out, f"{path}.{key}")
        out.append("}")
    elif kind is bool:
        out.append("true" if value else "false")
    elif value is None:
        out.append("null")
    elif isinstance(value, int):
        if abs(value) > JSON_MAX_SAFE_INTEGER:
            raise FhirJsonError(f"{path}: integer {value} is outside ±(2^53-1) (RFC 8785 §3.2.2.3)")
        out.append(str(int(value)))
    elif isinstance(value, (Decimal, float)):
        number = float(value)
        if not math.isfinite(number):
            raise FhirJsonError(f"{path}: {value} has no finite IEEE-754 double (RFC 8785)")
        out.append(es6_number(number))
    elif isinstance(value, str):  # a str subclass
        out.append(encode_basestring(str(value)))
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _jcs(item, out, f"{path}[{i}]")
        out.append("]")
    else:
        raise FhirJsonError(f"{path}: {type(value).__name__} is not a JSON value")


def canonical(obj: object) -> bytes:
    """RFC 8785 canonical JSON bytes of ``obj`` (see the module text for ``Decimal``).

    Written here rather than with the ``rfc8785`` package for speed (it signs every Bundle); the
    tests check it byte for byte against that package and the RFC's own examples.
    """
    out: list[str] = []
    _jcs(obj, out, "$")
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FhirJsonError(f"a string holds a lone surrogate: {exc}") from exc
