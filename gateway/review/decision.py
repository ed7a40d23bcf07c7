"""A clinician's decision as it travels: JSON, through the API and over MQTT (docs/contracts.md,
"Review"). The same document, signed, is what both paths verify.

``{"decision_id", "gateway", "draft", "version", "action": "approve" | "reject", "at",
"reviewer", "medications": {"<proposal id>": "accept" | "reject"}, "reason"?}``
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from gateway.fhir.review import Decision, Reviewer


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

    def decision(self) -> Decision:
        return Decision(
            decision_id=str(self.decision_id),
            draft_id=self.draft,
            version=self.version,
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
        )
