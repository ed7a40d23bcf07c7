"""Bundles: a ``transaction`` for upload and a ``collection`` for display and export.

Entries keep the mapped ``urn:uuid:`` full URLs, so references between entries resolve inside the
Bundle (FHIR R4 §2.36.4.1 "Resolving references in Bundles"). In a transaction every entry is a
``POST``; resources with a dedup identifier carry ``ifNoneExist`` so that the server creates them
once (PHD IG PhdBaseObservation notes, "Conditional-create Identifier"; example bundle-example-1).
A resource with an id of its own (the Coincident Time Stamp, which has no identifier) is a
``PUT`` to that id (FHIR R4 §3.1.0.4 "update as create"): sent in many Bundles, stored once.
An entry whose full URL already appeared is dropped: by the IG's identifier rule it is the same
resource, and a Bundle may not hold one full URL twice (bdl-7).
"""

from __future__ import annotations

import datetime as _dt
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.fhir.resource import MappedResource, fhir_datetime
from gateway.fhir.timeline import is_coincident_time_stamp


def _unique(resources: Iterable[MappedResource]) -> list[MappedResource]:
    seen: set[str] = set()
    out = []
    for r in resources:
        if r.full_url not in seen:
            seen.add(r.full_url)
            out.append(r)
    return out


def _head(
    kind: str, entries: list[MappedResource], bundle_id: str | None, timestamp: _dt.datetime | None
) -> dict[str, Any]:
    if bundle_id is None:  # stable: the same entries give the same id
        bundle_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "\n".join(e.full_url for e in entries)))
    bundle: dict[str, Any] = {"resourceType": "Bundle", "id": bundle_id, "type": kind}
    if timestamp is not None:
        bundle["timestamp"] = fhir_datetime(timestamp)
    return bundle


def transaction_bundle(
    resources: Iterable[MappedResource],
    *,
    bundle_id: str | None = None,
    timestamp: _dt.datetime | None = None,
) -> dict[str, Any]:
    """A ``transaction`` Bundle: every entry ``POST``, conditional on its identifier if any, or
    ``PUT`` to its own id."""
    entries = _unique(resources)
    bundle = _head("transaction", entries, bundle_id, timestamp)
    out = []
    for r in entries:
        request: dict[str, Any]
        if r.update_url is not None:
            request = {"method": "PUT", "url": r.update_url}
        else:
            request = {"method": "POST", "url": r.resource["resourceType"]}
        if r.if_none_exist is not None:
            request["ifNoneExist"] = r.if_none_exist
        out.append({"fullUrl": r.full_url, "resource": r.resource, "request": request})
    if out:  # FHIR JSON has no empty arrays
        bundle["entry"] = out
    return bundle


def collection_bundle(
    resources: Iterable[MappedResource],
    *,
    bundle_id: str | None = None,
    timestamp: _dt.datetime | None = None,
) -> dict[str, Any]:
    """A ``collection`` Bundle of the resources (no requests)."""
    entries = _unique(resources)
    bundle = _head("collection", entries, bundle_id, timestamp)
    if entries:  # FHIR JSON has no empty arrays
        bundle["entry"] = [{"fullUrl": r.full_url, "resource": r.resource} for r in entries]
    return bundle


def with_subject(resource: Mapping[str, Any], reference: str) -> dict[str, Any]:
    """A copy of an Observation with ``subject`` set to ``reference`` (PHD IG
    PhdBaseObservation.subject, 1..1); other resources, and the Coincident Time Stamp (whose
    subject is the sensor), are returned unchanged (copied)."""
    out = dict(resource)
    if out.get("resourceType") == "Observation" and not is_coincident_time_stamp(out):
        out["subject"] = {"reference": reference}
    return out


def bundle_with_subject(
    bundle: Mapping[str, Any], reference: str, *, timestamp: _dt.datetime | None = None
) -> dict[str, Any]:
    """A copy of ``bundle`` whose Observation entries have ``subject`` = ``reference`` (and a new
    ``timestamp`` when given: the time the Bundle is assembled, FHIR R4 Bundle.timestamp)."""
    out = dict(bundle)
    if timestamp is not None:
        out["timestamp"] = fhir_datetime(timestamp)
    if "entry" in out:
        out["entry"] = [
            {**entry, "resource": with_subject(entry["resource"], reference)}
            for entry in out["entry"]
        ]
    return out
