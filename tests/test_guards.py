"""The guards on the model's proposals: copied instructions dropped, medications checked against
a small formulary."""

from __future__ import annotations

import pytest

from gateway.assistant.guards import (
    REMOVED_CONCLUSION,
    PassageText,
    check_medication,
    copies_instructions,
    drop_copies,
    name_words,
)
from gateway.assistant.prompts import limit_message, prompt_version
from gateway.assistant.report import Finding, MedicationProposal, ReportContent

FORMULARY = [
    PassageText(
        "formulary.md § Analgesics",
        "Paracetamol (acetaminophen): 500 mg to 1 g every 4-6 h by mouth, at most 4 g a day.",
    ),
    PassageText(
        "formulary.md § Anticoagulants",
        "Apixaban 5 mg twice daily for atrial fibrillation; 2.5mg twice daily in renal impairment.",
    ),
    PassageText("guidelines.md § Fever", "Treat fever above 38.5 Cel with paracetamol."),
]


@pytest.mark.parametrize(
    "text",
    [
        "No more measurements in this reply (at most 3); answer with the observations you",
        limit_message(2),
        "To take a new measurement, write",
        "a clinician reviews everything you write",
        "The consultation is closed. Write the draft report as JSON",
    ],
)
def test_text_copying_the_gateways_instructions_is_recognised(text: str) -> None:
    assert copies_instructions(text)


@pytest.mark.parametrize(
    "text",
    [
        "Paracetamol",
        "Paracetamol 500 mg every 6 h",
        "Heart rate 72 /min, within the normal range.",
        "Take a new blood pressure reading in one hour",
        "answer",
        "",
    ],
)
def test_clinical_text_is_not_taken_for_a_copy(text: str) -> None:
    assert not copies_instructions(text)


def test_a_medication_in_the_formulary_with_its_dose_is_verified() -> None:
    check = check_medication(MedicationProposal("Paracetamol", "500 mg"), FORMULARY)
    assert check.verified
    assert check.source == "formulary.md § Analgesics"
    assert check.reason is None


def test_dose_spelling_differences_do_not_matter() -> None:
    check = check_medication(
        MedicationProposal("apixaban tablets", "2.5 MG twice daily"), FORMULARY
    )
    assert check.verified
    assert check.source == "formulary.md § Anticoagulants"


def test_a_medication_without_dose_needs_only_its_name() -> None:
    assert check_medication(MedicationProposal("Apixaban"), FORMULARY).verified


def test_a_dose_not_in_the_documents_is_unverified_with_the_reason() -> None:
    check = check_medication(MedicationProposal("Paracetamol", "2 g every 2 h"), FORMULARY)
    assert not check.verified
    assert (
        check.reason
        == "the dose '2 g every 2 h' of 'paracetamol' is not in formulary.md § Analgesics"
    )


def test_a_medication_not_in_the_documents_is_unverified() -> None:
    check = check_medication(MedicationProposal("Ibuprofen", "400 mg"), FORMULARY)
    assert not check.verified
    assert check.reason == "'ibuprofen' is not in the retrieved formulary or guidelines"
    assert not check_medication(MedicationProposal("Paracetamol", "500 mg"), []).verified


def test_a_proposal_that_names_no_medication_is_unverified() -> None:
    assert name_words("5 mg oral tablets") == []
    check = check_medication(MedicationProposal("5 mg oral tablets"), FORMULARY)
    assert (check.verified, check.reason) == (False, "the proposal names no medication")


def test_copies_are_dropped_and_the_rest_checked() -> None:
    content = ReportContent(
        "Heart rate 72 /min. No more measurements in this reply (at most 3); answer with the "
        "observations you have.",
        (Finding("Normal sinus rhythm"), Finding("answer with the observations you have")),
        (
            MedicationProposal("No more measurements in this reply (at most 3); answer with"),
            MedicationProposal("Paracetamol", "1 g every 4-6 h"),
            MedicationProposal("Ibuprofen"),
        ),
    )
    cleaned, dropped = drop_copies(content)
    assert cleaned.conclusion == "Heart rate 72 /min."
    assert cleaned.findings == (Finding("Normal sinus rhythm"),)
    assert [m.text for m in cleaned.medications] == ["Paracetamol", "Ibuprofen"]
    assert [check_medication(m, FORMULARY).verified for m in cleaned.medications] == [True, False]
    assert len(dropped) == 3


def test_a_conclusion_that_is_only_a_copy_is_replaced_by_a_notice() -> None:
    cleaned, dropped = drop_copies(ReportContent(limit_message(3)))
    assert cleaned.conclusion == REMOVED_CONCLUSION
    assert dropped == (limit_message(3),)


def test_prompt_version_names_the_templates() -> None:
    version = prompt_version()
    assert version.startswith("sha256:")
    assert len(version) == len("sha256:") + 16
