"""Guards on what the model proposes in a draft report (pure: text in, verdicts out).

Two checks run on the model's report before it becomes FHIR (docs/architecture.md, "Drafts and
their review"):

1. **Copied instructions are dropped.** A finding or medication proposal whose text repeats the
   gateway's own prompt sentences (:data:`gateway.assistant.prompts.GATEWAY_TEXTS`: "No more
   measurements in this reply…") is no clinical content: it is removed, and a conclusion loses the
   copied sentences. A copy is a run of :data:`COPY_RUN` words found in one of those sentences, or
   a whole short text (at least :data:`SHORT_COPY` words) that is a run of one.
2. **Medications are checked against the documents.** A proposal is *verified* only when one
   retrieved passage (the local formulary and guidelines ingested with ``bedside ingest``) names
   the medication (every distinctive word of its text) and, when a dose is given, contains the dose
   text too (spacing, case and ``500mg`` / ``500 mg`` aside). Otherwise it is kept, flagged
   unverified with the reason, for the clinician to check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.assistant.prompts import GATEWAY_TEXTS
from gateway.assistant.report import (
    Finding,
    MedicationCheck,
    MedicationProposal,
    ReportContent,
)

COPY_RUN: Final = 5  # words in a row taken from the gateway's sentences
SHORT_COPY: Final = 3  # a text this short or longer that is wholly a run of them
MIN_NAME_WORD: Final = 4  # letters in a word that names a medication
# Words of a medication text that name a form or route, not the medication.
GENERIC_WORDS: Final = frozenset(
    {
        "tablet", "tablets", "capsule", "capsules", "oral", "orally", "solution", "syrup",
        "injection", "infusion", "daily", "dose", "doses", "each", "every", "hours", "with",
        "once", "twice", "times", "start", "continue", "consider", "give", "take", "mg", "units",
    }
)  # fmt: skip
REMOVED_CONCLUSION: Final = (
    "The assistant's conclusion repeated the gateway's instructions and was removed; "
    "read the Observations."
)

_WORD: Final = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_PLACEHOLDER: Final = re.compile(r"\{[^}]*\}")
_SENTENCE: Final = re.compile(r"(?<=[.!?])\s+")
_NUMBER_UNIT: Final = re.compile(r"(\d)([a-z])")


def words(text: str) -> list[str]:
    """Lower-case words and numbers of ``text`` (punctuation and spacing dropped)."""
    return _WORD.findall(_NUMBER_UNIT.sub(r"\1 \2", text.lower()))


def _fragments() -> list[list[str]]:
    """The gateway's sentences as word lists, split where a value is filled in."""
    return [w for text in GATEWAY_TEXTS for part in _PLACEHOLDER.split(text) if (w := words(part))]


def _runs(sequence: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(sequence[i : i + n]) for i in range(len(sequence) - n + 1)}


_GATEWAY_RUNS: Final = frozenset(r for f in _fragments() for r in _runs(f, COPY_RUN))
_GATEWAY_FRAGMENTS: Final = tuple(" ".join(f) for f in _fragments())


def copies_instructions(text: str) -> bool:
    """Whether ``text`` repeats the gateway's own prompt sentences (see the module text)."""
    found = words(text)
    if _runs(found, COPY_RUN) & _GATEWAY_RUNS:
        return True
    joined = " ".join(found)
    return len(found) >= SHORT_COPY and any(joined in f for f in _GATEWAY_FRAGMENTS)


@dataclass(frozen=True, slots=True)
class PassageText:
    """A retrieved passage: its citation and its text."""

    citation: str
    text: str


def name_words(text: str) -> list[str]:
    """The distinctive words of a medication text (its name, without form, route or numbers)."""
    return [
        w for w in words(text) if len(w) >= MIN_NAME_WORD and w.isalpha() and w not in GENERIC_WORDS
    ]


def _contains(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    n = len(needle)
    return n > 0 and any(list(haystack[i : i + n]) == list(needle) for i in range(len(haystack)))


def check_medication(
    proposal: MedicationProposal, passages: Iterable[PassageText]
) -> MedicationCheck:
    """Whether one passage names the medication and states its dose (see the module text)."""
    name = name_words(proposal.text)
    if not name:
        return MedicationCheck(False, reason="the proposal names no medication")
    dose = words(proposal.dose) if proposal.dose is not None else []
    named_in = None
    for passage in passages:
        found = words(passage.text)
        if not all(w in found for w in name):
            continue
        named_in = named_in or passage.citation
        if not dose or _contains(found, dose):
            return MedicationCheck(True, source=passage.citation)
    medication = " ".join(name)
    if named_in is None:
        return MedicationCheck(
            False, reason=f"{medication!r} is not in the retrieved formulary or guidelines"
        )
    return MedicationCheck(
        False, reason=f"the dose {proposal.dose!r} of {medication!r} is not in {named_in}"
    )


def _clean_conclusion(text: str, dropped: list[str]) -> str:
    kept = []
    for sentence in _SENTENCE.split(text):
        if copies_instructions(sentence):
            dropped.append(sentence)
        else:
            kept.append(sentence)
    return " ".join(kept).strip() or REMOVED_CONCLUSION


def drop_copies(content: ReportContent) -> tuple[ReportContent, tuple[str, ...]]:
    """The report without the text that copies the gateway's instructions, and that text."""
    dropped: list[str] = []
    conclusion = _clean_conclusion(content.conclusion, dropped)
    findings: list[Finding] = []
    for finding in content.findings:
        if copies_instructions(finding.text):
            dropped.append(finding.text)
        else:
            findings.append(finding)
    medications: list[MedicationProposal] = []
    for proposal in content.medications:
        text = f"{proposal.text} {proposal.dose or ''}"
        if copies_instructions(text):
            dropped.append(text.strip())
        else:
            medications.append(proposal)
    return ReportContent(conclusion, tuple(findings), tuple(medications)), tuple(dropped)
