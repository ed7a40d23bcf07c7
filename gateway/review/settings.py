"""Settings of the review of drafts (pydantic only: the configuration imports it), nested in the
gateway's config model as ``review``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ReviewSettings(BaseModel):
    """How long a clinician's decision stays valid, and the clock skew tolerated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_decision_age_s: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="a decision older than this is refused as stale (replayed or delayed)",
    )
    clock_skew_s: float = Field(
        default=300.0, ge=0, description="how far in the future a decision may be dated"
    )
