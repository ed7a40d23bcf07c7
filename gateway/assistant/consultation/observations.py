"""The Observations a consultation holds: measured during it, or shown to the model from the
store, each with the Bundle ``fullUrl`` the draft report cites it by."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.assistant.prompts import ObservationLine
from gateway.fhir.jsonio import canonical
from gateway.fhir.observation import PHD_IDENTIFIER_SYSTEM
from gateway.fhir.read import display_value, effective_time
from gateway.fhir.resource import MappedResource, fhir_datetime, search_token, urn_for

CONTEXT_SOURCE: Final = "context"
MEASURED_SOURCE: Final = "measured"


@dataclass(frozen=True, slots=True)
class UsedObservation:
    """An Observation the consultation obtained (``measured``) or showed the model (``context``)."""

    code: str
    mapped: MappedResource
    source: str
    value: str | None
    time: dt.datetime | None

    @property
    def line(self) -> ObservationLine:
        return ObservationLine(self.code, self.value or "no value", self.time, self.mapped.full_url)

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "fullUrl": self.mapped.full_url,
            "source": self.source,
            "value": self.value,
            "time": fhir_datetime(self.time) if self.time is not None else None,
            "resource": self.mapped.resource,
        }


def mapped_observation(resource: Mapping[str, Any], key: str | None = None) -> MappedResource:
    """An Observation with its Bundle ``fullUrl``: the ``urn:uuid`` the ingest pipeline gives it
    (from its PHD identifier, or ``key``: the store's key, which is that URL for live readings),
    else one derived from its content."""
    identifiers = resource.get("identifier") or []
    value = next(
        (i.get("value") for i in identifiers if i.get("system") == PHD_IDENTIFIER_SYSTEM), None
    )
    if isinstance(value, str):
        return MappedResource(
            urn_for(PHD_IDENTIFIER_SYSTEM, value),
            dict(resource),
            search_token(PHD_IDENTIFIER_SYSTEM, value),
        )
    if key is not None and key.startswith("urn:uuid:"):
        return MappedResource(key, dict(resource))
    digest = hashlib.sha256(canonical(resource)).hexdigest()
    return MappedResource(f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, digest)}", dict(resource))


def used_observation(
    code: str, resource: Mapping[str, Any], source: str, key: str | None = None
) -> UsedObservation:
    return UsedObservation(
        code,
        mapped_observation(resource, key),
        source,
        display_value(resource),
        effective_time(resource),
    )
