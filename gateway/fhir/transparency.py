"""How AI-written content is labelled (HL7 AI Transparency on FHIR, STU1 ballot; docs/standards.md,
"AI-written content").

- Security labels in ``meta.security``: :data:`AI_ASSERTED` (``AIAST``, HL7 v3 ObservationValue,
  "Artificial Intelligence asserted") on what the model wrote and nobody has reviewed;
  :data:`CLINICIAN_ASSERTED_FROM_AI` (``CLINAST_AIRPT``, the IG's AddedProvenance code system,
  "Clinician Asserted from AI Reported") once a clinician has reviewed and asserted it. A resource
  carries one of the two, never both.
- The draft's Provenance claims the IG's ``AI-Provenance`` profile.

Pure: dictionaries in, dictionaries out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

V3_OBSERVATION_VALUE: Final = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
ADDED_PROVENANCE: Final = "http://hl7.org/fhir/uv/aitransparency/CodeSystem/AddedProvenanceCS"
AI_PROVENANCE_PROFILE: Final = (
    "http://hl7.org/fhir/uv/aitransparency/StructureDefinition/AI-Provenance"
)

AI_ASSERTED: Final = {
    "system": V3_OBSERVATION_VALUE,
    "code": "AIAST",
    "display": "Artificial Intelligence asserted",
}
CLINICIAN_ASSERTED_FROM_AI: Final = {
    "system": ADDED_PROVENANCE,
    "code": "CLINAST_AIRPT",
    "display": "Clinician Asserted from AI Reported",
}
_AI_LABELS: Final = frozenset(
    (label["system"], label["code"]) for label in (AI_ASSERTED, CLINICIAN_ASSERTED_FROM_AI)
)


def ai_labels(resource: Mapping[str, Any]) -> list[str]:
    """The AI transparency codes in the resource's ``meta.security``."""
    return [
        str(label.get("code"))
        for label in resource.get("meta", {}).get("security", [])
        if (label.get("system"), label.get("code")) in _AI_LABELS
    ]


def with_label(resource: Mapping[str, Any], label: Mapping[str, str]) -> dict[str, Any]:
    """``resource`` with its AI label replaced by ``label`` (other security labels kept); the
    members stay in FHIR's order (``meta`` right after ``resourceType`` / ``id``)."""
    meta = dict(resource.get("meta", {}))
    kept = [
        s for s in meta.get("security", []) if (s.get("system"), s.get("code")) not in _AI_LABELS
    ]
    meta["security"] = [*kept, dict(label)]
    out: dict[str, Any] = {}
    for key in ("resourceType", "id"):
        if key in resource:
            out[key] = resource[key]
    out["meta"] = meta
    out.update({k: v for k, v in resource.items() if k not in out})
    return out
