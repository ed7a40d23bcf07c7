"""What goes into the store and what comes out of it (plain frozen dataclasses)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class TopicKind(enum.StrEnum):
    """What an outbox item carries; the MQTT topic's last level (docs/contracts.md, MQTT topics)."""

    OBSERVATIONS = "observations"
    DEVICES = "devices"
    DRAFTS = "drafts"
    AUDIT = "audit"


class OutboxState(enum.StrEnum):
    """Life of an outbox item: pending → delivered, or pending → dead (→ pending by command)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


def _check_aware(name: str, moment: datetime | None) -> None:
    if moment is not None and moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (got {moment.isoformat()})")


@dataclass(frozen=True, slots=True)
class ObservationRecord:
    """One Observation to store.

    ``identifier`` is the PHD IG dedup identifier value (docs/standards.md), the store's unique key;
    ``code`` the indexed code (a LOINC code such as ``"8867-4"`` or an MDC code as text);
    ``effective`` the device's timestamp (timezone-aware) or None when the sensor sent none;
    ``resource`` the FHIR Observation as a JSON-ready dict (``Decimal`` values allowed).
    """

    identifier: str
    code: str
    device_address: str
    effective: datetime | None
    resource: Mapping[str, Any]

    def __post_init__(self) -> None:
        if not self.identifier:
            raise ValueError("an observation needs its PHD identifier value")
        if not self.code:
            raise ValueError(f"observation {self.identifier!r}: code is empty")
        _check_aware(f"observation {self.identifier!r}: effective", self.effective)


@dataclass(frozen=True, slots=True)
class StoredObservation:
    """An Observation as stored, with the time the gateway received it."""

    identifier: str
    code: str
    device_address: str
    effective: datetime | None
    received: datetime
    resource: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Released:
    """What a claim released: Bundles moved from held to the outbox and the readings in them."""

    bundles: int
    readings: int


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A sensor the gateway has seen; ``info`` holds the Device Information Service values."""

    address: str
    kind: str
    name: str | None
    system_id: str | None
    info: dict[str, Any]
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One signed Bundle waiting for (or done with) one uplink.

    ``seq`` orders items per uplink; ``id`` is the Bundle's id, the idempotency key downstream.
    """

    seq: int
    id: str
    uplink: str
    kind: TopicKind
    payload: str
    state: OutboxState
    attempts: int
    last_error: str | None
    created: datetime
    updated: datetime


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Counts over the whole outbox; ``quota_alarm`` when undelivered items alone exceed the quota.

    ``held`` counts the Bundles kept out of the outbox for want of a patient (and
    ``held_readings`` the Observations in them; docs/contracts.md, "Patient"). ``as_dict()`` is
    the ``{"pending", "delivered", "dead", "quota_alarm"}`` summary.
    """

    pending: int
    delivered: int
    dead: int
    quota_alarm: bool
    pending_bytes: int = 0
    delivered_bytes: int = 0
    dead_bytes: int = 0
    quota_bytes: int = 0
    held: int = 0
    """Bundles held back, not in the outbox yet: readings taken with no patient assigned."""
    held_readings: int = 0

    def as_dict(self) -> dict[str, int | bool]:
        return {
            "pending": self.pending,
            "delivered": self.delivered,
            "dead": self.dead,
            "quota_alarm": self.quota_alarm,
        }
