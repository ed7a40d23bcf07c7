"""Who the readings belong to: the patient from configuration or assigned at run time.

:class:`PatientAssignment` answers "which patient now?" for every reading (a runtime assignment
in the data directory wins over the configured patient) and records what ``bedside patient`` and
``PUT /api/patient`` change. docs/contracts.md, "Patient", has the rules.
"""

from gateway.patients.assignment import (
    PATIENT_FILE,
    Claim,
    PatientAssignment,
    PatientError,
    RuntimeState,
    parse_identifier,
    validate_reference,
)

__all__ = [
    "PATIENT_FILE",
    "Claim",
    "PatientAssignment",
    "PatientError",
    "RuntimeState",
    "parse_identifier",
    "validate_reference",
]
