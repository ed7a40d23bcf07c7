"""A clinician's decision as it travels: JSON, through the API and over MQTT (docs/contracts.md,
"Review"). The same document, signed, is what both paths verify.

``{"decision_id", "gateway", "draft", "version", "action": "approve" | "reject", "at",
"reviewer", "medications": {"<proposal id>": "accept" | "reject"}, "reason"?, "edit"?}``; ``edit``
(``{"conclusion"?, "findings"?, "medications"?: {id: {"text"?, "dose"?}}}``) is applied to the
version first, as a version of its own: a reviewer without the API edits and decides at once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from gateway.fhir.review import Decision, Edit, MedicationEdit, Reviewer


class FindingDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1, max_length=400)
    code: str | None = Field(default=None, pattern=r"^[0-9]{1,7}-[0-9]$")


class MedicationEditDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str | None = Field(default=None, max_length=200)
    dose: str | None = Field(default=None, max_length=200)


class EditDoc(BaseModel):
    """What a reviewer changed (None: unchanged; findings replace the list)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    conclusion: str | None = Field(default=None, min_length=1, max_length=2000)
    findings: list[FindingDoc] | None = Field(default=None, max_length=20)
    medications: dict[str, MedicationEditDoc] = Field(default_factory=dict)

    def edit(self) -> Edit:
        return Edit(
            conclusion=self.conclusion,
            findings=(
                None
                if self.findings is None
                else [f.model_dump(exclude_none=True) for f in self.findings]
            ),
            medications={k: MedicationEdit(v.text, v.dose) for k, v in self.medications.items()},
        )


class DecisionDoc(BaseModel):
    """The decision document (see the module text)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision_id: uuid.UUID
    gateway: str = Field(min_length=1, max_length=64)
    draft: str = Field(min_length=1, max_length=64)
    version: int = Field(ge=1)
    action: Literal["approve", "reject"]
    at: AwareDatetime
    reviewer: str = Field(min_length=1, max_length=32)
    medications: dict[str, Literal["accept", "reject"]] = Field(default_factory=dict)
    reason: str | None = Field(default=None, max_length=500)
    edit: EditDoc | None = None

    def decision(self, version: int | None = None) -> Decision:
        return Decision(
            decision_id=str(self.decision_id),
            draft_id=self.draft,
            version=self.version if version is None else version,
            action=self.action,
            at=self.at,
            reviewer=Reviewer(self.reviewer, self.gateway),
            medications=dict(self.medications),
            reason=self.reason,
        )

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def new(
        cls,
        *,
        gateway: str,
        draft: str,
        version: int,
        action: Literal["approve", "reject"],
        reviewer: str,
        at: dt.datetime,
        medications: dict[str, Literal["accept", "reject"]] | None = None,
        reason: str | None = None,
        edit: EditDoc | None = None,
    ) -> DecisionDoc:
        return cls(
            decision_id=uuid.uuid4(),
            gateway=gateway,
            draft=draft,
            version=version,
            action=action,
            at=at.astimezone(dt.UTC).replace(microsecond=0),
            reviewer=reviewer,
            medications=medications or {},
            reason=reason,
            edit=edit,
        )
