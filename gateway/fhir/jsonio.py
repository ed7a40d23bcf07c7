"""FHIR JSON text: the wire form (decimal-exact) and the canonical form that signatures cover.

Wire form (:func:`dumps`, :func:`loads`): compact UTF-8 JSON written with ``simplejson``, in which
:class:`~decimal.Decimal` values keep the digits they carry, so a device's ``2.00`` stays ``2.00``
in the text (the PHD IG requires the reported precision; ``docs/standards.md``). Parsing reads
every number with a fraction or exponent back as a ``Decimal`` and refuses what a signature cannot
be defined over: duplicate member names (parsers disagree on which one wins; RFC 8259 §4, RFC 7493
§2.3), ``NaN`` / ``Infinity``, text that is not JSON, and a top level that is not an object (FHIR
JSON text is one resource).

Canonical form (:func:`canonical`): RFC 8785 (JCS), written by the ``rfc8785`` package. JCS defines
a number as an IEEE-754 double (RFC 8785 §3.2.2.3): a ``Decimal`` is first replaced by the double
nearest to its exact value (``float(Decimal)`` is correctly rounded), which the package then writes
with the ECMAScript number-to-string rule. So ``2.00``, ``2.0`` and ``2`` canonicalise alike
(``2``), and any JCS implementation that parses the wire text as JSON numbers reproduces the bytes:
a receiver need not know this module to verify. The price is that a change that only alters
trailing zeros of a decimal (``2.00`` → ``2.0``) is not caught by a signature; values themselves,
and every other member, are. Integers beyond ±(2^53-1), non-finite numbers and strings with lone
surrogates have no canonical form and are refused. The signature format itself is described in
``docs/contracts.md``.

Pure: no I/O, nothing from the rest of the gateway but its exception root.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final, NoReturn

import rfc8785
import simplejson

from gateway.errors import BedsideError


class FhirJsonError(BedsideError, ValueError):
    """Text that is not acceptable FHIR JSON, or a value without a JSON / canonical form."""


class NotAnObjectError(FhirJsonError):
    """Well-formed JSON whose top level is not an object, so not a FHIR resource."""


# Built once: per-call keyword processing costs as much as the encoding of a small resource. The
# values are trees of dicts, lists, str, int, bool and Decimal built by gateway.fhir: no cycles to
# check for, no namedtuples or for_json() objects to look for (each check costs an attribute
# lookup per value and together they halve the encoder's speed).
_ENCODER: Final = simplejson.JSONEncoder(
    use_decimal=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,
    namedtuple_as_object=False,
    for_json=False,
)


def dumps(value: object) -> str:
    """Compact wire JSON (UTF-8 characters kept); ``Decimal`` values keep their digits.

    Raises :class:`FhirJsonError` for NaN/Infinity and values that are not JSON.
    """
    try:
        text: str = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise FhirJsonError(f"value has no JSON form: {exc}") from exc
    return text


def _reject_constant(name: str) -> NoReturn:
    raise FhirJsonError(f"{name} is not a JSON number (RFC 8259 §6)")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise FhirJsonError(f"duplicate member name {key!r} (RFC 8259 §4; RFC 7493 §2.3)")
            seen.add(key)
    return members


def loads(text: str | bytes) -> dict[str, Any]:
    """Parse wire JSON: fractions/exponents as ``Decimal``; see the module text for what is refused.

    Raises :class:`FhirJsonError` (:class:`NotAnObjectError` for valid JSON that is not an object).
    """
    try:
        value = json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_members,
        )
    except FhirJsonError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # JSONDecodeError: ValueError
        raise FhirJsonError(f"not JSON text: {exc}") from exc
    if not isinstance(value, dict):
        raise NotAnObjectError(f"expected a JSON object at the top level, got {type(value)}")
    return value


_AS_IS: Final = frozenset({str, int, bool, float, type(None)})


def _doubles(value: object) -> object:
    """``value`` with each ``Decimal`` as the nearest double, as the dicts and lists rfc8785 takes.

    Anything else is passed on unchanged: rfc8785 refuses what has no JSON form.
    """
    kind = type(value)
    if kind is dict or (kind not in _AS_IS and isinstance(value, Mapping)):
        return {key: _doubles(item) for key, item in value.items()}  # type: ignore[attr-defined]
    if kind is list or (
        kind not in _AS_IS
        and isinstance(value, Sequence)
        and not isinstance(value, (str, bytes, bytearray))
    ):
        return [_doubles(item) for item in value]  # type: ignore[attr-defined]
    if isinstance(value, Decimal):
        return float(value)  # correctly rounded: the nearest double (RFC 8785 §3.2.2.3)
    return value


# The fast path: the standard library's C encoder writes RFC 8785 text whenever (a) every member
# name is in the Basic Multilingual Plane (then code-point order is UTF-16 order, §3.2.3), (b) every
# integer is within ±(2^53-1), and (c) every other number is a double in [1e-4, 1e16), where
# Python's shortest round-trip repr and ECMAScript's Number.prototype.toString both use fixed
# notation with the same digits (§3.2.2.3); an integral double below 2^53 is written as that
# integer, as ECMAScript does. Strings escape alike (§3.2.2.2: the short forms and lowercase
# \u00xx). Anything else takes the rfc8785 package's path; tests/test_signing.py compares both.
_FIXED_MIN: Final = 1e-4
_FIXED_MAX: Final = 1e16
_SAFE_INTEGER: Final = 2**53 - 1
_BMP_MAX: Final = "\uffff"
_CANONICAL_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)


class _NotFastError(Exception):
    """A value the fast path does not write (the reference path does, or refuses it)."""


def _fast(value: object) -> object:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        if abs(value) > _SAFE_INTEGER:  # type: ignore[arg-type]
            raise _NotFastError
        return value
    if kind is float or kind is Decimal:
        number = float(value)  # type: ignore[arg-type]
        magnitude = abs(number)
        if number.is_integer():
            if magnitude <= _SAFE_INTEGER:
                return int(number)
            raise _NotFastError  # Python writes "….0"; ECMAScript an integer or an exponent
        if _FIXED_MIN <= magnitude < _FIXED_MAX:
            return number
        raise _NotFastError
    if kind is dict:
        out = {}
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str or (not key.isascii() and max(key) > _BMP_MAX):
                raise _NotFastError
            out[key] = _fast(item)
        return out
    if kind is list or kind is tuple:
        return [_fast(item) for item in value]  # type: ignore[attr-defined]
    raise _NotFastError


def canonical(value: object) -> bytes:
    """RFC 8785 canonical JSON bytes of ``value`` (see the module text for ``Decimal``).

    Raises :class:`FhirJsonError` for a value without a canonical form.
    """
    try:
        try:
            return _CANONICAL_ENCODER.encode(_fast(value)).encode("utf-8")
        except (_NotFastError, RecursionError):
            return rfc8785.dumps(_doubles(value))  # type: ignore[arg-type]
    except (ValueError, TypeError, RecursionError) as exc:  # CanonicalizationError, lone surrogate
        raise FhirJsonError(f"no RFC 8785 canonical form: {exc}") from exc
