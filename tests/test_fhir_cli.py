"""`bedside decode --fhir` (gateway.fhir.cli behind gateway/cli.py)."""

from __future__ import annotations

import datetime as dt

from typer.testing import CliRunner

from gateway.cli import app
from gateway.fhir import loads
from gateway.fhir.cli import decoded_bundle
from gateway.fhir.validate import r4b_model
from gateway.ieee11073.hrs import BodySensorLocation, BodySensorLocationValue, HeartRateMeasurement

RECEIVED = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC)


def test_decode_fhir_prints_a_valid_collection_bundle() -> None:
    # docs/standards.md Heart Rate vector `1E 55 32 00 21 00`: 85 /min and one RR interval.
    result = CliRunner().invoke(
        app, ["decode", "--char", "2A37", "--hex", "1E5532002100", "--fhir"]
    )
    assert result.exit_code == 0, result.output
    bundle = loads(result.output)
    r4b_model(bundle)
    assert bundle["type"] == "collection"
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["Device", "Device", "Observation", "Observation"]
    hr = bundle["entry"][2]["resource"]
    assert hr["valueQuantity"]["value"] == 85
    references = {e["fullUrl"] for e in bundle["entry"]}
    assert hr["device"]["reference"] in references


def test_decoded_bundle_is_deterministic_for_a_given_time() -> None:
    value = HeartRateMeasurement(72)
    assert decoded_bundle(value, RECEIVED) == decoded_bundle(value, RECEIVED)
    assert decoded_bundle(value, RECEIVED)["timestamp"] == "2025-03-04T05:06:07Z"


def test_a_value_without_measurements_gives_an_empty_collection() -> None:
    bundle = decoded_bundle(BodySensorLocationValue(BodySensorLocation.CHEST), RECEIVED)
    r4b_model(bundle)
    assert "entry" not in bundle
    assert bundle["type"] == "collection"
