"""Audit entries and their FHIR R4 AuditEvents, after IHE Basic Audit Log Patterns (BALP)
(pure; docs/architecture.md, "Audit trail").

An entry is the small JSON object the audit table chains (:func:`audit_entry`): when, what was
done (:data:`ACTIONS`), by whom, on what, with which outcome. :func:`audit_event` turns one into an
AuditEvent:

- logins and logouts: type DICOM ``110114`` *User Authentication*, subtype ``110122`` *Login* /
  ``110123`` *Logout*, action ``E`` (BALP "User Authentication" patterns);
- everything else: type ``rest``, subtype the RESTful interaction (``read``, ``search-type``,
  ``create``, ``update``, ``delete``) with action ``R`` / ``E`` / ``C`` / ``U`` / ``D`` (BALP
  "RESTful activity" patterns); an approval or rejection is an ``update`` of the report;
- outcome ``0`` success or ``4`` minor failure (refused: wrong password, forbidden, stale);
- agent: the user (requestor), identified on this gateway; source: the gateway (observer);
- entity: the resource acted on and, where a patient's data was touched, the patient (role 1).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Final

from gateway.fhir.resource import NAMESPACE
from gateway.fhir.review import USER_SYSTEM

GATEWAY_SYSTEM: Final = f"{NAMESPACE}/sid/gateway"
OBJECT_SYSTEM: Final = f"{NAMESPACE}/sid/audited-object"
DCM: Final = "http://dicom.nema.org/resources/ontology/DCM"
AUDIT_EVENT_TYPE: Final = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL: Final = "http://hl7.org/fhir/restful-interaction"
OBJECT_ROLE: Final = "http://terminology.hl7.org/CodeSystem/object-role"
ENTITY_TYPE: Final = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
SOURCE_TYPE: Final = "http://terminology.hl7.org/CodeSystem/security-source-type"

# action → (AuditEvent.action, type coding, subtype coding)
_LOGIN_TYPE: Final = {"system": DCM, "code": "110114", "display": "User Authentication"}
_REST_TYPE: Final = {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"}
ACTIONS: Final[Mapping[str, tuple[str, dict[str, str], dict[str, str]]]] = {
    "login": ("E", _LOGIN_TYPE, {"system": DCM, "code": "110122", "display": "Login"}),
    "logout": ("E", _LOGIN_TYPE, {"system": DCM, "code": "110123", "display": "Logout"}),
    "read": ("R", _REST_TYPE, {"system": RESTFUL, "code": "read"}),
    "search": ("E", _REST_TYPE, {"system": RESTFUL, "code": "search-type"}),
    "create": ("C", _REST_TYPE, {"system": RESTFUL, "code": "create"}),
    "update": ("U", _REST_TYPE, {"system": RESTFUL, "code": "update"}),
    "approve": ("U", _REST_TYPE, {"system": RESTFUL, "code": "update"}),
    "reject": ("U", _REST_TYPE, {"system": RESTFUL, "code": "update"}),
    "delete": ("D", _REST_TYPE, {"system": RESTFUL, "code": "delete"}),
}
OUTCOMES: Final = {"success": "0", "failure": "4"}


def audit_entry(
    *,
    at: dt.datetime,
    action: str,
    user: str | None,
    role: str | None = None,
    outcome: str = "success",
    what: str | None = None,
    what_id: str | None = None,
    patient: str | None = None,
    detail: str | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """One audit entry (see the module text); raises ValueError for an unknown action."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown audit outcome {outcome!r}")
    entry: dict[str, Any] = {
        "at": at.astimezone(dt.UTC).isoformat(timespec="milliseconds"),
        "action": action,
        "outcome": outcome,
        "user": user,
    }
    optional = {
        "role": role,
        "what": what,
        "what_id": what_id,
        "patient": patient,
        "detail": detail,
        "address": address,
    }
    entry |= {k: v for k, v in optional.items() if v is not None}
    return entry


def audit_event(entry: Mapping[str, Any], gateway_id: str) -> dict[str, Any]:
    """The FHIR R4 AuditEvent of one entry (BALP; see the module text)."""
    action, event_type, subtype = ACTIONS[str(entry["action"])]
    agent: dict[str, Any] = {"requestor": True}
    if entry.get("user"):
        agent["who"] = {
            "identifier": {"system": USER_SYSTEM, "value": f"{gateway_id}/{entry['user']}"},
            "display": str(entry["user"]),
        }
    if entry.get("role"):
        agent["role"] = [{"text": str(entry["role"])}]
    if entry.get("address"):
        agent["network"] = {"address": str(entry["address"]), "type": "2"}  # 2: IP address
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": dict(event_type),
        "subtype": [dict(subtype)],
        "action": action,
        "recorded": entry["at"],
        "outcome": OUTCOMES[str(entry["outcome"])],
    }
    if entry.get("detail"):
        event["outcomeDesc"] = str(entry["detail"])
    event["agent"] = [agent]
    event["source"] = {
        "observer": {"identifier": {"system": GATEWAY_SYSTEM, "value": gateway_id}},
        "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
    }
    entities = []
    if entry.get("what"):
        what: dict[str, Any] = {"display": str(entry["what"])}
        if entry.get("what_id"):
            what["identifier"] = {
                "system": OBJECT_SYSTEM,
                "value": f"{entry['what']}/{entry['what_id']}",
            }
        entities.append(
            {"what": what, "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"}}
        )
    if entry.get("patient"):
        entities.append(
            {
                "what": {"reference": str(entry["patient"])},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    if entities:
        event["entity"] = entities
    event["extension"] = [
        {"url": f"{NAMESPACE}/StructureDefinition/audit-seq", "valueInteger": int(entry["seq"])}
    ]
    return event
