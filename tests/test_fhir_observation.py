"""Measurements → Observations (gateway.fhir.observation) against the HL7 PHD IG STU 2.

Every resource built here is also validated with the fhir.resources R4B models.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.fhir import (
    GatewayInfo,
    MappingContext,
    PatientRef,
    SensorInfo,
    dumps,
    loads,
    map_measurements,
)
from gateway.fhir.device import gateway_full_url, sensor_full_url
from gateway.fhir.timeline import NO_TIME_STAMP, UNSET_CLOCK, ClockAnchor
from gateway.fhir.validate import r4b_model
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.hrs import HeartRateMeasurement
from gateway.ieee11073.measurement import Condition, Measurement, MeasurementStatus, SampleArray
from gateway.ieee11073.numbers import Float, SFloat, Special

MDC = "urn:iso:std:iso:11073:10101"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
DAR = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
POCD_STATUS = "http://hl7.org/fhir/uv/pocd/CodeSystem/measurement-status"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ASN1 = "http://terminology.hl7.org/CodeSystem/ASN1ToHL7"
PHD_ID = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdBaseObservation"
GATEWAY_EXT = "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice"
PROFILE = "http://hl7.org/fhir/uv/phd/StructureDefinition/"
PHD_CATEGORY = {
    "coding": [
        {
            "system": "http://hl7.org/fhir/uv/phd/CodeSystem/PhdObservationCategories",
            "code": "phd",
            "display": "PHD generated Observation",
        }
    ]
}
VITAL_SIGNS = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs",
            "display": "Vital Signs",
        }
    ]
}

RECEIVED = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
SENSOR = SensorInfo("00:1B:DC:0F:FF:FE:12:34", manufacturer="Acme", model="P-1")
GATEWAY = GatewayInfo("ECDE3D4E58532D31")
PATIENT = PatientRef("Patient/p-7", "urn:oid:2.999.1", "MRN42")
CTX = MappingContext(SENSOR, GATEWAY, RECEIVED, patient=PATIENT)
SENSOR_REF = sensor_full_url(SENSOR)
GATEWAY_REF = gateway_full_url(GATEWAY)


def observations(*ms: Measurement, ctx: MappingContext = CTX) -> list[dict[str, Any]]:
    """Map and validate every resource with the R4B models."""
    out = [r.resource for r in map_measurements(ms, ctx)]
    for resource in out:
        r4b_model(resource)
    return out


def one(m: Measurement, ctx: MappingContext = CTX) -> dict[str, Any]:
    (obs,) = observations(m, ctx=ctx)
    return obs


# -- Whole resources -------------------------------------------------------------------------------


def test_heart_rate_vector_maps_to_the_whole_observation() -> None:
    # docs/standards.md Heart Rate vector `1E 55 32 00 21 00`: 85 /min, contact detected, EE 50 kJ,
    # RR 33/1024 s (= 32.2 ms).
    hr, rr = observations(
        *HeartRateMeasurement.from_bytes(bytes.fromhex("1E5532002100")).measurements()
    )
    assert hr == {
        "resourceType": "Observation",
        "meta": {"profile": [PROFILE + "PhdNumericObservation"]},
        "extension": [{"url": GATEWAY_EXT, "valueReference": {"reference": GATEWAY_REF}}],
        "status": "final",
        "category": [PHD_CATEGORY, VITAL_SIGNS],
        "code": {
            "coding": [
                {"system": MDC, "code": "147842", "display": "MDC_ECG_HEART_RATE"},
                {"system": LOINC, "code": "8867-4", "display": "Heart rate"},
            ],
            "text": "Heart rate",
        },
        "subject": {"reference": "Patient/p-7"},
        "effectiveDateTime": "2025-03-04T05:06:07Z",
        "valueQuantity": {
            "value": Decimal(85),
            "unit": "beats/minute",
            "system": UCUM,
            "code": "/min",
        },
        "device": {"reference": SENSOR_REF},
    }
    assert rr["code"] == {
        "coding": [{"system": MDC, "code": "147240", "display": "MDC_ECG_TIME_PD_RR_GL"}],
        "text": "RR interval",
    }
    assert rr["category"] == [PHD_CATEGORY]
    assert rr["valueQuantity"] == {
        "value": Decimal("32.2"),
        "unit": "ms",
        "system": UCUM,
        "code": "ms",
    }


def test_blood_pressure_compound_with_conditions() -> None:
    # docs/standards.md Blood Pressure vector: 138/88/120 mmHg, pulse 60, status 0x0027 = body
    # movement, cuff too loose, irregular pulse, improper position; here with a complete date.
    ts = DateTime(2024, 4, 17, 20, 41, 59)
    conditions = frozenset(
        {
            Condition.BODY_MOVEMENT,
            Condition.CUFF_TOO_LOOSE,
            Condition.IRREGULAR_PULSE,
            Condition.IMPROPER_POSITION,
        }
    )
    bp = Measurement(
        150020,
        unit_code=3872,
        timestamp=ts,
        conditions=conditions,
        components=(
            Measurement(150021, SFloat(138, 0), 3872),
            Measurement(150022, SFloat(88, 0), 3872),
            Measurement(150023, SFloat(120, 0), 3872),
        ),
    )
    pulse = Measurement(149546, SFloat(60, 0), 2720, timestamp=ts, conditions=conditions)
    bp_obs, pulse_obs, bits = observations(bp, pulse)
    bp_id = "001BDC0FFFFE1234-MRN42-urn:oid:2.999.1-150020-20240417204159.00"
    assert bp_obs == {
        "resourceType": "Observation",
        "meta": {
            "profile": [
                PROFILE + "PhdCompoundNumericObservation",
                PROFILE + "PhdCompoundObservation",
            ]
        },
        "extension": [{"url": GATEWAY_EXT, "valueReference": {"reference": GATEWAY_REF}}],
        "identifier": [{"system": PHD_ID, "value": bp_id}],
        "status": "final",
        "category": [PHD_CATEGORY, VITAL_SIGNS],
        "code": {
            "coding": [
                {"system": MDC, "code": "150020", "display": "MDC_PRESS_BLD_NONINV"},
                {
                    "system": LOINC,
                    "code": "85354-9",
                    "display": "Blood pressure panel with all children optional",
                },
            ],
            "text": "Blood pressure",
        },
        "subject": {"reference": "Patient/p-7"},
        "effectiveDateTime": "2024-04-17T20:41:59Z",
        "device": {"reference": SENSOR_REF},
        "component": [
            {
                "code": {
                    "coding": [
                        {"system": MDC, "code": code, "display": ref},
                        {"system": LOINC, "code": loinc, "display": text},
                    ],
                    "text": text,
                },
                "valueQuantity": {
                    "value": Decimal(value),
                    "unit": "mmHg",
                    "system": UCUM,
                    "code": "mm[Hg]",
                },
            }
            for code, ref, loinc, text, value in (
                ("150021", "MDC_PRESS_BLD_NONINV_SYS", "8480-6", "Systolic blood pressure", 138),
                ("150022", "MDC_PRESS_BLD_NONINV_DIA", "8462-4", "Diastolic blood pressure", 88),
                ("150023", "MDC_PRESS_BLD_NONINV_MEAN", "8478-0", "Mean blood pressure", 120),
            )
        ],
    }
    assert pulse_obs["code"]["coding"][1] == {
        "system": LOINC,
        "code": "8867-4",
        "display": "Heart rate",
    }
    # PHD IG example bpm-status.json: one BITs observation, derivedFrom the measurements.
    (mapped_bp, mapped_pulse, _) = map_measurements([bp, pulse], CTX)
    assert bits["meta"] == {"profile": [PROFILE + "PhdBitsEnumerationObservation"]}
    assert bits["code"] == {
        "coding": [
            {"system": MDC, "code": "8410608", "display": "MDC_BLOOD_PRESSURE_MEASUREMENT_STATUS"}
        ],
        "text": "Blood pressure measurement status",
    }
    assert bits["identifier"] == [
        {
            "system": PHD_ID,
            "value": "001BDC0FFFFE1234-MRN42-urn:oid:2.999.1-8410608-20240417204159.00",
        }
    ]
    assert bits["category"] == [PHD_CATEGORY]
    assert bits["effectiveDateTime"] == "2024-04-17T20:41:59Z"
    assert bits["component"] == [
        {
            "code": {"coding": [{"system": ASN1, "code": code, "display": display}]},
            "valueBoolean": True,
        }
        for code, display in (
            ("8410608.0", "body-movement"),
            ("8410608.1", "cuff-too-loose"),
            ("8410608.2", "irregular-pulse"),
            ("8410608.5", "improper-body-position"),
        )
    ]
    assert bits["derivedFrom"] == [
        {"reference": mapped_bp.full_url},
        {"reference": mapped_pulse.full_url},
    ]


def test_pulse_rate_conditions_above_and_below_range() -> None:
    # BLS measurement status bits 3-4 (pulse rate range) → ASN1ToHL7 8410608.3 / .4.
    for condition, code in (
        (Condition.PULSE_RATE_ABOVE_RANGE, "8410608.3"),
        (Condition.PULSE_RATE_BELOW_RANGE, "8410608.4"),
    ):
        _, bits = observations(
            Measurement(149546, SFloat(60, 0), 2720, conditions=frozenset({condition}))
        )
        assert [c["code"]["coding"][0]["code"] for c in bits["component"]] == [code]


def test_sensor_contact_not_detected_is_a_leadwire_loss_event() -> None:
    # docs/standards.md vector `04 FF`: 255 /min, contact supported but not detected.
    hr, bits = observations(*HeartRateMeasurement.from_bytes(bytes.fromhex("04FF")).measurements())
    assert hr["valueQuantity"]["value"] == Decimal(255)
    assert bits["component"] == [
        {
            "code": {"coding": [{"system": ASN1, "code": "8410584.0", "display": "leadwire-loss"}]},
            "valueBoolean": True,
        }
    ]
    assert "identifier" not in bits  # no device timestamp: nothing to deduplicate on


def test_temperature_with_body_site_and_local_device_time() -> None:
    ts = DateTime(2025, 1, 8, 19, 7, 48)
    eastern = dt.timezone(dt.timedelta(hours=-5))
    ctx = MappingContext(SENSOR, GATEWAY, RECEIVED, tz=eastern, patient=PATIENT)
    obs = one(Measurement(150364, Float.from_decimal("36.5"), 6048, ts, body_site="armpit"), ctx)
    # PHD IG example temperature-observation.json: 36.5 Cel, 2025-01-08T19:07:48-05:00.
    assert obs["effectiveDateTime"] == "2025-01-08T19:07:48-05:00"
    assert obs["valueQuantity"] == {
        "value": Decimal("36.5"),
        "unit": "°C",
        "system": UCUM,
        "code": "Cel",
    }
    assert obs["code"]["coding"][1]["code"] == "8310-5"
    assert obs["bodySite"] == {
        "coding": [
            {
                "system": "http://snomed.info/sct",
                "code": "422543003",
                "display": "Structure of axillary fossa",
            }
        ],
        "text": "armpit",
    }


def test_ecg_waveform_maps_to_sampled_data() -> None:
    # GHS ECG lead II, mV, 250 Hz: physical = offset + scale × sample (PhdRtsaObservation notes).
    samples = SampleArray(
        scale_factor=Float.from_decimal("0.005"),
        offset=Float.from_decimal("-3.40"),
        period_s=Float.from_decimal("0.004"),
        samples_per_period=1,
        bytes_per_sample=2,
        samples=(12, -7, 0, 2047),
    )
    obs = one(Measurement(131330, unit_code=4274, samples=samples))
    assert obs["meta"] == {"profile": [PROFILE + "PhdRtsaObservation"]}
    assert obs["category"] == [PHD_CATEGORY]
    assert obs["valueSampledData"] == {
        "origin": {"value": Decimal("-3.40"), "unit": "mV", "system": UCUM, "code": "mV"},
        "period": Decimal("4.000"),
        "factor": Decimal("0.005"),
        "dimensions": 1,
        "data": "12 -7 0 2047",
    }
    text = dumps(obs)
    assert '"period":4.000' in text
    assert '"origin":{"value":-3.40,' in text


def test_samples_per_period_divide_the_period() -> None:
    # One second of 250 samples: 4 ms between samples.
    samples = SampleArray(
        Float.from_decimal("0.01"), Float(0, 0), Float(1, 0), 250, 2, tuple(range(250))
    )
    obs = one(Measurement(131330, unit_code=4274, samples=samples))
    assert obs["valueSampledData"]["period"] == Decimal(4)
    assert obs["valueSampledData"]["dimensions"] == 1


def test_unusable_sample_scaling_is_an_error() -> None:
    samples = SampleArray(Float.of(Special.NAN), Float(0, 0), Float(4, -3), 1, 2, (1, 2))
    obs = one(Measurement(131330, unit_code=4274, samples=samples))
    assert "valueSampledData" not in obs
    assert obs["dataAbsentReason"] == {
        "coding": [{"system": DAR, "code": "error", "display": "Error"}]
    }


# -- Precision ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        # PHD IG STU2 "Mder FLOATs and SFLOATs" (FLOATS.md), FLOAT table.
        (0x00000002, "2"),
        (0xFF000014, "2.0"),
        (0xFE0000C8, "2.00"),
        (0x01000002, "20"),
        (0x02000002, "200"),
        (0x000000C8, "200"),
        (0x000004D2, "1234"),
        (0x00FFFB2E, "-1234"),
    ],
)
def test_float_precision_reaches_the_json_text(raw: int, text: str) -> None:
    obs = one(Measurement(150456, Float.from_raw(raw), 544))
    assert f'"valueQuantity":{{"value":{text},' in dumps(obs)


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        # PHD IG STU2 FLOATS.md, SFLOAT table; docs/standards.md: 0xF014 = 2.0, 0xE0C8 = 2.00,
        # 0x1002 = 20.
        (0x0002, "2"),
        (0xF014, "2.0"),
        (0xE0C8, "2.00"),
        (0x1002, "20"),
        (0x2002, "200"),
        (0x04D2, "1234"),
        (0x0B2E, "-1234"),
    ],
)
def test_sfloat_precision_reaches_the_json_text(raw: int, text: str) -> None:
    obs = one(Measurement(150456, SFloat.from_raw(raw), 544))
    assert f'"value":{text},' in dumps(obs)
    parsed = loads(dumps(obs))["valueQuantity"]["value"]
    assert Decimal(parsed).as_tuple() == Decimal(text).as_tuple()


# -- Special values and measurement status ---------------------------------------------------------


@pytest.mark.parametrize(
    ("special", "code", "display"),
    [
        # docs/standards.md special values; PHD IG FLOATS.md "Special FLOAT and SFLOAT Values".
        (Special.NAN, "not-a-number", "Not a Number (NaN)"),
        (Special.NRES, "error", "Error"),
        (Special.POSITIVE_INFINITY, "positive-infinity", "Positive Infinity (PINF)"),
        (Special.NEGATIVE_INFINITY, "negative-infinity", "Negative Infinity (NINF)"),
        (Special.RESERVED, "error", "Error"),
    ],
)
def test_special_values_are_absent_with_a_reason(special: Special, code: str, display: str) -> None:
    for number in (SFloat.of(special), Float.of(special)):
        obs = one(Measurement(150456, number, 544))
        assert "valueQuantity" not in obs
        assert obs["dataAbsentReason"] == {
            "coding": [{"system": DAR, "code": code, "display": display}]
        }
        assert obs["status"] == "final"


def test_special_value_in_a_compound_component() -> None:
    bp = Measurement(
        150020,
        unit_code=3872,
        components=(
            Measurement(150021, SFloat(120, 0), 3872),
            Measurement(150022, SFloat.of(Special.NRES), 3872),
        ),
    )
    components = one(bp)["component"]
    assert "valueQuantity" in components[0]
    assert components[1]["dataAbsentReason"] == {
        "coding": [{"system": DAR, "code": "error", "display": "Error"}]
    }
    assert "valueQuantity" not in components[1]


# Each MeasurementStatus bit, as the PHD IG STU2 PhdBaseObservation notes "Measurement Status"
# table (and, for demo/validated/ongoing, the STU 1.1 BaseObservationProfile table) map it:
# (status, dataAbsentReason code, interpretation code, security code).
STATUS_CASES = [
    (MeasurementStatus.INVALID, "entered-in-error", "error", None, None),
    (MeasurementStatus.QUESTIONABLE, "final", None, "questionable", None),
    (MeasurementStatus.NOT_AVAILABLE, "final", "not-performed", None, None),
    (MeasurementStatus.CALIBRATION_ONGOING, "final", None, "calibration-ongoing", None),
    (MeasurementStatus.TEST_DATA, "final", None, None, "HTEST"),
    (MeasurementStatus.DEMO_DATA, "final", None, None, "HTEST"),
    (MeasurementStatus.VALIDATED, "final", None, "validated-data", None),
    (MeasurementStatus.EARLY_INDICATION, "preliminary", None, "early-indication", None),
    (MeasurementStatus.ONGOING, "final", "temp-unknown", None, None),
    (MeasurementStatus.FULLY_QUALIFIED, "final", None, None, None),
    (MeasurementStatus.FROM_STORAGE, "final", None, None, None),
]


def test_every_status_bit_has_a_case() -> None:
    assert {case[0] for case in STATUS_CASES} == set(MeasurementStatus)


@pytest.mark.parametrize(("flag", "status", "dar", "interpretation", "security"), STATUS_CASES)
def test_status_bit_mapping(
    flag: MeasurementStatus,
    status: str,
    dar: str | None,
    interpretation: str | None,
    security: str | None,
) -> None:
    obs = one(Measurement(150456, SFloat(97, 0), 544, status=flag))
    assert obs["status"] == status
    if dar is None:
        assert "dataAbsentReason" not in obs
        assert obs["valueQuantity"]["value"] == Decimal(97)
    else:
        assert "valueQuantity" not in obs
        assert [c["code"] for c in obs["dataAbsentReason"]["coding"]] == [dar]
        assert obs["dataAbsentReason"]["coding"][0]["system"] == DAR
    if interpretation is None:
        assert "interpretation" not in obs
    else:
        assert [i["coding"][0]["code"] for i in obs["interpretation"]] == [interpretation]
        assert obs["interpretation"][0]["coding"][0]["system"] == POCD_STATUS
    if security is None:
        assert "security" not in obs["meta"]
    else:
        assert obs["meta"]["security"] == [
            {"system": ACT_REASON, "code": security, "display": "test health data"}
        ]


def test_status_absent_reason_wins_over_a_special_value() -> None:
    # PhdNumericObservation.dataAbsentReason comment: the Measurement-Status mapping takes
    # precedence over a special FLOAT value.
    obs = one(Measurement(150456, SFloat.of(Special.NAN), 544, status=MeasurementStatus.ONGOING))
    assert obs["dataAbsentReason"]["coding"][0]["code"] == "temp-unknown"


def test_combined_status_bits() -> None:
    flags = (
        MeasurementStatus.INVALID
        | MeasurementStatus.NOT_AVAILABLE
        | MeasurementStatus.EARLY_INDICATION
        | MeasurementStatus.QUESTIONABLE
        | MeasurementStatus.TEST_DATA
        | MeasurementStatus.DEMO_DATA
    )
    obs = one(Measurement(150456, SFloat(97, 0), 544, status=flags))
    assert obs["status"] == "entered-in-error"  # more severe than preliminary
    assert obs["dataAbsentReason"]["coding"][0]["code"] == "error"  # invalid before not-available
    assert [i["coding"][0]["code"] for i in obs["interpretation"]] == [
        "questionable",
        "early-indication",
    ]
    assert [s["code"] for s in obs["meta"]["security"]] == ["HTEST"]  # once, not per bit


def test_compound_with_an_error_status_has_no_components() -> None:
    # PhdCompoundNumericObservation: component entries are NOT present if the Measurement-Status
    # indicates an error.
    bp = Measurement(
        150020,
        unit_code=3872,
        status=MeasurementStatus.INVALID,
        components=(Measurement(150021, SFloat(120, 0), 3872),),
    )
    obs = one(bp)
    assert "component" not in obs
    assert obs["dataAbsentReason"]["coding"][0]["code"] == "error"


def test_component_status_bits_stay_on_the_component() -> None:
    bp = Measurement(
        150020,
        unit_code=3872,
        components=(
            Measurement(150021, SFloat(120, 0), status=MeasurementStatus.QUESTIONABLE),
            Measurement(150022, SFloat(80, 0), status=MeasurementStatus.NOT_AVAILABLE),
        ),
    )
    obs = one(bp)
    sys_c, dia_c = obs["component"]
    assert sys_c["valueQuantity"]["code"] == "mm[Hg]"  # the compound's unit applies
    assert sys_c["interpretation"][0]["coding"][0]["code"] == "questionable"
    assert dia_c["dataAbsentReason"]["coding"][0]["code"] == "not-performed"
    assert "interpretation" not in obs


def test_test_data_labels_the_conditions_observation_too() -> None:
    m = Measurement(
        149546,
        SFloat(60, 0),
        2720,
        status=MeasurementStatus.TEST_DATA,
        conditions=frozenset({Condition.IRREGULAR_PULSE}),
    )
    _, bits = observations(m)
    assert [s["code"] for s in bits["meta"]["security"]] == ["HTEST"]


# -- Identifier and time --------------------------------------------------------------------------


def test_identifier_reproduces_the_ig_example() -> None:
    # PHD IG example numeric-spotnumeric.json: pulse rate 149530 at 2018-11-13 17:59:03 from PHD
    # 74E8FFFEFF051C00, patient identifier sisansarahId (urn:oid:2.999.1.2.3.4.5.6.7.8.10),
    # supplemental type MDC_MODALITY_SPOT 150588.
    sensor = SensorInfo("74E8FFFEFF051C00", bt_address="001C05FFE874")
    patient = PatientRef(
        "Patient/patientExample-1", "urn:oid:2.999.1.2.3.4.5.6.7.8.10", "sisansarahId"
    )
    ctx = MappingContext(sensor, GATEWAY, RECEIVED, patient=patient)
    m = Measurement(
        149530,
        SFloat(48, 0),
        2720,
        timestamp=DateTime(2018, 11, 13, 17, 59, 3),
        supplemental=(150588,),
    )
    (mapped,) = map_measurements([m], ctx)
    expected = (
        "74E8FFFEFF051C00-sisansarahId-urn:oid:2.999.1.2.3.4.5.6.7.8.10"
        "-149530-20181113175903.00-150588"
    )
    assert mapped.resource["identifier"] == [{"system": PHD_ID, "value": expected}]
    assert mapped.if_none_exist == f"identifier={PHD_ID}|{expected}"
    r4b_model(mapped.resource)
    assert mapped.resource["component"] == [
        {
            "code": {
                "coding": [
                    {"system": MDC, "code": "68193", "display": "MDC_ATTR_SUPPLEMENTAL_TYPES"}
                ]
            },
            "valueCodeableConcept": {
                "coding": [{"system": MDC, "code": "150588", "display": "MDC_MODALITY_SPOT"}]
            },
        }
    ]


def test_identifier_with_a_logical_patient_id_and_without_patient() -> None:
    m = Measurement(150364, Float.from_decimal("37.0"), 6048, DateTime(2024, 2, 29, 23, 59, 59))
    with_id = MappingContext(SENSOR, GATEWAY, RECEIVED, patient=PatientRef("Patient/123"))
    no_patient = MappingContext(SENSOR, GATEWAY, RECEIVED)
    assert (
        one(m, with_id)["identifier"][0]["value"] == "001BDC0FFFFE1234-123-150364-20240229235959.00"
    )
    obs = one(m, no_patient)
    assert obs["identifier"][0]["value"] == "001BDC0FFFFE1234--150364-20240229235959.00"
    assert "subject" not in obs


def test_bluetooth_address_stands_in_for_a_missing_system_id() -> None:
    ctx = MappingContext(SensorInfo("00:1c:05:ff:e8:74"), GATEWAY, RECEIVED)
    m = Measurement(150364, Float.from_decimal("37.0"), 6048, DateTime(2024, 1, 1, 0, 0, 0))
    assert one(m, ctx)["identifier"][0]["value"] == "001C05FFE874--150364-20240101000000.00"


def test_no_device_timestamp_no_identifier_and_receive_time() -> None:
    (mapped,) = map_measurements([Measurement(150456, SFloat(97, 0), 544)], CTX)
    assert "identifier" not in mapped.resource
    assert mapped.if_none_exist is None
    assert mapped.resource["effectiveDateTime"] == "2025-03-04T05:06:07Z"


def test_receive_time_keeps_its_offset_and_fraction() -> None:
    received = dt.datetime(2025, 3, 4, 5, 6, 7, 250000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    ctx = MappingContext(SENSOR, GATEWAY, received)
    obs = one(Measurement(150456, SFloat(97, 0), 544), ctx)
    assert obs["effectiveDateTime"] == "2025-03-04T05:06:07.250000+02:00"


@pytest.mark.parametrize(
    ("timestamp", "compact"),
    [
        # The docs/standards.md BP vector: year unknown.
        (DateTime(0, 4, 17, 20, 41, 59), "00000417204159.00"),
        (DateTime(2024, 2, 31, 1, 2, 3), "20240231010203.00"),  # complete but impossible
    ],
)
def test_unusable_device_time_falls_back_to_receive_time(timestamp: DateTime, compact: str) -> None:
    obs = one(Measurement(150364, Float.from_decimal("37.0"), 6048, timestamp))
    assert obs["effectiveDateTime"] == "2025-03-04T05:06:07Z"
    assert obs["identifier"][0]["value"].endswith(f"-150364-{compact}")


def test_device_clock_not_set_uses_the_receive_time_but_keeps_the_device_timestamp_id() -> None:
    m = Measurement(
        150456,
        SFloat(97, 0),
        544,
        timestamp=DateTime(2000, 1, 1, 0, 0, 5),
        conditions=frozenset({Condition.DEVICE_CLOCK_NOT_SET}),
    )
    (obs,) = observations(m)  # no BITs observation for this condition
    assert obs["effectiveDateTime"] == "2025-03-04T05:06:07Z"
    assert obs["identifier"][0]["value"].endswith("-150456-20000101000005.00")


CTS_REF_URL = "http://hl7.org/fhir/uv/phd/StructureDefinition/CoincidentTimeStampReference"
# The sensor's clock read at RECEIVED - 2 s: it said 05:05:35, i.e. it runs 30 s slow.
SLOW_CLOCK = ClockAnchor(dt.datetime(2025, 3, 4, 5, 5, 35), RECEIVED - dt.timedelta(seconds=2))  # noqa: DTZ001


def test_a_stamp_of_a_slow_clock_is_moved_and_refers_to_the_coincident_time_stamp() -> None:
    """One coincident time stamp per call, last, referred to by every moved Observation and
    BITs Observation; the identifier and device_time keep the sensor's own stamp."""
    stamp = DateTime(2025, 3, 4, 4, 0, 0)
    m = Measurement(
        150456,
        SFloat(97, 0),
        544,
        timestamp=stamp,
        conditions=frozenset({Condition.BODY_MOVEMENT}),
    )
    ctx = MappingContext(SENSOR, GATEWAY, RECEIVED, patient=PATIENT, anchor=SLOW_CLOCK, stored=True)
    *mapped, cts = map_measurements([m, m], ctx)
    assert cts.update_url is not None
    assert cts.resource["valueDateTime"] == "2025-03-04T05:05:35Z"
    assert cts.resource["effectiveDateTime"] == "2025-03-04T05:06:05Z"
    assert cts.resource["subject"] == {"reference": SENSOR_REF}
    assert cts.resource["device"] == {"reference": GATEWAY_REF}
    assert len(mapped) == 3  # two readings (one identifier: the same record) and one BITs
    for r in mapped:
        assert r.resource["effectiveDateTime"] == "2025-03-04T04:00:30Z"
        assert {"url": CTS_REF_URL, "valueReference": {"reference": cts.full_url}} in r.resource[
            "extension"
        ]
        assert r.resource["identifier"][0]["value"].endswith("-20250304040000.00")
        assert r.device_time == dt.datetime(2025, 3, 4, 4, 0, tzinfo=dt.UTC)
        assert r.undated is None
        r4b_model(r.resource)
    r4b_model(cts.resource)


def test_a_clock_on_time_moves_nothing_and_adds_no_coincident_time_stamp() -> None:
    on_time = ClockAnchor(dt.datetime(2025, 3, 4, 5, 6, 5), RECEIVED - dt.timedelta(seconds=2))  # noqa: DTZ001
    ctx = MappingContext(SENSOR, GATEWAY, RECEIVED, anchor=on_time, stored=True)
    m = Measurement(150456, SFloat(97, 0), 544, timestamp=DateTime(2025, 3, 4, 4, 0, 0))
    (mapped,) = map_measurements([m], ctx)
    assert mapped.resource["effectiveDateTime"] == "2025-03-04T04:00:00Z"
    assert all(e["url"] != CTS_REF_URL for e in mapped.resource["extension"])


@pytest.mark.parametrize("anchor", [SLOW_CLOCK, None])
def test_a_stamp_of_a_clock_never_set_is_undated_whatever_the_anchor(
    anchor: ClockAnchor | None,
) -> None:
    m = Measurement(150456, SFloat(97, 0), 544, timestamp=DateTime(2000, 1, 1, 3, 0, 0))
    ctx = MappingContext(SENSOR, GATEWAY, RECEIVED, anchor=anchor, stored=True)
    (mapped,) = map_measurements([m], ctx)
    assert mapped.undated == UNSET_CLOCK
    assert mapped.device_time == dt.datetime(2000, 1, 1, 3, tzinfo=dt.UTC)
    assert mapped.resource["effectiveDateTime"] == "2000-01-01T03:00:00Z"  # kept as stamped


def test_a_stored_record_without_a_usable_time_stamp_is_undated_a_live_one_takes_reception() -> (
    None
):
    """The time of reception is the reading's time only for a live reading; for a record from
    the sensor's memory it would be a false date."""
    for m in (
        Measurement(150456, SFloat(97, 0), 544),
        Measurement(150456, SFloat(97, 0), 544, timestamp=DateTime(0, 4, 17, 20, 41, 59)),
        Measurement(
            150456,
            SFloat(97, 0),
            544,
            timestamp=DateTime(2000, 1, 1, 0, 0, 5),
            conditions=frozenset({Condition.DEVICE_CLOCK_NOT_SET}),
        ),
    ):
        (live,) = map_measurements([m], CTX)
        assert live.undated is None
        assert live.resource["effectiveDateTime"] == "2025-03-04T05:06:07Z"
        stored_ctx = MappingContext(SENSOR, GATEWAY, RECEIVED, patient=PATIENT, stored=True)
        (stored,) = map_measurements([m], stored_ctx)
        assert stored.undated == NO_TIME_STAMP


def test_same_measurement_same_full_url_and_distinct_live_readings_distinct() -> None:
    rr = Measurement(147240, Float.from_decimal("812.5"), 2194)
    first = map_measurements([rr, rr], CTX)
    again = map_measurements([rr, rr], CTX)
    assert [r.full_url for r in first] == [r.full_url for r in again]
    assert first[0].full_url != first[1].full_url  # two beats with equal RR in one notification


def test_naive_receive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        MappingContext(SENSOR, GATEWAY, dt.datetime(2025, 1, 1))  # noqa: DTZ001


def test_patient_identifier_needs_both_parts() -> None:
    with pytest.raises(ValueError, match="both"):
        PatientRef("Patient/1", identifier_system="urn:oid:1.2")


# -- Codes the table does not know ---------------------------------------------------------------


def test_unknown_codes_are_kept_not_dropped() -> None:
    m = Measurement(
        0x0002_FFFF, SFloat(5, 0), 0x1234, body_site="elbow", supplemental=(0x0002_FFFE,)
    )
    obs = one(m)
    assert obs["code"] == {"coding": [{"system": MDC, "code": str(0x0002_FFFF)}]}
    assert obs["valueQuantity"] == {
        "value": Decimal(5),
        "unit": f"MDC {0x1234}",
        "system": MDC,
        "code": str(0x1234),
    }
    assert obs["bodySite"] == {"text": "elbow"}
    assert obs["component"][0]["valueCodeableConcept"] == {
        "coding": [{"system": MDC, "code": str(0x0002_FFFE)}]
    }
    assert obs["category"] == [PHD_CATEGORY]


def test_measurement_without_value_says_unknown() -> None:
    obs = one(Measurement(150456, None, 544))
    assert obs["dataAbsentReason"]["coding"][0]["code"] == "unknown"


# -- Any measurement gives valid FHIR --------------------------------------------------------------

KNOWN_TYPES = [147842, 149530, 149546, 150456, 150364, 147240, 131330, 150452]
KNOWN_UNITS = [512, 544, 2194, 2720, 3843, 3872, 4274, 4416, 6048]


def _numbers() -> st.SearchStrategy[SFloat | Float]:
    sfloat = st.integers(0, 0xFFFF).map(SFloat.from_raw)
    flt = st.integers(0, 0xFFFFFFFF).map(Float.from_raw)
    return st.one_of(sfloat, flt)


def _timestamps() -> st.SearchStrategy[DateTime | None]:
    return st.none() | st.builds(
        DateTime,
        st.sampled_from([0, 1999, 2024, 9999]),
        st.integers(0, 12),
        st.integers(0, 31),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
    )


def _samples() -> st.SearchStrategy[SampleArray]:
    return st.builds(
        SampleArray,
        st.integers(0, 0xFFFFFFFF).map(Float.from_raw),
        st.integers(0, 0xFFFFFFFF).map(Float.from_raw),
        st.integers(0, 0xFFFFFFFF).map(Float.from_raw),
        st.integers(0, 255),
        st.sampled_from([1, 2, 4]),
        st.lists(st.integers(-32768, 32767), max_size=20).map(tuple),
    )


def _measurements() -> st.SearchStrategy[Measurement]:
    statuses = st.integers(0, (1 << len(MeasurementStatus)) - 1).map(MeasurementStatus)
    component = st.builds(
        Measurement,
        st.sampled_from([150021, 150022, 150023]),
        st.none() | _numbers(),
        st.none() | st.sampled_from(KNOWN_UNITS),
        status=statuses,
    )
    return st.builds(
        Measurement,
        st.sampled_from(KNOWN_TYPES) | st.integers(1, 0xFFFFFFFF),
        st.none() | _numbers(),
        st.none() | st.sampled_from(KNOWN_UNITS) | st.integers(0, 0xFFFF),
        _timestamps(),
        statuses,
        st.frozensets(st.sampled_from(list(Condition))),
        st.lists(component, max_size=3).map(tuple),
        st.none() | _samples(),
        st.none() | st.sampled_from(["armpit", "tympanum", "chest", "nowhere"]),
        st.lists(st.sampled_from([150580, 150584, 150588, 99999]), max_size=2).map(tuple),
    )


@settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(_measurements(), min_size=1, max_size=4))
def test_any_measurements_map_to_valid_r4b_resources(ms: list[Measurement]) -> None:
    mapped = map_measurements(ms, CTX)
    assert len(mapped) >= len(ms)
    for r in mapped:
        r4b_model(r.resource)
        assert loads(dumps(r.resource)) == r.resource
        assert r.full_url.startswith("urn:uuid:")


@pytest.mark.parametrize(
    ("period", "per_period"),
    [(Float(0, 0), 1), (Float(-4, -3), 1), (Float(4, -3), 0)],
)
def test_sample_array_without_a_time_axis_is_an_error(period: Float, per_period: int) -> None:
    samples = SampleArray(Float(1, 0), Float(0, 0), period, per_period, 2, (1, 2))
    obs = one(Measurement(131330, unit_code=4274, samples=samples))
    assert obs["dataAbsentReason"]["coding"][0]["code"] == "error"


def test_sensor_and_gateway_cannot_share_an_identity() -> None:
    with pytest.raises(ValueError, match="share the system id"):
        MappingContext(SensorInfo("ECDE3D4E58532D31"), GATEWAY, RECEIVED)
