"""The FHIR code table (gateway/fhir/codes.toml) against docs/standards.md and the PHD IG."""

from __future__ import annotations

import datetime as dt
import importlib.resources
import re
import tomllib

import pytest
from pydantic import ValidationError

from gateway.fhir import GatewayInfo, MappingContext, SensorInfo, map_measurements
from gateway.fhir.codes import build_code_table, code_table, load_code_table
from gateway.fhir.validate import r4b_model
from gateway.ieee11073 import mdc
from gateway.ieee11073.measurement import Condition, Measurement, MeasurementStatus, SampleArray
from gateway.ieee11073.numbers import Float, SFloat, Special

CTX = MappingContext(
    SensorInfo("001BDC0FFFFE1234"),
    GatewayInfo("ECDE3D4E58532D31"),
    dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
)

# docs/standards.md "PHD IG mapping" table: MDC code → (LOINC codes, UCUM unit, MDC unit).
STANDARDS_TABLE = [
    (mdc.MDC_ECG_HEART_RATE, ["8867-4"], "/min", mdc.MDC_DIM_BEAT_PER_MIN),
    (mdc.MDC_PULS_OXIM_PULS_RATE, ["8867-4"], "/min", mdc.MDC_DIM_BEAT_PER_MIN),
    (mdc.MDC_PULS_RATE_NON_INV, ["8867-4"], "/min", mdc.MDC_DIM_BEAT_PER_MIN),
    (mdc.MDC_PULS_OXIM_SAT_O2, ["59408-5", "2708-6"], "%", mdc.MDC_DIM_PERCENT),
    (mdc.MDC_PRESS_BLD_NONINV_SYS, ["8480-6"], "mm[Hg]", mdc.MDC_DIM_MMHG),
    (mdc.MDC_PRESS_BLD_NONINV_DIA, ["8462-4"], "mm[Hg]", mdc.MDC_DIM_MMHG),
    (mdc.MDC_PRESS_BLD_NONINV_MEAN, ["8478-0"], "mm[Hg]", mdc.MDC_DIM_MMHG),
    (mdc.MDC_TEMP_BODY, ["8310-5"], "Cel", mdc.MDC_DIM_DEGC),
    (mdc.MDC_ECG_TIME_PD_RR_GL, [], "ms", mdc.MDC_DIM_MILLI_SEC),
]
WAVEFORMS = [
    mdc.MDC_ECG_ELEC_POTL,
    mdc.MDC_ECG_ELEC_POTL_I,
    mdc.MDC_ECG_ELEC_POTL_II,
    mdc.MDC_ECG_ELEC_POTL_III,
]
# FHIR R4 vital signs (observation-vitalsigns): heart rate, SpO2, BP, body temperature.
VITAL = {147842, 149530, 149546, 150456, 150020, 150021, 150022, 150023, 150364}


def _codings(resource: dict[str, object], system: str) -> list[str]:
    code = resource["code"]
    assert isinstance(code, dict)
    return [c["code"] for c in code["coding"] if c["system"] == system]


@pytest.mark.parametrize(("type_code", "loinc", "ucum", "unit"), STANDARDS_TABLE)
def test_design_table_codes_and_units(
    type_code: int, loinc: list[str], ucum: str, unit: int
) -> None:
    (mapped,) = map_measurements([Measurement(type_code, SFloat(72, 0), unit)], CTX)
    obs = mapped.resource
    r4b_model(obs)
    assert obs["code"]["coding"][0] == {
        "system": "urn:iso:std:iso:11073:10101",
        "code": str(type_code),
        "display": code_table().mdc[type_code].ref,
    }
    assert _codings(obs, "http://loinc.org") == loinc
    assert obs["valueQuantity"]["system"] == "http://unitsofmeasure.org"
    assert obs["valueQuantity"]["code"] == ucum
    categories = [c["coding"][0]["code"] for c in obs["category"]]
    assert categories == (["phd", "vital-signs"] if type_code in VITAL else ["phd"])


def test_design_table_blood_pressure_compound() -> None:
    bp = Measurement(
        mdc.MDC_PRESS_BLD_NONINV,
        unit_code=mdc.MDC_DIM_KILO_PASCAL,
        components=tuple(
            Measurement(code, Float.from_decimal("16.0")) for code in (150021, 150022, 150023)
        ),
    )
    (mapped,) = map_measurements([bp], CTX)
    obs = mapped.resource
    r4b_model(obs)
    assert _codings(obs, "urn:iso:std:iso:11073:10101") == ["150020"]
    assert _codings(obs, "http://loinc.org") == ["85354-9"]
    assert [_codings(c, "http://loinc.org") for c in obs["component"]] == [
        ["8480-6"],
        ["8462-4"],
        ["8478-0"],
    ]
    assert {c["valueQuantity"]["code"] for c in obs["component"]} == {"kPa"}
    assert "valueQuantity" not in obs


@pytest.mark.parametrize("type_code", WAVEFORMS)
def test_design_table_ecg_leads_in_millivolt(type_code: int) -> None:
    samples = SampleArray(Float(1, -3), Float(0, 0), Float(4, -3), 1, 2, (1, 2, 3))
    (mapped,) = map_measurements(
        [Measurement(type_code, unit_code=mdc.MDC_DIM_MILLI_VOLT, samples=samples)], CTX
    )
    obs = mapped.resource
    r4b_model(obs)
    assert _codings(obs, "http://loinc.org") == []
    assert obs["valueSampledData"]["origin"]["code"] == "mV"


def test_pleth_waveform_is_unitless() -> None:
    samples = SampleArray(Float(1, 0), Float(0, 0), Float(8, -3), 1, 1, (10, 20))
    (mapped,) = map_measurements(
        [Measurement(mdc.MDC_PULS_OXIM_PLETH, unit_code=mdc.MDC_DIM_DIMLESS, samples=samples)],
        CTX,
    )
    r4b_model(mapped.resource)
    assert mapped.resource["valueSampledData"]["origin"]["code"] == "1"


@pytest.mark.parametrize(
    ("unit", "ucum"),
    [
        # docs/standards.md: the UCUM units the gateway emits.
        (mdc.MDC_DIM_BEAT_PER_MIN, "/min"),
        (mdc.MDC_DIM_PERCENT, "%"),
        (mdc.MDC_DIM_MMHG, "mm[Hg]"),
        (mdc.MDC_DIM_KILO_PASCAL, "kPa"),
        (mdc.MDC_DIM_DEGC, "Cel"),
        (mdc.MDC_DIM_FAHR, "[degF]"),
        (mdc.MDC_DIM_MILLI_SEC, "ms"),
        (mdc.MDC_DIM_MILLI_VOLT, "mV"),
    ],
)
def test_units(unit: int, ucum: str) -> None:
    assert code_table().units[unit].ucum == ucum


def test_thermometer_body_sites_all_have_snomed_codes() -> None:
    # HTS Temperature Type keys as the hts codec emits them.
    keys = ["armpit", "body", "ear", "finger", "gi-tract", "mouth", "rectum", "toe", "tympanum"]
    sites = code_table().body_sites
    assert all(sites[k].coding.system == "http://snomed.info/sct" for k in keys)
    # HL7 Vital Signs IG value set bodyTempMeasBodyLocationPrecoordVS codes.
    assert sites["armpit"].coding.code == "422543003"
    assert sites["tympanum"].coding.code == "42859004"
    assert sites["mouth"].coding.code == "74262004"
    assert sites["rectum"].coding.code == "34402009"


def test_every_status_bit_special_value_and_condition_is_mapped() -> None:
    table = code_table()
    assert [m.flag for m in table.status] == list(MeasurementStatus)
    assert set(table.special) == set(Special)
    assert set(table.conditions) == set(Condition)


# -- The loader rejects a broken table -------------------------------------------------------------


def _packaged_text() -> str:
    resource = importlib.resources.files("gateway.fhir").joinpath("codes.toml")
    return resource.read_text(encoding="utf-8")


def _packaged() -> dict[str, object]:
    return tomllib.loads(_packaged_text())


def test_packaged_table_loads_to_the_cached_table() -> None:
    assert load_code_table(_packaged_text()) == code_table()


def test_malformed_toml_is_refused() -> None:
    with pytest.raises(tomllib.TOMLDecodeError):
        load_code_table(_packaged_text() + "\n[mdc.1\n")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("mdc", "147842", "loinc"), [{"code": "8867", "display": "x"}], "digits-digit"),
        (("status", "INVALID", "data_absent_reason"), "broken", "not defined"),
        (("status", "QUESTIONABLE", "security"), "HTEST", "at most one"),
        (("special", "NAN"), "no-such-reason", "not defined"),
        (
            ("condition", "body-movement"),
            {"bits": 1234, "code": "1234.0", "display": "x"},
            "bits 1234 has no [mdc] entry",
        ),
        (("condition", "body-movement", "display"), None, "go together"),
        (("condition", "body-movement", "code"), "8410609.0", "not a bit of"),
        (("body_site", "armpit", "snomed"), "12ab", "6-18 digits"),
        (("unit", "544", "ref"), "PERCENT", "pattern"),
    ],
)
def test_broken_entries_are_refused(path: tuple[str, ...], value: object, message: str) -> None:
    data = _packaged()
    node: dict[str, object] = data
    for key in path[:-1]:
        child = node[key]
        assert isinstance(child, dict)
        node = child
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    with pytest.raises(ValidationError, match=re.escape(message)):
        build_code_table(data)


def test_missing_status_entry_is_refused() -> None:
    data = _packaged()
    status = data["status"]
    assert isinstance(status, dict)
    del status["FROM_STORAGE"]
    with pytest.raises(ValidationError, match=r"missing \['FROM_STORAGE'\]"):
        build_code_table(data)


def test_unknown_key_is_refused() -> None:
    data = _packaged()
    data["mdc"]["147842"]["colour"] = "red"  # type: ignore[index]
    with pytest.raises(ValidationError, match="colour"):
        build_code_table(data)
