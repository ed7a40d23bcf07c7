"""Transaction and collection Bundles (gateway.fhir.bundle)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

from gateway.fhir import (
    GatewayInfo,
    MappingContext,
    PatientRef,
    SensorInfo,
    collection_bundle,
    dumps,
    loads,
    resources_for,
    transaction_bundle,
)
from gateway.fhir.bundle import bundle_with_subject
from gateway.fhir.resource import search_token
from gateway.fhir.timeline import ClockAnchor
from gateway.fhir.validate import r4b_model
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.measurement import Condition, Measurement, SampleArray
from gateway.ieee11073.numbers import Float, SFloat

PHD_ID = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdBaseObservation"
RECEIVED = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
CTX = MappingContext(
    SensorInfo("001BDC0FFFFE1234", bt_address="001BDC123456", specialization=528391),
    GatewayInfo("ECDE3D4E58532D31", specializations=(528391,)),
    RECEIVED,
    patient=PatientRef("Patient/p-7"),
)
TS = DateTime(2025, 3, 4, 5, 0, 0)
BP = Measurement(
    150020,
    unit_code=3872,
    timestamp=TS,
    conditions=frozenset({Condition.IRREGULAR_PULSE}),
    components=(
        Measurement(150021, SFloat(128, 0)),
        Measurement(150022, SFloat(82, 0)),
        Measurement(150023, SFloat(97, 0)),
    ),
)
PULSE = Measurement(149546, SFloat(71, 0), 2720, timestamp=TS)
ECG = Measurement(
    131330,
    unit_code=4274,
    samples=SampleArray(Float(5, -3), Float(0, 0), Float(4, -3), 1, 2, (1, -1, 3)),
)
MEASUREMENTS = [BP, PULSE, ECG]


def _references(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def test_transaction_bundle() -> None:
    bundle = transaction_bundle(resources_for(MEASUREMENTS, CTX), timestamp=RECEIVED)
    r4b_model(bundle)
    assert bundle["type"] == "transaction"
    assert bundle["timestamp"] == "2025-03-04T05:06:07Z"
    entries: list[dict[str, Any]] = bundle["entry"]
    kinds = [e["resource"]["resourceType"] for e in entries]
    assert kinds == ["Device", "Device"] + ["Observation"] * 4  # BP, pulse, ECG, BP status bits
    full_urls = [e["fullUrl"] for e in entries]
    assert len(set(full_urls)) == len(full_urls)
    assert all(u.startswith("urn:uuid:") for u in full_urls)
    for entry in entries:
        request = entry["request"]
        assert request["method"] == "POST"
        assert request["url"] == entry["resource"]["resourceType"]
        identifiers = entry["resource"].get("identifier", [])
        if entry["resource"]["resourceType"] == "Device":
            first = identifiers[0]
            assert request["ifNoneExist"] == f"identifier={first['system']}|{first['value']}"
        elif identifiers:
            (identifier,) = identifiers
            assert identifier["system"] == PHD_ID
            assert request["ifNoneExist"] == f"identifier={PHD_ID}|{identifier['value']}"
        else:  # the live ECG strip has no device timestamp: a plain create
            assert "ifNoneExist" not in request


def test_transaction_references_resolve_inside_the_bundle() -> None:
    bundle = transaction_bundle(resources_for(MEASUREMENTS, CTX))
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    references = list(_references(bundle))
    internal = [r for r in references if r.startswith("urn:uuid:")]
    assert set(internal) <= full_urls
    # Every Observation points at both Devices; the patient is the caller's own reference.
    devices = {e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Device"}
    assert devices <= set(internal)
    assert set(references) - set(internal) == {"Patient/p-7"}
    bits = bundle["entry"][-1]["resource"]
    assert [d["reference"] for d in bits["derivedFrom"]] == [bundle["entry"][2]["fullUrl"]]


def test_a_moved_reading_travels_with_its_coincident_time_stamp_put_to_its_own_id() -> None:
    """The coincident time stamp has no identifier: it is a PUT to an id of its own, so the
    Bundles of one connection can all carry it and the server keeps one; giving the Bundle a
    patient leaves its subject, the sensor, alone."""
    slow = ClockAnchor(dt.datetime(2025, 3, 4, 5, 5, 0), RECEIVED)  # noqa: DTZ001 - 67 s slow
    ctx = dataclasses.replace(CTX, anchor=slow, stored=True)
    bundle = transaction_bundle(resources_for([PULSE], ctx))
    r4b_model(bundle)
    *_, pulse, cts = bundle["entry"]
    assert cts["request"] == {"method": "PUT", "url": f"Observation/{cts['resource']['id']}"}
    assert cts["fullUrl"] == f"urn:uuid:{cts['resource']['id']}"
    assert pulse["request"]["method"] == "POST"
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    assert {r for r in _references(bundle) if r.startswith("urn:uuid:")} <= full_urls
    relabelled = bundle_with_subject(bundle, "Patient/other")
    assert relabelled["entry"][-2]["resource"]["subject"] == {"reference": "Patient/other"}
    assert relabelled["entry"][-1]["resource"]["subject"] == cts["resource"]["subject"]


def test_bundles_are_deterministic() -> None:
    first = dumps(transaction_bundle(resources_for(MEASUREMENTS, CTX)))
    second = dumps(transaction_bundle(resources_for(MEASUREMENTS, CTX)))
    assert first == second
    other = dumps(transaction_bundle(resources_for([PULSE], CTX)))
    assert loads(first)["id"] != loads(other)["id"]


def test_a_resent_measurement_appears_once() -> None:
    # A device re-sending a stored record gives the same identifier, hence the same fullUrl.
    bundle = transaction_bundle(resources_for([PULSE, PULSE], CTX))
    r4b_model(bundle)
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == [
        "Device",
        "Device",
        "Observation",
    ]


def test_collection_bundle() -> None:
    bundle = collection_bundle(resources_for(MEASUREMENTS, CTX), bundle_id="b-1")
    r4b_model(bundle)
    assert bundle["id"] == "b-1"
    assert bundle["type"] == "collection"
    assert "timestamp" not in bundle
    assert all(set(e) == {"fullUrl", "resource"} for e in bundle["entry"])
    assert len(bundle["entry"]) == 6


def test_search_token_escapes_what_fhir_search_and_urls_need() -> None:
    assert search_token(PHD_ID, "AB-1-urn:oid:2.999-150020-20250101000000.00") == (
        f"identifier={PHD_ID}|AB-1-urn:oid:2.999-150020-20250101000000.00"
    )
    # FHIR search escapes \ | , $ with a backslash, then the query is percent-encoded.
    assert search_token("urn:x", "a|b,c$d\\e f&g") == (
        "identifier=urn:x|a%5C%7Cb%5C%2Cc%5C%24d%5C%5Ce%20f%26g"
    )
