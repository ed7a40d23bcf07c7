"""The draft report of a consultation: the model's JSON, checked, and the FHIR R4 resources made
from it (pure: no I/O; the consultation loop runs the model and signs and stores the Bundle).

What the model writes is constrained by :func:`report_schema` (a JSON schema, turned into a GBNF
grammar): ``{"conclusion": str, "findings"?: [{"code"?, "text"}], "medications"?: [{"text",
"dose"?}]}`` with bounded lengths, finding codes limited to the LOINC codes measured in the
consultation. :func:`build_draft` makes the transaction Bundle:

- ``DiagnosticReport``: status ``partial`` (R4: "data in the report may be incomplete and/or
  unverified": nobody has verified it yet; ``preliminary`` means *verified* early results);
  labelled AI-asserted (:mod:`gateway.fhir.transparency`); code LOINC 11488-4 "Consult note"
  (a consultation summary is a consult note: LOINC's document ontology names that kind of
  document for the outcome of a consultation; 11526-1 is a pathology study, which this is not);
  ``subject`` the patient assigned when the report is drafted (docs/contracts.md, "Patient");
  ``effectivePeriod`` the consultation's span; ``result`` exactly the Observations obtained or
  used in the consultation; ``conclusion`` the model's text; findings as
  ``conclusionCode`` (text, and the LOINC code of the measurement a finding concerns).
- Every number in the conclusion or a finding that is not the value of one of those Observations
  is flagged with the extension :data:`UNSUPPORTED_NUMBER_EXTENSION` (R4's DiagnosticReport has no
  ``note``): the report must not invent measurements, and a reviewer sees which numbers to check.
- ``MedicationRequest`` per proposal: status ``draft``, intent ``proposal``, requester the model,
  labelled AI-asserted, with the :data:`MEDICATION_CHECK_EXTENSION` saying whether the proposal
  was found in the retrieved documents (:mod:`gateway.assistant.guards`) and where, or why not.
- ``Provenance`` (AI Transparency's ``AI-Provenance`` profile): targets the report and the
  proposals; agents the model (author, a ``Device`` named with its file's sha256) and the gateway
  (assembler); entities the Observations, the retrieved passages cited in the consultation and the
  prompt templates' version (all ``source``).
- The gateway's, the model's and the sensors' ``Device`` resources, so that every reference
  resolves inside the Bundle.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from gateway.assistant.errors import AssistantError
from gateway.assistant.prompts import is_loinc_code, loinc_displays
from gateway.fhir.bundle import transaction_bundle
from gateway.fhir.codes import LOINC_SYSTEM
from gateway.fhir.device import GatewayInfo, gateway_device
from gateway.fhir.observation import PatientRef
from gateway.fhir.resource import (
    NAMESPACE,
    MappedResource,
    fhir_datetime,
    search_token,
    urn_for,
)
from gateway.fhir.review import (
    CONSULTATION_SYSTEM,
    MEDICATION_PROPOSAL_SYSTEM,
    UNSUPPORTED_NUMBER_EXTENSION,
)
from gateway.fhir.transparency import AI_ASSERTED, AI_PROVENANCE_PROFILE

# -- the project's FHIR namespace (extensions and identifier systems defined here) -----------------
PROVENANCE_SYSTEM: Final = f"{NAMESPACE}/sid/draft-provenance"
MODEL_SHA256_SYSTEM: Final = f"{NAMESPACE}/sid/model-sha256"
MODEL_ENDPOINT_SYSTEM: Final = f"{NAMESPACE}/sid/model-endpoint"  # "<base_url> <model name>"
MEDICATION_CHECK_EXTENSION: Final = f"{NAMESPACE}/StructureDefinition/medication-check"
PASSAGE_SYSTEM: Final = f"{NAMESPACE}/sid/rag-chunk"
PROMPT_SYSTEM: Final = f"{NAMESPACE}/sid/prompt-templates"

# -- codes (FHIR R4 value sets) --------------------------------------------------------------------
REPORT_CODE: Final = {"system": LOINC_SYSTEM, "code": "11488-4", "display": "Consult note"}
REPORT_TEXT: Final = "Draft consultation report (bedside assistant)"
REPORT_STATUS: Final = "partial"  # R4 diagnostic-report-status: unverified
MEDICATION_STATUS: Final = "draft"  # R4 medicationrequest-status
MEDICATION_INTENT: Final = "proposal"  # R4 medicationrequest-intent
PARTICIPANT_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
PARTICIPANT: Final = {"author": "Author", "assembler": "Assembler"}
DATA_OPERATION: Final = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
    "code": "CREATE",
    "display": "create",
}
MODEL_NAME_TYPE: Final = "model-name"  # R4 device-nametype
MODEL_DEVICE_TEXT: Final = "Large language model (bedside clinical assistant)"
UNIDENTIFIED_PATIENT: Final = "the patient at this bedside gateway (no patient assigned)"
PROPOSAL_NOTE: Final = (
    "Proposed by the bedside assistant ({model}); a draft for a clinician to review, not an order."
)

# -- what the model may write (bounds keep the grammar-constrained output within its budget) -------
CONCLUSION_MAX: Final = 400
FINDING_TEXT_MAX: Final = 160
FINDINGS_MAX: Final = 3
MEDICATION_TEXT_MAX: Final = 80
DOSE_MAX: Final = 40
MEDICATIONS_MAX: Final = 2
FALLBACK_CONCLUSION_MAX: Final = 200
REPORT_ORDER: Final = ("conclusion", "findings", "medications", "code", "text", "dose")

# Numbers in prose: digits with an optional decimal part, not glued to letters ("SpO2" has none).
_NUMBER: Final = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?!\w)")
# Text that holds digits but states no measurement: citation markers and urn:uuid references.
_NOT_VALUES: Final = re.compile(r"\[\d+\]|urn:uuid:[0-9a-fA-F-]+")


class ReportFormatError(AssistantError, ValueError):
    """Report JSON from the model that does not match the report schema."""


# -- the model's report ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    text: str
    code: str | None = None  # the LOINC code of the measurement it concerns


@dataclass(frozen=True, slots=True)
class MedicationProposal:
    text: str
    dose: str | None = None


@dataclass(frozen=True, slots=True)
class MedicationCheck:
    """Whether a proposal was found in the retrieved documents: where (a citation), or why not."""

    verified: bool
    source: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Citation:
    """A retrieved passage a consultation cited: its citation text and chunk id in the index."""

    citation: str
    chunk_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReportContent:
    conclusion: str
    findings: tuple[Finding, ...] = ()
    medications: tuple[MedicationProposal, ...] = ()


def _string(max_length: int) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_length}


def report_schema(codes: Iterable[str] = ()) -> dict[str, Any]:
    """The JSON schema of the report; finding codes limited to ``codes`` (omitted without)."""
    allowed = sorted(set(codes))
    finding: dict[str, Any] = {"text": _string(FINDING_TEXT_MAX)}
    if allowed:
        finding = {"code": {"enum": allowed}} | finding
    return {
        "type": "object",
        "properties": {
            "conclusion": _string(CONCLUSION_MAX),
            "findings": {
                "type": "array",
                "maxItems": FINDINGS_MAX,
                "items": {
                    "type": "object",
                    "properties": finding,
                    "required": ["text"],
                    "additionalProperties": False,
                },
            },
            "medications": {
                "type": "array",
                "maxItems": MEDICATIONS_MAX,
                "items": {
                    "type": "object",
                    "properties": {
                        "text": _string(MEDICATION_TEXT_MAX),
                        "dose": _string(DOSE_MAX),
                    },
                    "required": ["text"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["conclusion"],
        "additionalProperties": False,
    }


def fallback_schema() -> dict[str, Any]:
    """A conclusion only, shorter: when the full report did not fit its token budget."""
    return {
        "type": "object",
        "properties": {"conclusion": _string(FALLBACK_CONCLUSION_MAX)},
        "required": ["conclusion"],
        "additionalProperties": False,
    }


def _text(item: Mapping[str, Any], key: str, where: str, max_length: int) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise ReportFormatError(f"{where}.{key}: expected text of 1 to {max_length} characters")
    return value.strip()


def _optional_text(item: Mapping[str, Any], key: str, where: str, max_length: int) -> str | None:
    return _text(item, key, where, max_length) if key in item else None


def _items(report: Mapping[str, Any], key: str, limit: int) -> list[Mapping[str, Any]]:
    value = report.get(key, [])
    if not isinstance(value, list) or len(value) > limit:
        raise ReportFormatError(f"{key}: expected a list of at most {limit} objects")
    if not all(isinstance(v, dict) for v in value):
        raise ReportFormatError(f"{key}: expected objects")
    return value


def _only(item: Mapping[str, Any], keys: set[str], where: str) -> None:
    extra = sorted(set(item) - keys)
    if extra:
        raise ReportFormatError(f"{where}: unexpected member(s) {', '.join(extra)}")


def parse_report(text: str, codes: Iterable[str] = ()) -> ReportContent:
    """The report in ``text`` (JSON per :func:`report_schema` with these ``codes``)."""
    try:
        # strict=False: control characters inside strings are accepted (the converter's string
        # rule in llama-cpp-python 0.3 allows a raw newline, which strict JSON refuses).
        report = json.loads(text, strict=False)
    except ValueError as exc:
        raise ReportFormatError(f"the report is not complete JSON ({exc})") from exc
    if not isinstance(report, dict):
        raise ReportFormatError("the report: expected a JSON object")
    _only(report, {"conclusion", "findings", "medications"}, "the report")
    allowed = set(codes)
    findings = []
    for i, item in enumerate(_items(report, "findings", FINDINGS_MAX)):
        where = f"findings[{i}]"
        _only(item, {"code", "text"}, where)
        code = item.get("code")
        if code is not None and (not isinstance(code, str) or code not in allowed):
            raise ReportFormatError(f"{where}.code: {code!r} is not a code measured here")
        findings.append(Finding(_text(item, "text", where, FINDING_TEXT_MAX), code))
    medications = []
    for i, item in enumerate(_items(report, "medications", MEDICATIONS_MAX)):
        where = f"medications[{i}]"
        _only(item, {"text", "dose"}, where)
        medications.append(
            MedicationProposal(
                _text(item, "text", where, MEDICATION_TEXT_MAX),
                _optional_text(item, "dose", where, DOSE_MAX),
            )
        )
    return ReportContent(
        _text(report, "conclusion", "the report", CONCLUSION_MAX),
        tuple(findings),
        tuple(medications),
    )


# -- numbers that are not measured values ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnsupportedNumber:
    """A number in the report's prose that is none of the Observations' values."""

    element: str  # "conclusion" or "conclusionCode[0].text"
    text: str  # as written
    offset: int  # character offset in the element's text


def _decimal(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def observation_values(resource: Mapping[str, Any]) -> list[Decimal]:
    """The numeric values of an Observation: ``valueQuantity`` and its components'."""
    quantities = [resource.get("valueQuantity")]
    quantities += [c.get("valueQuantity") for c in resource.get("component", [])]
    values = [_decimal(q.get("value")) for q in quantities if isinstance(q, Mapping)]
    return [v for v in values if v is not None]


def unsupported_numbers(
    text: str, values: Iterable[Decimal], element: str, *, ignore: Iterable[str] = ()
) -> list[UnsupportedNumber]:
    """The numbers in ``text`` equal to none of ``values`` (``72`` matches ``72.0``), skipping
    citation markers, ``urn:uuid`` references and the strings in ``ignore`` (codes)."""
    allowed = set(values)
    masked = _NOT_VALUES.sub(lambda m: " " * len(m.group()), text)
    for word in sorted(set(ignore), key=len, reverse=True):
        if word:
            masked = masked.replace(word, " " * len(word))
    return [
        UnsupportedNumber(element, m.group(), m.start())
        for m in _NUMBER.finditer(masked)
        if Decimal(m.group()) not in allowed
    ]


def flag_extension(flag: UnsupportedNumber) -> dict[str, Any]:
    """The DiagnosticReport extension that flags one number."""
    return {
        "url": UNSUPPORTED_NUMBER_EXTENSION,
        "extension": [
            {"url": "number", "valueString": flag.text},
            {"url": "element", "valueString": flag.element},
            {"url": "offset", "valueInteger": flag.offset},
        ],
    }


# -- FHIR ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    """The model that wrote the draft: its name and its file's sha256 (a local model), or its
    name and the server that serves it (a remote one, whose file the gateway cannot see)."""

    name: str
    sha256: str | None
    file_name: str | None
    endpoint: str | None = None


def model_device(model: ModelIdentity) -> MappedResource:
    """The model as a ``Device``: identified by its file's sha256, or by its server and name."""
    if model.sha256 is not None:
        system, value = MODEL_SHA256_SYSTEM, model.sha256
        version = {"type": {"text": "file"}, "value": model.file_name or model.name}
    else:
        system, value = MODEL_ENDPOINT_SYSTEM, f"{model.endpoint} {model.name}"
        version = {"type": {"text": "served by"}, "value": model.endpoint or "unknown"}
    device = {
        "resourceType": "Device",
        "identifier": [{"system": system, "value": value}],
        "deviceName": [{"name": model.name, "type": MODEL_NAME_TYPE}],
        "type": {"text": MODEL_DEVICE_TEXT},
        "version": [version],
    }
    return MappedResource(urn_for(system, value), device, search_token(system, value))


@dataclass(frozen=True, slots=True)
class DraftInputs:
    """Everything a draft Bundle is made of."""

    consultation_id: str
    content: ReportContent
    observations: Sequence[MappedResource]  # obtained or used in the consultation
    gateway: GatewayInfo
    model: ModelIdentity
    started: dt.datetime
    issued: dt.datetime
    devices: Sequence[MappedResource] = ()  # the sensors' Devices the Observations reference
    patient: PatientRef | None = None
    checks: Sequence[MedicationCheck] = ()  # one per content.medications (none: unchecked)
    citations: Sequence[Citation] = ()
    prompt_version: str | None = None


@dataclass(frozen=True, slots=True)
class Draft:
    """The unsigned transaction Bundle and what was flagged in it."""

    bundle: dict[str, Any]
    report_url: str
    flags: tuple[UnsupportedNumber, ...]


def _observation_codes(resources: Iterable[MappedResource]) -> list[str]:
    codes = {
        coding["code"]
        for r in resources
        for coding in r.resource.get("code", {}).get("coding", [])
        if coding.get("system") == LOINC_SYSTEM and isinstance(coding.get("code"), str)
    }
    return sorted(c for c in codes if is_loinc_code(c))


def draft_flags(inputs: DraftInputs) -> list[UnsupportedNumber]:
    """Every number in the conclusion and the findings that is no Observation's value."""
    values = [v for r in inputs.observations for v in observation_values(r.resource)]
    codes = _observation_codes(inputs.observations)
    flags = unsupported_numbers(inputs.content.conclusion, values, "conclusion", ignore=codes)
    for i, finding in enumerate(inputs.content.findings):
        element = f"conclusionCode[{i}].text"
        flags += unsupported_numbers(finding.text, values, element, ignore=codes)
    return flags


def _finding_concept(finding: Finding) -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if finding.code is not None:
        coding = {"system": LOINC_SYSTEM, "code": finding.code}
        display = loinc_displays().get(finding.code)
        if display is not None:
            coding["display"] = display
        concept["coding"] = [coding]
    concept["text"] = finding.text
    return concept


def _participant(code: str) -> dict[str, Any]:
    return {"coding": [{"system": PARTICIPANT_SYSTEM, "code": code, "display": PARTICIPANT[code]}]}


UNCHECKED: Final = MedicationCheck(False, reason="not checked against any document")


def _check(inputs: DraftInputs, index: int) -> MedicationCheck:
    return inputs.checks[index] if index < len(inputs.checks) else UNCHECKED


def medication_check_extension(check: MedicationCheck) -> dict[str, Any]:
    """The MedicationRequest extension: ``verified`` and its ``source`` citation or ``reason``."""
    parts: list[dict[str, Any]] = [{"url": "verified", "valueBoolean": check.verified}]
    if check.source is not None:
        parts.append({"url": "source", "valueString": check.source})
    if check.reason is not None:
        parts.append({"url": "reason", "valueString": check.reason})
    return {"url": MEDICATION_CHECK_EXTENSION, "extension": parts}


def medication_check(request: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{"verified", "source"?, "reason"?}`` from a MedicationRequest's check extension."""
    for extension in request.get("extension", []):
        if extension.get("url") == MEDICATION_CHECK_EXTENSION:
            return {
                part["url"]: next(v for k, v in part.items() if k.startswith("value"))
                for part in extension.get("extension", [])
            }
    return None


def _citation_entity(citation: Citation) -> dict[str, Any]:
    what: dict[str, Any] = {"display": citation.citation}
    if citation.chunk_id is not None:
        what = {"identifier": {"system": PASSAGE_SYSTEM, "value": citation.chunk_id}} | what
    return {"role": "source", "what": what}


def build_draft(inputs: DraftInputs) -> Draft:
    """The draft's transaction Bundle (unsigned); see the module text for its resources."""
    cid = inputs.consultation_id
    issued = fhir_datetime(inputs.issued)
    gateway = gateway_device(inputs.gateway)
    model = model_device(inputs.model)
    subject = {"reference": inputs.patient.reference} if inputs.patient is not None else None
    flags = draft_flags(inputs)

    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "meta": {"security": [dict(AI_ASSERTED)]},
    }
    if flags:
        report["extension"] = [flag_extension(f) for f in flags]
    report["identifier"] = [{"system": CONSULTATION_SYSTEM, "value": cid}]
    report["status"] = REPORT_STATUS
    report["code"] = {"coding": [dict(REPORT_CODE)], "text": REPORT_TEXT}
    if subject is not None:
        report["subject"] = subject
    report["effectivePeriod"] = {"start": fhir_datetime(inputs.started), "end": issued}
    report["issued"] = issued
    if inputs.observations:
        report["result"] = [{"reference": o.full_url} for o in inputs.observations]
    report["conclusion"] = inputs.content.conclusion
    if inputs.content.findings:
        report["conclusionCode"] = [_finding_concept(f) for f in inputs.content.findings]
    report_entry = MappedResource(
        urn_for(CONSULTATION_SYSTEM, cid), report, search_token(CONSULTATION_SYSTEM, cid)
    )

    proposals = []
    for number, proposal in enumerate(inputs.content.medications, start=1):
        key = f"{cid}-{number}"
        request: dict[str, Any] = {
            "resourceType": "MedicationRequest",
            "meta": {"security": [dict(AI_ASSERTED)]},
            "extension": [medication_check_extension(_check(inputs, number - 1))],
            "identifier": [{"system": MEDICATION_PROPOSAL_SYSTEM, "value": key}],
            "status": MEDICATION_STATUS,
            "intent": MEDICATION_INTENT,
            "medicationCodeableConcept": {"text": proposal.text},
            "subject": subject if subject is not None else {"display": UNIDENTIFIED_PATIENT},
            "authoredOn": issued,
            "requester": {"reference": model.full_url},
            "note": [{"text": PROPOSAL_NOTE.format(model=inputs.model.name)}],
        }
        if proposal.dose is not None:
            request["dosageInstruction"] = [{"text": proposal.dose}]
        proposals.append(
            MappedResource(
                urn_for(MEDICATION_PROPOSAL_SYSTEM, key),
                request,
                search_token(MEDICATION_PROPOSAL_SYSTEM, key),
            )
        )

    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        "meta": {"profile": [AI_PROVENANCE_PROFILE]},
        "target": [{"reference": r.full_url} for r in (report_entry, *proposals)],
        "recorded": issued,
        "activity": {"coding": [dict(DATA_OPERATION)]},
        "agent": [
            {"type": _participant("author"), "who": {"reference": model.full_url}},
            {"type": _participant("assembler"), "who": {"reference": gateway.full_url}},
        ],
    }
    entities = [{"role": "source", "what": {"reference": o.full_url}} for o in inputs.observations]
    entities += [_citation_entity(c) for c in inputs.citations]
    if inputs.prompt_version is not None:
        entities.append(
            {
                "role": "source",
                "what": {
                    "identifier": {"system": PROMPT_SYSTEM, "value": inputs.prompt_version},
                    "display": "the gateway's prompt templates",
                },
            }
        )
    if entities:
        provenance["entity"] = entities
    provenance_entry = MappedResource(urn_for(PROVENANCE_SYSTEM, cid), provenance)

    bundle = transaction_bundle(
        [
            gateway,
            model,
            *inputs.devices,
            *inputs.observations,
            report_entry,
            *proposals,
            provenance_entry,
        ],
        bundle_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{CONSULTATION_SYSTEM}|{cid}|draft")),
        timestamp=inputs.issued,
    )
    return Draft(bundle, report_entry.full_url, tuple(flags))
