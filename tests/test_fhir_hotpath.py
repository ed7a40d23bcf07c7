"""The hot path (plain dicts + simplejson) and the reference path (fhir.resources R4B validate and
dump) give the same FHIR JSON; only the hot path keeps the device precision in the text."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

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
from gateway.fhir.validate import r4b_json
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.hrs import HeartRateMeasurement
from gateway.ieee11073.measurement import Condition, Measurement, MeasurementStatus, SampleArray
from gateway.ieee11073.numbers import Float, SFloat, Special

CTX = MappingContext(
    SensorInfo(
        "001BDC0FFFFE1234", manufacturer="Acme", model="M", serial="S1", specialization=528390
    ),
    GatewayInfo("ECDE3D4E58532D31", software_revision="0.1.0", specializations=(528390,)),
    dt.datetime(2025, 3, 4, 5, 6, 7, 125000, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    tz=dt.timezone(dt.timedelta(hours=1)),
    patient=PatientRef("Patient/p-7", "urn:oid:2.999.1", "MRN42"),
)
TS = DateTime(2025, 3, 4, 4, 59, 30)


def _mix() -> list[Measurement]:
    # The docs/standards.md Heart Rate vector `1E 55 32 00 21 00` plus hand-built measurements of
    # each kind.
    hr = HeartRateMeasurement.from_bytes(bytes.fromhex("1E5532002100")).measurements()
    return [
        *hr,
        Measurement(150456, SFloat.from_raw(0xE0C8), 544, supplemental=(150580,)),  # 2.00 %
        Measurement(149530, SFloat(72, 0), 2720, status=MeasurementStatus.EARLY_INDICATION),
        Measurement(
            150020,
            timestamp=TS,
            conditions=frozenset({Condition.CUFF_TOO_LOOSE}),
            components=(
                Measurement(150021, SFloat(1205, -1), 3872),
                Measurement(150022, SFloat.of(Special.NRES), 3872),
                Measurement(150023, SFloat(950, -1), 3872),
            ),
        ),
        Measurement(149546, SFloat(64, 0), 2720, timestamp=TS),
        Measurement(150364, Float.from_decimal("36.80"), 6048, TS, body_site="tympanum"),
        Measurement(150364, Float.of(Special.NAN), 6048, status=MeasurementStatus.TEST_DATA),
        Measurement(
            131330,
            unit_code=4274,
            samples=SampleArray(
                Float.from_decimal("0.0050"),
                Float.from_decimal("-10.240"),
                Float.from_decimal("0.004"),
                1,
                2,
                tuple((i * 37) % 4096 for i in range(250)),
            ),
        ),
    ]


def _resources() -> list[dict[str, Any]]:
    return [r.resource for r in resources_for(_mix(), CTX)]


@pytest.mark.parametrize("index", range(len(_resources())))
def test_each_resource_gives_the_same_json_on_both_paths(index: int) -> None:
    resource = _resources()[index]
    assert loads(dumps(resource)) == loads(r4b_json(resource))


@pytest.mark.parametrize("builder", [transaction_bundle, collection_bundle])
def test_bundles_give_the_same_json_on_both_paths(builder: Any) -> None:
    bundle = builder(resources_for(_mix(), CTX))
    assert loads(dumps(bundle)) == loads(r4b_json(bundle))


def test_only_the_hot_path_keeps_the_written_precision() -> None:
    spo2 = next(
        r
        for r in _resources()
        if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "150456"
    )
    hot, reference = dumps(spo2), r4b_json(spo2)
    assert '"value":2.00,' in hot
    assert '"value":2.00,' not in reference  # fhir.resources writes a float: 2.0
    parsed = loads(hot)["valueQuantity"]["value"]
    assert parsed == Decimal("2.00")
    assert parsed.as_tuple().exponent == -2
