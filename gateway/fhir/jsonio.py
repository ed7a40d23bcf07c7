"""FHIR JSON text on the hot path: ``simplejson`` with exact decimals.

Resources are built as plain dicts whose numbers are ``Decimal`` (or ``int``); ``dumps`` writes
them as JSON numbers with the digits they have, so a device's ``2.00`` stays ``2.00`` in the text
(the PHD IG requires the reported precision). ``loads`` reads numbers back as ``Decimal``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import simplejson

# The resources are trees of dicts, lists, str, int, bool and Decimal built by gateway.fhir: no
# cycles to check for, no namedtuples or for_json() objects to look for (each check costs an
# attribute lookup per value and together they halve the encoder's speed).
_ENCODER: Final = simplejson.JSONEncoder(
    use_decimal=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,
    namedtuple_as_object=False,
    for_json=False,
)


def dumps(resource: Mapping[str, Any]) -> str:
    """Compact JSON text of ``resource`` (UTF-8 characters kept, no NaN/Infinity)."""
    text: str = _ENCODER.encode(resource)
    return text


def loads(text: str | bytes) -> dict[str, Any]:
    """Parse FHIR JSON text; numbers become ``Decimal`` (precision kept).

    Raises ``ValueError`` (``simplejson.JSONDecodeError``) for malformed text or a top level that
    is not an object.
    """
    value = simplejson.loads(text, use_decimal=True)
    if not isinstance(value, dict):
        # ValueError like every other malformed input (JSONDecodeError is one), not TypeError.
        raise ValueError(f"FHIR JSON: expected an object at the top level, got {type(value)}")  # noqa: TRY004
    return value
