"""Sensor timestamps onto the gateway's timeline, and the Coincident Time Stamp that records how.

HL7 PHD IG (STU 2), "Time-stamps and time synchronization" and PhdCoincidentTimeStampObservation:
the gateway reads the sensor's current time at one of its own instants (the coincident time
stamp), and with that anchor places the sensor's timestamps on its own timeline. Whenever it
changes a timestamp, the Observation refers to the Coincident Time Stamp Observation through the
CoincidentTimeStampReference extension, so the sensor's own time can be recovered. The rules, for
sensors that keep local time without a zone and do not say they are externally synchronized (the
Current Time Service sensors this gateway reads), are in :func:`place`:

- no device timestamp: the time of reception, no coincident time stamp (IG: "the PHG uses the
  time of reception");
- stamped by a clock that was never set (it reads before :data:`UNSET_BEFORE`, the factory epoch
  of an unset real-time clock): it cannot be placed. Such a stamp may come from an earlier power
  cycle, so the offset measured now says nothing about it; the IG: "the PHG is unable to produce a
  meaningful timestamp ... chooses not to report the observation". The reading is kept, not sent;
- stamped by a set clock that is still set now (the anchor reads a set clock): moved by the
  anchor's offset, which corrects the drift since the gateway last set it, and refers to the
  coincident time stamp; an offset under the clock's resolution (:data:`CLOCK_RESOLUTION`)
  changes nothing;
- stamped by a set clock that is unset now (a battery change since): reported as the sensor stamped
  it, in the gateway's zone (the gateway set that clock on an earlier connection), unchanged.

Pure: no I/O, no clock of its own; the caller gives the times.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.fhir.codes import MDC_SYSTEM
from gateway.fhir.resource import MappedResource, fhir_datetime, urn_for

COINCIDENT_TIME_STAMP_PROFILE: Final = (
    "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdCoincidentTimeStampObservation"
)
COINCIDENT_TIME_STAMP_REFERENCE: Final = (
    "http://hl7.org/fhir/uv/phd/StructureDefinition/CoincidentTimeStampReference"
)
MDC_ATTR_TIME_ABS: Final = 67975  # IEEE 11073-10101: absolute time (a time-of-day clock)
# A clock reading before this was never set: unset real-time clocks start at a factory epoch
# (2000-01-01 for the Bluetooth Elapsed Time and most Zephyr boards, 1970 for others).
UNSET_BEFORE: Final = dt.datetime(2015, 1, 1)  # noqa: DTZ001 - device local time, no zone
UNSET_CLOCK: Final = "stamped by a sensor clock that was not set; its date is not known"
NO_TIME_STAMP: Final = "a stored record without a usable time stamp; its date is not known"
# Date Time (and the Current Time read with it) counts whole seconds: a smaller offset is the
# resolution of the reading, not an error of the clock, and leaves the stamp unchanged.
CLOCK_RESOLUTION: Final = dt.timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class ClockAnchor:
    """The sensor's clock as the gateway read it: the sensor's local time (no zone) at an instant
    of the gateway's (aware)."""

    device_time: dt.datetime
    gateway_time: dt.datetime

    def __post_init__(self) -> None:
        if self.device_time.tzinfo is not None:
            raise ValueError("device_time is the sensor's local time: give it without a zone")
        if self.gateway_time.utcoffset() is None:
            raise ValueError("gateway_time needs a time zone")

    @property
    def clock_set(self) -> bool:
        return self.device_time >= UNSET_BEFORE

    def offset(self, tz: dt.tzinfo) -> dt.timedelta:
        """How far the sensor's clock is behind the gateway's (negative: ahead), reading the
        sensor's local time in ``tz``, the zone its clock was set in."""
        return _utc(self.gateway_time) - _utc(self.device_time.replace(tzinfo=tz))


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a reading goes on the gateway's timeline."""

    effective: dt.datetime | None
    """The reading's time (aware); None when it cannot be placed (``held`` says why)."""
    corrected: bool = False
    """The gateway moved the sensor's timestamp: refer to the coincident time stamp."""
    held: str | None = None


def place(
    device_time: dt.datetime | None,
    anchor: ClockAnchor | None,
    *,
    received: dt.datetime,
    tz: dt.tzinfo,
) -> Placement:
    """Place one reading: its device timestamp (local, no zone, or None), the anchor of the
    current connection (None: the clock was not read), the time it was received (aware) and the
    zone the sensor's clock was set in. See the module text for the rules."""
    if device_time is None:
        return Placement(received)
    if device_time.tzinfo is not None:
        raise ValueError("device_time is the sensor's local time: give it without a zone")
    if device_time < UNSET_BEFORE:
        return Placement(None, held=UNSET_CLOCK)
    if anchor is not None and anchor.clock_set:
        offset = anchor.offset(tz)
        if abs(offset) >= CLOCK_RESOLUTION:
            moved = _utc(device_time.replace(tzinfo=tz)) + offset
            return Placement(moved.astimezone(tz), corrected=True)
    return Placement(device_time.replace(tzinfo=tz))


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)  # arithmetic on instants, not on wall clocks (DST)


def coincident_time_stamp(
    anchor: ClockAnchor,
    *,
    tz: dt.tzinfo,
    sensor_ref: str,
    gateway_ref: str,
    resource_id: str | None = None,
) -> dict[str, Any]:
    """The PhdCoincidentTimeStampObservation of ``anchor``: the gateway's time in
    ``effectiveDateTime``, the sensor's in ``valueDateTime`` (in the zone its clock was set in).

    As the profile has it, ``subject`` is the sensor (PhdDevice) and ``device`` the gateway
    (PhgDevice) that took the reading; there is no identifier (a coincident time stamp is never
    deduplicated by one), so a Bundle carries it with an ``id`` of its own (``resource_id``) that
    an idempotent ``PUT`` keeps from being created twice.
    """
    observation: dict[str, Any] = {"resourceType": "Observation"}
    if resource_id is not None:
        observation["id"] = resource_id
    observation["meta"] = {"profile": [COINCIDENT_TIME_STAMP_PROFILE]}
    observation["status"] = "final"
    observation["code"] = {
        "coding": [
            {
                "system": MDC_SYSTEM,
                "code": str(MDC_ATTR_TIME_ABS),
                "display": "MDC_ATTR_TIME_ABS: Absolute time",
            }
        ],
        "text": "Absolute time",
    }
    observation["subject"] = {"reference": sensor_ref}
    observation["effectiveDateTime"] = fhir_datetime(anchor.gateway_time)
    observation["valueDateTime"] = fhir_datetime(anchor.device_time.replace(tzinfo=tz))
    observation["device"] = {"reference": gateway_ref}
    return observation


def coincident_time_stamp_entry(
    anchor: ClockAnchor, *, tz: dt.tzinfo, sensor_id: str, sensor_ref: str, gateway_ref: str
) -> MappedResource:
    """The coincident time stamp as a Bundle entry: an id derived from the sensor and the anchor
    (the same reading gives the same id in every Bundle that refers to it), ``PUT`` there."""
    key = f"{sensor_id}|{anchor.gateway_time.isoformat()}|{anchor.device_time.isoformat()}"
    full_url = urn_for(COINCIDENT_TIME_STAMP_PROFILE, key)
    resource_id = full_url.removeprefix("urn:uuid:")
    resource = coincident_time_stamp(
        anchor, tz=tz, sensor_ref=sensor_ref, gateway_ref=gateway_ref, resource_id=resource_id
    )
    return MappedResource(full_url, resource, update_url=f"Observation/{resource_id}")


def is_coincident_time_stamp(resource: Mapping[str, Any]) -> bool:
    """True for a PhdCoincidentTimeStampObservation (its subject is the sensor, not a patient)."""
    meta = resource.get("meta")
    return isinstance(meta, dict) and COINCIDENT_TIME_STAMP_PROFILE in meta.get("profile", ())


def coincident_time_stamp_reference(reference: str) -> dict[str, Any]:
    """The extension a corrected Observation carries, pointing at its coincident time stamp."""
    return {"url": COINCIDENT_TIME_STAMP_REFERENCE, "valueReference": {"reference": reference}}
