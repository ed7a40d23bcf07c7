"""Decoded characteristic values → JSON-ready data (for `bedside decode` and logs).

Numbers keep their precision as ``Decimal`` (serialise with ``simplejson`` ``use_decimal``);
special values become their names ("NaN", "NRes", "+INF", …); enums their names; flag sets a list
of names; bytes upper-case hex.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from decimal import Decimal

from gateway.ieee11073.numbers import Float, SFloat


def jsonable(value: object) -> object:
    """Recursively convert a decoded value into JSON-ready data."""
    if isinstance(value, SFloat | Float):
        return value.decimal if value.special is None else value.special.value
    if isinstance(value, enum.Flag):
        return [member.name.lower() for member in type(value) if member in value and member.name]
    if isinstance(value, enum.Enum):
        return value.name.lower() if isinstance(value.name, str) else value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
        return {name: jsonable(v) for name, v in fields if not _is_empty(v)}
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex().upper()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list | frozenset | set):
        items = [jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, frozenset | set) else items
    if isinstance(value, bool | int | str | Decimal) or value is None:
        return value
    return str(value)


def _is_empty(value: object) -> bool:
    """None, an empty collection or an empty flag set: left out of the JSON."""
    if value is None:
        return True
    if isinstance(value, enum.Flag):
        return not value
    return isinstance(value, tuple | list | frozenset | set | dict) and not value
