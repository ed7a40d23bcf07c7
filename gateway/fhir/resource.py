"""What every FHIR builder here shares: the mapped-resource record, stable ``urn:uuid`` references,
conditional-create queries and FHIR date-time text."""

from __future__ import annotations

import datetime as _dt
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

_NAMESPACE: Final = uuid.NAMESPACE_URL.bytes
_UUID_VERSION_5: Final = 0x50  # RFC 9562 §5.5: version 5 in the high nibble of octet 6
_UUID_VARIANT_RFC: Final = 0x80  # RFC 9562 §4.1: variant 10x in octet 8
# Characters left as they are in a conditional-create query (RFC 3986 unreserved, ":" and "/").
_QUERY_SAFE: Final = ":/-._~"
# FHIR search escapes (R4 §3.1.1.5.7 "Escaping Search Parameters").
_SEARCH_ESCAPED: Final = ("\\", "|", ",", "$")
NAMESPACE: Final = "https://bedside-gateway.example/fhir"
"""The project's FHIR namespace: the extensions and identifier systems it defines."""
GATEWAY_DEVICE_EXTENSION: Final = (
    "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice"
)


@dataclass(frozen=True, slots=True)
class MappedResource:
    """A resource with its bundle ``fullUrl`` and, when it has a dedup identifier, the
    ``ifNoneExist`` query a transaction uses to create it only once."""

    full_url: str
    resource: dict[str, Any]
    if_none_exist: str | None = None
    update_url: str | None = None
    """Set for a resource with an id of its own: a transaction ``PUT``s it there (idempotent)."""
    device_time: _dt.datetime | None = None
    """The sensor's own time stamp (aware, in the zone its clock runs in), before any mapping
    onto the gateway's timeline; None when it carried none."""
    undated: str | None = None
    """Why the reading has no true date (kept by the gateway, never sent); None when it has."""


def urn_for(system: str, value: str) -> str:
    """The stable ``urn:uuid:`` of the resource identified by ``system|value``.

    ``uuid.uuid5(uuid.NAMESPACE_URL, f"{system}|{value}")`` (RFC 9562 §5.5), computed without the
    ``UUID`` object: this runs once per Observation on the hot path.
    """
    digest = bytearray(hashlib.sha1(_NAMESPACE + f"{system}|{value}".encode()).digest()[:16])  # noqa: S324 - RFC 9562 UUIDv5 is defined on SHA-1
    digest[6] = (digest[6] & 0x0F) | _UUID_VERSION_5
    digest[8] = (digest[8] & 0x3F) | _UUID_VARIANT_RFC
    h = digest.hex()
    return f"urn:uuid:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def search_token(system: str, value: str) -> str:
    """``identifier=<system>|<value>`` for ``Bundle.entry.request.ifNoneExist``.

    The value gets the FHIR search escapes (``\\``, ``|``, ``,``, ``$``) and anything outside
    the URL-safe set is percent-encoded; hex, digits, dashes and ``urn:oid:`` text is unchanged.
    """
    escaped = value
    for char in _SEARCH_ESCAPED:
        escaped = escaped.replace(char, "\\" + char)
    return f"identifier={quote(system, safe=_QUERY_SAFE)}|{quote(escaped, safe=_QUERY_SAFE)}"


def fhir_datetime(value: _dt.datetime) -> str:
    """FHIR ``dateTime``/``instant`` text of an aware datetime; UTC is written ``Z``."""
    offset = value.utcoffset()
    if offset is None:
        raise ValueError(f"{value!r} has no time zone; FHIR date-times with a time need one")
    text = value.isoformat()
    return text[:-6] + "Z" if offset == _dt.timedelta(0) else text
