"""The draft report: the number flagger, the report JSON, the FHIR Bundle (validated with
``fhir.resources.R4B``), its signature, and closing a consultation with the real model and a real
store (the draft is enqueued, signed, on the drafts topic)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from contextlib import AsyncExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim import Simulator
from gateway.app import AssistantParts, Gateway
from gateway.assistant.consultation import (
    ConsultationClosedError,
    ConsultationService,
    ConsultationSettings,
)
from gateway.assistant.engine import Engine
from gateway.assistant.grammars import json_schema
from gateway.assistant.prompts import prompt_version
from gateway.assistant.report import (
    PASSAGE_SYSTEM,
    PROMPT_SYSTEM,
    REPORT_ORDER,
    UNSUPPORTED_NUMBER_EXTENSION,
    Citation,
    DraftInputs,
    Finding,
    MedicationCheck,
    MedicationProposal,
    ModelIdentity,
    ReportContent,
    ReportFormatError,
    UnsupportedNumber,
    build_draft,
    fallback_schema,
    medication_check,
    observation_values,
    parse_report,
    report_schema,
    unsupported_numbers,
)
from gateway.ble.bumble import BumbleAdapter
from gateway.config import load_settings
from gateway.fhir import jsonio
from gateway.fhir.observation import PatientRef
from gateway.fhir.resource import MappedResource
from gateway.fhir.transparency import AI_PROVENANCE_PROFILE, ai_labels
from gateway.forward.signing import Signer, SigningKey, verify_bundle
from gateway.rag.retriever import DocumentRef, Passage
from gateway.store.aio import AsyncStore
from gateway.store.models import TopicKind
from tests.fakes import (
    GATEWAY,
    HR,
    NOW,
    SPO2,
    FakeRetriever,
    RecordingSensors,
    fake_observation,
    reply_events,
)

VALUES = [Decimal(72), Decimal(97), Decimal(120), Decimal(80)]
MODEL = ModelIdentity(
    "gemma-3-270m", "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", "m.gguf"
)
BP = "85354-9"


# -- the flagger -----------------------------------------------------------------------------------


def test_numbers_that_are_not_observation_values_are_flagged() -> None:
    text = (
        "HR 72 /min, SpO2 97 %, BP 120/80 mm[Hg], temperature 38.5 Cel [1]; code 8867-4, "
        "see urn:uuid:0a1b2c3d-1234-5678-9abc-def012345678. Pulse 72.0 again, 3 doses."
    )
    flags = unsupported_numbers(text, VALUES, "conclusion", ignore=[HR])
    assert flags == [
        UnsupportedNumber("conclusion", "38.5", text.index("38.5")),
        UnsupportedNumber("conclusion", "3", text.index("3 doses")),
    ]


def test_no_numbers_no_flags() -> None:
    assert unsupported_numbers("Stable; SpO2 normal.", [], "conclusion") == []
    assert unsupported_numbers("", VALUES, "conclusion") == []


@settings(derandomize=True, max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["HR", "was", "and", "SpO2", "BP", "(", ")", ",", "/"]),
            st.decimals(min_value=0, max_value=400, places=1, allow_nan=False),
        ),
        max_size=12,
    )
)
def test_flags_are_exactly_the_numbers_outside_the_values(
    parts: list[tuple[str, Decimal]],
) -> None:
    text = " ".join(f"{word} {number}" for word, number in parts)
    flagged = [Decimal(f.text) for f in unsupported_numbers(text, VALUES, "conclusion")]
    assert flagged == [n for _, n in parts if n not in VALUES]


def test_observation_values_include_components() -> None:
    bp = {
        "resourceType": "Observation",
        "component": [
            {"valueQuantity": {"value": Decimal(120)}},
            {"valueQuantity": {"value": Decimal(80)}},
            {"valueQuantity": {"value": Decimal(93)}},
        ],
    }
    assert observation_values(bp) == [Decimal(120), Decimal(80), Decimal(93)]
    assert observation_values(fake_observation(HR, Decimal("72.0"), "/min")) == [Decimal("72.0")]
    absent = {"resourceType": "Observation", "dataAbsentReason": {"text": "error"}}
    assert observation_values(absent) == []


# -- the report JSON -------------------------------------------------------------------------------


def test_parse_report() -> None:
    text = json.dumps(
        {
            "conclusion": "Tachycardia.",
            "findings": [{"code": HR, "text": "HR 128"}, {"text": "No fever"}],
            "medications": [{"text": "Paracetamol", "dose": "500 mg"}, {"text": "Fluids"}],
        }
    )
    assert parse_report(text, [HR]) == ReportContent(
        "Tachycardia.",
        (Finding("HR 128", HR), Finding("No fever")),
        (MedicationProposal("Paracetamol", "500 mg"), MedicationProposal("Fluids")),
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"conclusion": "cut sho', "not complete JSON"),
        ("[]", "expected a JSON object"),
        ('{"conclusion": ""}', "conclusion: expected text"),
        ('{"conclusion": "x", "extra": 1}', "unexpected member"),
        ('{"conclusion": "x", "findings": [{"code": "2339-0", "text": "y"}]}', "not a code"),
        ('{"conclusion": "x", "medications": [{"dose": "1"}]}', "text: expected text"),
        ('{"conclusion": "x", "findings": {}}', "expected a list"),
        ('{"conclusion": "x", "findings": [1]}', "expected objects"),
    ],
)
def test_parse_report_refuses(text: str, problem: str) -> None:
    with pytest.raises(ReportFormatError, match=problem):
        parse_report(text, [HR])


def test_report_schema_limits_codes_and_converts_to_gbnf() -> None:
    schema = report_schema([SPO2, HR])
    finding = schema["properties"]["findings"]["items"]["properties"]
    assert finding["code"] == {"enum": sorted([HR, SPO2])}
    assert "code" not in report_schema()["properties"]["findings"]["items"]["properties"]
    grammar = json_schema(schema, REPORT_ORDER)
    assert "root ::=" in grammar
    assert '"\\"8867-4\\""' in grammar
    assert "root ::=" in json_schema(fallback_schema())


# -- the Bundle ------------------------------------------------------------------------------------


def mapped(code: str, value: Decimal, unit: str, n: int) -> MappedResource:
    return MappedResource(
        f"urn:uuid:00000000-0000-5000-8000-00000000000{n}", fake_observation(code, value, unit)
    )


def validate_resources(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every resource validates (R4B); returns them by fullUrl."""
    by_url: dict[str, dict[str, Any]] = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        by_url[entry["fullUrl"]] = resource
    Bundle.model_validate(bundle)
    return by_url


def of_type(by_url: dict[str, dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in by_url.values() if r["resourceType"] == kind]


def test_draft_bundle_is_valid_fhir_and_flags_invented_numbers() -> None:
    hr = mapped(HR, Decimal(72), "/min", 1)
    spo2 = mapped(SPO2, Decimal(97), "%", 2)
    inputs = DraftInputs(
        consultation_id="c1",
        content=ReportContent(
            "HR 72 /min and SpO2 97 %; BP was 140/90 [1].",
            (Finding("Fever 39.2", HR),),
            (MedicationProposal("Paracetamol", "500 mg every 6 h"),),
        ),
        observations=[hr, spo2],
        gateway=GATEWAY,
        model=MODEL,
        started=NOW,
        issued=NOW + dt.timedelta(minutes=5),
        patient=PatientRef("Patient/p1"),
        checks=[MedicationCheck(True, source="formulary.md § 2")],
        citations=[Citation("formulary.md § 2", "17")],
        prompt_version="sha256:0123456789abcdef",
    )
    draft = build_draft(inputs)
    by_url = validate_resources(draft.bundle)
    assert draft.bundle["type"] == "transaction"
    assert all(e["request"]["method"] == "POST" for e in draft.bundle["entry"])

    (report,) = of_type(by_url, "DiagnosticReport")
    assert report["status"] == "partial"  # unverified (docs/architecture.md)
    assert ai_labels(report) == ["AIAST"]
    assert report["code"]["coding"] == [
        {"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}
    ]
    assert report["subject"] == {"reference": "Patient/p1"}
    assert [r["reference"] for r in report["result"]] == [hr.full_url, spo2.full_url]
    assert all(r["reference"] in by_url for r in report["result"])
    flagged = [
        {x["url"]: next(v for k, v in x.items() if k.startswith("value")) for x in e["extension"]}
        for e in report["extension"]
        if e["url"] == UNSUPPORTED_NUMBER_EXTENSION
    ]
    assert flagged == [
        {"number": "140", "element": "conclusion", "offset": 33},
        {"number": "90", "element": "conclusion", "offset": 37},
        {"number": "39.2", "element": "conclusionCode[0].text", "offset": 6},
    ]
    assert report["conclusionCode"][0]["coding"][0]["code"] == HR

    (proposal,) = of_type(by_url, "MedicationRequest")
    assert (proposal["status"], proposal["intent"]) == ("draft", "proposal")
    assert ai_labels(proposal) == ["AIAST"]
    assert medication_check(proposal) == {"verified": True, "source": "formulary.md § 2"}
    assert proposal["dosageInstruction"] == [{"text": "500 mg every 6 h"}]
    assert proposal["requester"]["reference"] in by_url

    (provenance,) = of_type(by_url, "Provenance")
    assert provenance["meta"]["profile"] == [AI_PROVENANCE_PROFILE]
    sources = [e["what"] for e in provenance["entity"]]
    assert [w.get("reference") for w in sources[:2]] == [hr.full_url, spo2.full_url]
    assert sources[2] == {
        "identifier": {"system": PASSAGE_SYSTEM, "value": "17"},
        "display": "formulary.md § 2",
    }
    assert sources[3]["identifier"] == {"system": PROMPT_SYSTEM, "value": "sha256:0123456789abcdef"}
    targets = {t["reference"] for t in provenance["target"]}
    assert targets == {
        url
        for url, r in by_url.items()
        if r["resourceType"] in {"DiagnosticReport", "MedicationRequest"}
    }
    agents = {
        a["type"]["coding"][0]["code"]: by_url[a["who"]["reference"]] for a in provenance["agent"]
    }
    assert agents["author"]["identifier"][0]["value"] == MODEL.sha256
    assert agents["author"]["deviceName"] == [{"name": "gemma-3-270m", "type": "model-name"}]
    assert agents["assembler"]["meta"]["profile"] == [
        "http://hl7.org/fhir/uv/phd/StructureDefinition/PhgDevice"
    ]


def test_draft_without_patient_or_observations() -> None:
    draft = build_draft(
        DraftInputs(
            consultation_id="c2",
            content=ReportContent("Nothing measured.", (), (MedicationProposal("Rest"),)),
            observations=[],
            gateway=GATEWAY,
            model=MODEL,
            started=NOW,
            issued=NOW,
        )
    )
    by_url = validate_resources(draft.bundle)
    (report,) = of_type(by_url, "DiagnosticReport")
    assert "result" not in report
    assert "subject" not in report
    assert "extension" not in report
    (proposal,) = of_type(by_url, "MedicationRequest")
    assert "display" in proposal["subject"]  # R4 requires a subject


def test_signed_draft_verifies_and_tampering_does_not() -> None:
    signer = Signer(SigningKey.generate(), {"reference": "urn:uuid:gw"})
    hr = mapped(HR, Decimal(72), "/min", 1)
    draft = build_draft(DraftInputs("c3", ReportContent("HR 72."), [hr], GATEWAY, MODEL, NOW, NOW))
    signed = signer.sign_bundle(draft.bundle)
    keys = {signer.kid: signer.key.public_key}
    assert verify_bundle(signed, keys) == signer.kid
    wire = jsonio.loads(jsonio.dumps(signed))  # as it travels
    assert verify_bundle(wire, keys) == signer.kid
    wire["entry"][-2]["resource"]["conclusion"] = "HR 140."
    with pytest.raises(Exception, match="does not match"):
        verify_bundle(wire, keys)


# -- closing a consultation with the model and a real store ----------------------------------------


async def test_close_drafts_signs_and_enqueues(consultation_engine: Engine, tmp_path: Path) -> None:
    signer = Signer(SigningKey.generate(), {"reference": "urn:uuid:gw"})
    store = await AsyncStore.open(tmp_path / "store.db", signer=signer, uplinks=["mqtt"])
    try:
        sensors = RecordingSensors({HR: ["AA:01"], SPO2: ["AA:02"]})
        service = ConsultationService(
            consultation_engine,
            sensors,
            gateway=GATEWAY,
            signer=signer,
            store=store,
            patient=PatientRef("Patient/p1"),
            settings=ConsultationSettings(
                temperature=0.0, max_reply_tokens=8, max_measurements_per_reply=0
            ),
            archive_dir=tmp_path / "consultations",
            clock=lambda: NOW,
        )
        consultation = service.create([HR, SPO2])
        await reply_events(consultation, "Summarise.")
        signed = await service.close(consultation.id)
        items = await store.outbox_items()
    finally:
        await store.close()

    keys = {signer.kid: signer.key.public_key}
    assert verify_bundle(signed, keys) == signer.kid
    by_url = validate_resources(signed)
    (report,) = of_type(by_url, "DiagnosticReport")
    # result = exactly the Observations of the consultation, each inside the Bundle
    assert [r["reference"] for r in report["result"]] == [
        o.mapped.full_url for o in consultation.observations
    ]
    assert [by_url[r["reference"]]["code"]["coding"][0]["code"] for r in report["result"]] == [
        HR,
        SPO2,
    ]
    assert report["conclusion"]
    flags = unsupported_numbers(
        report["conclusion"],
        [v for o in consultation.observations for v in observation_values(o.mapped.resource)],
        "conclusion",
        ignore=[HR, SPO2],
    )
    flagged = [e for e in report.get("extension", []) if e["url"] == UNSUPPORTED_NUMBER_EXTENSION]
    assert [e["extension"][0]["valueString"] for e in flagged][: len(flags)] == [
        f.text for f in flags
    ]
    (provenance,) = of_type(by_url, "Provenance")
    author = next(a for a in provenance["agent"] if a["type"]["coding"][0]["code"] == "author")
    assert by_url[author["who"]["reference"]]["identifier"][0]["value"] == (
        consultation_engine.model_info.sha256
    )
    # stored: the same Bundle, signed, on the drafts topic
    (item,) = [i for i in items if i.kind is TopicKind.DRAFTS]
    assert item.id == signed["id"]
    stored = jsonio.loads(item.payload)
    assert verify_bundle(stored, keys) == signer.kid
    assert {k: v for k, v in stored.items() if k != "signature"} == jsonio.loads(
        jsonio.dumps({k: v for k, v in signed.items() if k != "signature"})
    )
    # closed: archived and let go from memory; the record holds the draft; no more messages, no
    # second close
    assert service.consultations() == []
    record = await service.snapshot(consultation.id)
    assert record["status"] == "closed"
    assert jsonio.dumps(record["draft"]) == jsonio.dumps(signed)
    assert [h["status"] for h in await service.history()] == ["closed"]
    assert record["messages"][-1]["role"] == "report"
    with pytest.raises(ConsultationClosedError):
        consultation.send("More?")
    with pytest.raises(ConsultationClosedError):
        await service.close(consultation.id)


async def test_close_without_messages_falls_back_to_a_short_report(
    consultation_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A full report that does not fit its token budget is retried as a conclusion only."""
    signer = Signer(SigningKey.generate(), {"reference": "urn:uuid:gw"})
    service = ConsultationService(
        consultation_engine,
        RecordingSensors({}),
        gateway=GATEWAY,
        signer=signer,
        settings=ConsultationSettings(report_max_tokens=16, report_fallback_max_tokens=256),
    )
    consultation = service.create()
    with caplog.at_level(logging.INFO, logger="gateway.assistant.consultation"):
        signed = await service.close(consultation.id)
    assert "report attempt failed: the report is not complete JSON" in caplog.text
    by_url = validate_resources(signed)
    (report,) = of_type(by_url, "DiagnosticReport")
    assert "result" not in report
    assert verify_bundle(signed, {signer.kid: signer.key.public_key}) == signer.kid


def test_parse_report_takes_a_raw_newline_inside_a_string() -> None:
    """The grammar's string rule lets the model write a raw newline; the report keeps it."""
    assert parse_report('{"conclusion": "line one\nline two"}') == ReportContent(
        "line one\nline two"
    )


# -- the gateway's consultations name the patient assigned -------------------------------------


async def test_gateway_report_subject_is_the_assigned_patient(
    consultation_engine: Engine, tmp_path: Path
) -> None:
    """The draft's subject is the patient assigned when it is drafted (runtime assignment through
    the API); with none assigned the report has no subject and says so in its proposal."""
    token = "report-patient-token-0123456789abcdef"
    auth = {"Authorization": f"Bearer {token}"}

    async def loader(stack: AsyncExitStack) -> AssistantParts:
        return AssistantParts(consultation_engine)  # the session's engine: not closed here

    config = load_settings(
        data_dir=tmp_path,
        ble={"auto_accept": True},
        http={"port": 0, "token": token},
        consultation={"report_max_tokens": 16, "report_fallback_max_tokens": 256},
    )
    async with Simulator(["thermo"], seed=1) as sim:
        hci = await sim.attach_host()
        async with BumbleAdapter(hci) as adapter:
            gateway = Gateway(config, assistant_loader=loader)
            task = asyncio.create_task(
                gateway.run(backends=adapter.backends, security=adapter), name="gateway"
            )
            try:
                await asyncio.wait_for(gateway.ready.wait(), 30)
                await asyncio.wait_for(gateway.assistant_settled.wait(), 60)
                service = gateway.consultations
                assert service is not None
                base = f"http://127.0.0.1:{gateway.http_port}/api/patient"
                async with aiohttp.ClientSession() as http:
                    async with http.put(
                        base, json={"reference": "Patient/r1"}, headers=auth
                    ) as response:
                        assert response.status == 200
                    assigned = await service.close(service.create().id)
                    async with http.delete(base, headers=auth) as response:
                        assert response.status == 200
                    unassigned = await service.close(service.create().id)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    (report,) = of_type(validate_resources(assigned), "DiagnosticReport")
    assert report["subject"] == {"reference": "Patient/r1"}
    (report,) = of_type(validate_resources(unassigned), "DiagnosticReport")
    assert "subject" not in report


# -- the guards on closing -------------------------------------------------------------------------


FORMULARY = [
    Passage(
        41,
        DocumentRef("formulary.md", "Ward formulary"),
        None,
        ("Analgesics",),
        "Paracetamol: 1 g every 6 h by mouth, at most 4 g a day.",
        0.8,
    )
]


class FixedReport(ConsultationService):
    """The model's report fixed (what the grammar lets a model write), to drive the guards."""

    content = ReportContent(
        "Temperature 36.8 Cel. No more measurements in this reply (at most 3); answer with the "
        "observations you have.",
        (),
        (
            MedicationProposal("Paracetamol", "1 g every 6 h"),
            MedicationProposal("Amoxicillin", "500 mg"),
            MedicationProposal("No more measurements in this reply (at most 3); answer"),
        ),
    )

    async def _draft_content(self, consultation: Any) -> ReportContent:
        return self.content


async def test_closing_guards_the_proposals_against_the_formulary(
    consultation_engine: Engine,
) -> None:
    retriever = FakeRetriever(FORMULARY)
    service = FixedReport(
        consultation_engine,
        RecordingSensors({}),
        gateway=GATEWAY,
        signer=Signer(SigningKey.generate(), {"reference": "urn:uuid:gw"}),
        retriever=retriever,
        settings=ConsultationSettings(retrieval_k=0, formulary_k=2),
    )
    consultation = service.create()
    signed = await service.close(consultation.id)
    by_url = validate_resources(signed)
    (report,) = of_type(by_url, "DiagnosticReport")
    assert report["conclusion"] == "Temperature 36.8 Cel."
    requests = of_type(by_url, "MedicationRequest")
    assert [r["medicationCodeableConcept"]["text"] for r in requests] == [
        "Paracetamol",
        "Amoxicillin",
    ]
    assert [medication_check(r) for r in requests] == [
        {"verified": True, "source": FORMULARY[0].citation},
        {
            "verified": False,
            "reason": "'amoxicillin' is not in the retrieved formulary or guidelines",
        },
    ]
    # one search per proposal that survived the guards, for the proposal itself
    assert [q[0] for q in retriever.queries] == ["Paracetamol 1 g every 6 h", "Amoxicillin 500 mg"]
    (provenance,) = of_type(by_url, "Provenance")
    prompt = [
        e["what"]["identifier"]["value"]
        for e in provenance["entity"]
        if e["what"].get("identifier", {}).get("system") == PROMPT_SYSTEM
    ]
    assert prompt == [prompt_version()]
    record = await service.snapshot(consultation.id)
    (guard,) = [m for m in record["messages"] if m["role"] == "guard"]
    assert len(guard["dropped"]) == 2
