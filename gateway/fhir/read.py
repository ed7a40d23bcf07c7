"""Reading FHIR Observations (JSON dicts) back: their codes, a display text of their value, and
their effective time. Pure (standard library only): the ingest pipeline and the assistant both
read stored and freshly mapped Observations through these.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Final

# The code systems of the PHD IG mapping (also written by gateway.fhir.codes).
LOINC_SYSTEM: Final = "http://loinc.org"
MDC_SYSTEM: Final = "urn:iso:std:iso:11073:10101"


def codes_in(resource: Mapping[str, Any], system: str) -> list[str]:
    """The codes of ``system`` in an Observation's ``code.coding``, in order."""
    return [
        coding["code"]
        for coding in resource.get("code", {}).get("coding", [])
        if coding.get("system") == system and isinstance(coding.get("code"), str)
    ]


def loinc_codes(resource: Mapping[str, Any]) -> list[str]:
    """The LOINC codes of an Observation's ``code``."""
    return codes_in(resource, LOINC_SYSTEM)


def observation_codes(resource: Mapping[str, Any]) -> tuple[str, ...]:
    """LOINC codes first, then MDC codes, of an Observation's ``code``."""
    return (*codes_in(resource, LOINC_SYSTEM), *codes_in(resource, MDC_SYSTEM))


def _quantity_text(quantity: Mapping[str, Any]) -> str:
    return f"{quantity.get('value')} {quantity.get('unit', quantity.get('code', ''))}".strip()


def display_value(resource: Mapping[str, Any]) -> str | None:
    """A short human text of an Observation's value ("120/80 mm[Hg]", "36.8 Cel"); None when it
    has no value, no component value and no ``dataAbsentReason``."""
    if "valueQuantity" in resource:
        return _quantity_text(resource["valueQuantity"])
    components = [c for c in resource.get("component", []) if "valueQuantity" in c]
    if components:
        values = "/".join(str(c["valueQuantity"].get("value")) for c in components)
        return f"{values} {components[0]['valueQuantity'].get('unit', '')}".strip()
    if "dataAbsentReason" in resource:
        codings = resource["dataAbsentReason"].get("coding", [{}])
        return f"({codings[0].get('code', 'absent')})"
    return None


def effective_time(resource: Mapping[str, Any]) -> dt.datetime | None:
    """``effectiveDateTime`` as an aware datetime; None when absent, unparsable or without a
    UTC offset (a date alone, or a device-local time)."""
    text = resource.get("effectiveDateTime")
    if not isinstance(text, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.utcoffset() is not None else None
