"""Store settings (nest as ``store``): how long what is kept locally stays (docs/contracts.md,
"Configuration"). A light module: :mod:`gateway.config` reads it without opening the store.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field

MIB: Final = 1024 * 1024


class StoreSettings(BaseModel):
    """Retention of the local store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retention_days: Annotated[float, Field(gt=0, le=36500)] = Field(
        default=30.0,
        description="days forwarded Observations are kept locally (those still to be sent, or "
        "held for want of a patient, stay until they are sent)",
    )
    delivered_keep_days: Annotated[float, Field(ge=0, le=3650)] = Field(
        default=1.0, description="days an outbox item stays once every uplink has it"
    )
    max_bytes: Annotated[int, Field(ge=MIB)] = Field(
        default=2048 * MIB,
        description="disk budget of the database: past it, delivered outbox items, then "
        "forwarded Observations past retention, then the oldest forwarded ones go; what is "
        "still to be sent or held never does",
    )
    alarm_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.8,
        description="the storage alarm is raised when what must stay fills this share of "
        "max_bytes (new readings are refused only when it fills all of it)",
    )
    maintain_every_s: Annotated[float, Field(ge=1, le=86400)] = Field(
        default=300.0, description="how often retention runs (and free space goes back to disk)"
    )
