"""A clinician's review of a draft report, as FHIR (pure: Bundles in, Bundles out;
docs/architecture.md, "Drafts and their review").

A draft is the unsigned transaction Bundle the assistant made (a ``partial`` DiagnosticReport,
``draft`` / ``proposal`` MedicationRequests, all labelled AI-asserted). Three things happen to it:

- :func:`apply_edit`: the clinician changes the conclusion, the findings or a proposal's text or
  dose; the result is the draft's next version (same resources, numbers flagged in an edited element
  no longer flagged: the words are the clinician's now).
- :func:`decided_bundle` with an ``approve`` :class:`Decision`: the report becomes ``final`` (or
  ``amended`` when an earlier version was already final), labelled clinician-asserted from AI
  (``CLINAST_AIRPT``), ``resultsInterpreter`` the clinician; every proposal is decided: accepted
  ones become ``active`` / ``order`` with the clinician as requester, rejected ones ``cancelled``
  (a proposal decided at an earlier approval keeps that decision: an order stands on its own).
  The clinician (a ``Practitioner``) and a review ``Provenance`` are added: activity
  *authenticated*, agent the clinician as *verifier*, and, once the gateway has checked it, the
  clinician's Verification Signature (as in FHIR R4's ``provenance-example-sig``). The report and
  proposals are conditional updates (``PUT ...?identifier=``) of the draft's resources.
- the same with ``reject``: the report becomes ``cancelled`` (never released) or
  ``entered-in-error`` (a final report withdrawn, R4 diagnostic-report-status), proposals
  ``cancelled``, the reason in the Provenance.

What the clinician signs (:func:`signing_payload`): the RFC 8785 canonical JSON of the decided
Bundle with no signature anywhere (no ``Bundle.signature``, no ``Provenance.signature``) and
without the report's ``presentedForm`` (the PDF copy, rendered after the signature was checked, so
that it can show whose key it was). A verifier removes those and checks the detached JWS in
``Provenance.signature.data`` over the bytes; the gateway's own signature, over everything, is
added last as for every Bundle.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from gateway.fhir import jsonio
from gateway.fhir.resource import NAMESPACE, fhir_datetime, search_token, urn_for
from gateway.fhir.transparency import AI_ASSERTED, CLINICIAN_ASSERTED_FROM_AI, with_label

USER_SYSTEM: Final = f"{NAMESPACE}/sid/gateway-user"  # value: "<gateway id>/<user name>"
DECISION_SYSTEM: Final = f"{NAMESPACE}/sid/review-decision"
UNSUPPORTED_NUMBER_EXTENSION: Final = f"{NAMESPACE}/StructureDefinition/unsupported-number"
MEDICATION_PROPOSAL_SYSTEM: Final = f"{NAMESPACE}/sid/medication-proposal"
CONSULTATION_SYSTEM: Final = f"{NAMESPACE}/sid/consultation"

# FHIR R4 value sets and the core example provenance-example-sig
VERIFICATION_SIGNATURE: Final = {
    "system": "urn:iso-astm:E1762-95:2013",
    "code": "1.2.840.10065.1.12.1.5",
    "display": "Verification Signature",
}
AUTHENTICATED: Final = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-DocumentCompletion",
    "code": "AU",
    "display": "authenticated",
}
NULLIFIED: Final = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
    "code": "NULLIFY",
    "display": "nullify",
}
VERIFIER: Final = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
            "code": "verifier",
            "display": "Verifier",
        }
    ]
}
SIG_FORMAT: Final = "application/jose"

Action = Literal["approve", "reject"]
MedicationVerdict = Literal["accept", "reject"]
REVIEWABLE: Final = frozenset({"partial", "final", "amended"})


class ReviewError(ValueError):
    """A decision or edit that does not fit the draft (one sentence, safe to show)."""


# -- edits -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MedicationEdit:
    text: str | None = None
    dose: str | None = None


@dataclass(frozen=True, slots=True)
class Edit:
    """What a clinician changed; None: unchanged. Findings replace the list (``[]``: none);
    medications are keyed by the proposal's identifier value."""

    conclusion: str | None = None
    findings: Sequence[Mapping[str, str]] | None = None  # {"text", "code"?}
    medications: Mapping[str, MedicationEdit] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.conclusion is None and self.findings is None and not self.medications


def _entries(bundle: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in bundle.get("entry", []) if e["resource"]["resourceType"] == kind]


def report_entry(bundle: Mapping[str, Any]) -> dict[str, Any]:
    """The Bundle's DiagnosticReport entry (exactly one in a draft)."""
    found = _entries(bundle, "DiagnosticReport")
    if len(found) != 1:
        raise ReviewError("the draft Bundle holds no single DiagnosticReport")
    return found[0]


def proposal_id(request: Mapping[str, Any]) -> str:
    for identifier in request.get("identifier", []):
        if identifier.get("system") == MEDICATION_PROPOSAL_SYSTEM:
            return str(identifier["value"])
    raise ReviewError("a MedicationRequest of the draft has no proposal identifier")


def proposals(bundle: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Proposal identifier → its MedicationRequest."""
    return {
        proposal_id(e["resource"]): e["resource"] for e in _entries(bundle, "MedicationRequest")
    }


def _drop_flags(report: dict[str, Any], elements: set[str]) -> None:
    kept = []
    for extension in report.get("extension", []):
        element = next(
            (x.get("valueString") for x in extension.get("extension", []) if x["url"] == "element"),
            None,
        )
        if extension.get("url") == UNSUPPORTED_NUMBER_EXTENSION and (
            element in elements or (element or "").split("[")[0] in elements
        ):
            continue
        kept.append(extension)
    if kept:
        report["extension"] = kept
    else:
        report.pop("extension", None)


def apply_edit(bundle: Mapping[str, Any], edit: Edit) -> dict[str, Any]:
    """The next version of the draft (see the module text)."""
    out = copy.deepcopy(dict(bundle))
    report = report_entry(out)["resource"]
    if report.get("status") not in REVIEWABLE:
        raise ReviewError(f"a {report.get('status')} report cannot be edited")
    _edit_report(report, edit)
    _edit_medications(proposals(out), edit.medications)
    return out


def _edit_report(report: dict[str, Any], edit: Edit) -> None:
    edited: set[str] = set()
    if edit.conclusion is not None:
        if not edit.conclusion.strip():
            raise ReviewError("conclusion: expected text")
        report["conclusion"] = edit.conclusion.strip()
        edited.add("conclusion")
    if edit.findings is not None:
        concepts = []
        for i, finding in enumerate(edit.findings):
            text = str(finding.get("text", "")).strip()
            if not text:
                raise ReviewError(f"findings[{i}].text: expected text")
            concept: dict[str, Any] = {}
            code = finding.get("code")
            if code:
                concept["coding"] = [{"system": "http://loinc.org", "code": str(code)}]
            concept["text"] = text
            concepts.append(concept)
        if concepts:
            report["conclusionCode"] = concepts
        else:
            report.pop("conclusionCode", None)
        edited.add("conclusionCode")
    _drop_flags(report, edited)


def _edit_medications(
    requests: Mapping[str, dict[str, Any]], changes: Mapping[str, MedicationEdit]
) -> None:
    for key, change in changes.items():
        request = requests.get(key)
        if request is None:
            raise ReviewError(f"medications: the draft has no proposal {key!r}")
        if change.text is not None:
            if not change.text.strip():
                raise ReviewError(f"medications[{key!r}].text: expected text")
            request["medicationCodeableConcept"] = {"text": change.text.strip()}
        if change.dose is not None:
            if change.dose.strip():
                request["dosageInstruction"] = [{"text": change.dose.strip()}]
            else:
                request.pop("dosageInstruction", None)


# -- decisions -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reviewer:
    """The clinician: user name on this gateway, and the gateway's id (their identifier)."""

    name: str
    gateway_id: str

    @property
    def identifier(self) -> dict[str, str]:
        return {"system": USER_SYSTEM, "value": f"{self.gateway_id}/{self.name}"}

    @property
    def full_url(self) -> str:
        return urn_for(USER_SYSTEM, f"{self.gateway_id}/{self.name}")


@dataclass(frozen=True, slots=True)
class Decision:
    """A clinician's decision on one version of a draft (what they sign covers all of it)."""

    decision_id: str
    draft_id: str
    version: int
    action: Action
    at: dt.datetime
    reviewer: Reviewer
    medications: Mapping[str, MedicationVerdict] = field(default_factory=dict)
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.at.utcoffset() is None:
            raise ReviewError("the decision's time must carry its UTC offset")
        if self.action == "reject" and not (self.reason or "").strip():
            raise ReviewError("a rejection needs a reason")


def _instant(moment: dt.datetime) -> str:
    return fhir_datetime(moment.astimezone(dt.UTC).replace(microsecond=0))


def _conditional_update(entry: dict[str, Any], system: str, value: str) -> None:
    kind = entry["resource"]["resourceType"]
    entry["request"] = {"method": "PUT", "url": f"{kind}?{search_token(system, value)}"}


def decided_bundle(draft: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    """The Bundle the decision makes of the draft version (no signatures; module text)."""
    out = copy.deepcopy(dict(draft))
    out.pop("signature", None)
    entry = report_entry(out)
    report = entry["resource"]
    status = report.get("status")
    if status not in REVIEWABLE:
        raise ReviewError(f"the report is {status}: there is nothing to decide")
    requests = proposals(out)
    pending = {k for k, r in requests.items() if r.get("status") == "draft"}
    approve = decision.action == "approve"
    if approve:
        undecided = sorted(pending - set(decision.medications))
        if undecided:
            raise ReviewError(f"medications: decide every proposal ({', '.join(undecided)})")
    unknown = sorted(set(decision.medications) - set(requests))
    if unknown:
        raise ReviewError(f"medications: the draft has no proposal {', '.join(unknown)}")
    decided_before = sorted(set(decision.medications) - pending)
    if decided_before:
        raise ReviewError(f"medications: {', '.join(decided_before)} decided already")
    reviewer = decision.reviewer
    practitioner = {
        "resourceType": "Practitioner",
        "identifier": [reviewer.identifier],
        "name": [{"text": reviewer.name}],
    }
    when = _instant(decision.at)

    if approve:
        report["status"] = "final" if status == "partial" else "amended"
        entry["resource"] = report = with_label(report, CLINICIAN_ASSERTED_FROM_AI)
        report["resultsInterpreter"] = [{"reference": reviewer.full_url}]
        report["issued"] = when
    else:
        report["status"] = "cancelled" if status == "partial" else "entered-in-error"
    _conditional_update(entry, CONSULTATION_SYSTEM, decision.draft_id)

    _decide_medications(out, pending, decision)

    targets = [entry["fullUrl"], *(e["fullUrl"] for e in _entries(out, "MedicationRequest"))]
    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{DECISION_SYSTEM}|{decision.decision_id}")),
        "target": [{"reference": t} for t in targets],
        "recorded": when,
        "activity": {"coding": [dict(AUTHENTICATED if approve else NULLIFIED)]},
        "agent": [{"type": copy.deepcopy(VERIFIER), "who": {"reference": reviewer.full_url}}],
        "entity": [
            {
                "role": "revision",
                "what": {
                    "identifier": {
                        "system": DECISION_SYSTEM,
                        "value": f"{decision.decision_id}/v{decision.version}",
                    }
                },
            }
        ],
    }
    if decision.reason:
        provenance["reason"] = [{"text": decision.reason.strip()}]
    provenance_url = f"urn:uuid:{provenance['id']}"
    out["entry"] = [
        *out["entry"],
        {
            "fullUrl": reviewer.full_url,
            "resource": practitioner,
            "request": {
                "method": "POST",
                "url": "Practitioner",
                "ifNoneExist": search_token(USER_SYSTEM, reviewer.identifier["value"]),
            },
        },
        {
            "fullUrl": provenance_url,
            "resource": provenance,
            "request": {"method": "PUT", "url": f"Provenance/{provenance['id']}"},
        },
    ]
    out["id"] = str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"{DECISION_SYSTEM}|{decision.decision_id}|bundle")
    )
    out["timestamp"] = when
    return out


def _decide_medications(bundle: dict[str, Any], pending: set[str], decision: Decision) -> None:
    """Accepted proposals become orders by the reviewer, the others are cancelled."""
    for entry in _entries(bundle, "MedicationRequest"):
        request = entry["resource"]
        key = proposal_id(request)
        if key not in pending:  # decided at an earlier approval: an order stands on its own
            continue
        if decision.action == "approve" and decision.medications.get(key) == "accept":
            request["status"], request["intent"] = "active", "order"
            request["requester"] = {"reference": decision.reviewer.full_url}
            entry["resource"] = with_label(request, CLINICIAN_ASSERTED_FROM_AI)
        else:
            request["status"] = "cancelled"
            entry["resource"] = with_label(request, AI_ASSERTED)
        _conditional_update(entry, MEDICATION_PROPOSAL_SYSTEM, key)


def review_provenance(bundle: Mapping[str, Any]) -> dict[str, Any]:
    """The decided Bundle's review Provenance (the one with a verifier agent)."""
    for entry in _entries(bundle, "Provenance"):
        resource: dict[str, Any] = entry["resource"]
        if any(a.get("type") == VERIFIER for a in resource.get("agent", [])):
            return resource
    raise ReviewError("the Bundle holds no review Provenance")


def without_signatures(bundle: Mapping[str, Any]) -> dict[str, Any]:
    """``bundle`` with ``Bundle.signature``, every ``Provenance.signature`` and the report's
    ``presentedForm`` (the PDF rendering, made after the clinician signed) removed."""
    out = copy.deepcopy(dict(bundle))
    out.pop("signature", None)
    for entry in _entries(out, "Provenance"):
        entry["resource"].pop("signature", None)
    for entry in _entries(out, "DiagnosticReport"):
        entry["resource"].pop("presentedForm", None)
    return out


def signing_payload(bundle: Mapping[str, Any]) -> bytes:
    """The bytes a clinician signs: RFC 8785 JSON of the Bundle with no signature anywhere."""
    return jsonio.canonical(without_signatures(bundle))


def with_verification_signature(
    bundle: Mapping[str, Any], compact_jws: str, reviewer: Reviewer, at: dt.datetime
) -> dict[str, Any]:
    """The decided Bundle with the clinician's JWS as the review Provenance's Verification
    Signature (``data``: base64 of the compact JWS, as in ``Bundle.signature``)."""
    out = copy.deepcopy(dict(bundle))
    review_provenance(out)["signature"] = [
        {
            "type": [dict(VERIFICATION_SIGNATURE)],
            "when": _instant(at),
            "who": {"reference": reviewer.full_url},
            "sigFormat": SIG_FORMAT,
            "data": base64.b64encode(compact_jws.encode("ascii")).decode("ascii"),
        }
    ]
    return out


def verifier_name(bundle: Mapping[str, Any]) -> str | None:
    """The name of the Practitioner who signed the review Provenance."""
    signatures = review_provenance(bundle).get("signature", [])
    who = signatures[0].get("who", {}).get("reference") if signatures else None
    for entry in _entries(bundle, "Practitioner"):
        if entry["fullUrl"] == who:
            names = entry["resource"].get("name", [])
            return str(names[0].get("text")) if names else None
    return None


def verification_jws(bundle: Mapping[str, Any]) -> str:
    """The clinician's compact JWS from the review Provenance's signature."""
    signatures = review_provenance(bundle).get("signature", [])
    if len(signatures) != 1 or not isinstance(signatures[0].get("data"), str):
        raise ReviewError("the review Provenance carries no single signature")
    try:
        return base64.b64decode(signatures[0]["data"], validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ReviewError("the review signature's data is not base64 of a JWS") from exc
