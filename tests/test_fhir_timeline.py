"""Placing sensor timestamps on the gateway's timeline (PHD IG "Time-stamps and time
synchronization"), and the Coincident Time Stamp Observation that records the anchor."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from gateway.fhir.resource import fhir_datetime
from gateway.fhir.timeline import (
    COINCIDENT_TIME_STAMP_PROFILE,
    COINCIDENT_TIME_STAMP_REFERENCE,
    UNSET_CLOCK,
    ClockAnchor,
    Placement,
    coincident_time_stamp,
    coincident_time_stamp_entry,
    coincident_time_stamp_reference,
    is_coincident_time_stamp,
    place,
)
from gateway.fhir.validate import r4b_model

BERLIN = ZoneInfo("Europe/Berlin")
GATEWAY_NOW = dt.datetime(2026, 12, 2, 8, 0, 0, tzinfo=dt.UTC)  # 09:00 in Berlin
RECEIVED = GATEWAY_NOW + dt.timedelta(seconds=2)
# A clock the gateway set in Berlin time some days ago, now 6 s fast (drift).
FAST_CLOCK = ClockAnchor(dt.datetime(2026, 12, 2, 9, 0, 6), GATEWAY_NOW)  # noqa: DTZ001
# A clock that lost its time (battery change): it counts from its factory epoch.
UNSET = ClockAnchor(dt.datetime(2000, 1, 1, 0, 42), GATEWAY_NOW)  # noqa: DTZ001
SENSOR_REF = "urn:uuid:0b8f1a0e-4c55-5c1b-9d1b-2f1a3c4d5e6f"
GATEWAY_REF = "urn:uuid:5d2c7a10-3b4e-5f60-8a1b-c2d3e4f5a6b7"


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args)  # noqa: DTZ001 - the sensor's local time, no zone


def test_no_device_timestamp_means_the_time_of_reception() -> None:
    assert place(None, FAST_CLOCK, received=RECEIVED, tz=BERLIN) == Placement(RECEIVED)


def test_a_set_clock_is_corrected_by_the_anchor_and_refers_to_it() -> None:
    placed = place(local(2026, 12, 2, 8, 30, 6), FAST_CLOCK, received=RECEIVED, tz=BERLIN)
    assert placed == Placement(dt.datetime(2026, 12, 2, 8, 30, tzinfo=BERLIN), corrected=True)
    assert FAST_CLOCK.offset(BERLIN) == dt.timedelta(seconds=-6)
    assert FAST_CLOCK.clock_set


@pytest.mark.parametrize("anchor", [FAST_CLOCK, UNSET, None])
def test_a_stamp_of_an_unset_clock_is_held_not_given_a_false_date(
    anchor: ClockAnchor | None,
) -> None:
    placed = place(local(2000, 1, 1, 3, 0), anchor, received=RECEIVED, tz=BERLIN)
    assert placed == Placement(None, held=UNSET_CLOCK)


@pytest.mark.parametrize("anchor", [UNSET, None])
def test_a_stamp_of_an_earlier_set_clock_is_kept_as_the_sensor_gave_it(
    anchor: ClockAnchor | None,
) -> None:
    stamp = local(2026, 11, 30, 21, 15)
    placed = place(stamp, anchor, received=RECEIVED, tz=BERLIN)
    assert placed == Placement(stamp.replace(tzinfo=BERLIN))
    assert not UNSET.clock_set


def test_correction_is_on_instants_across_a_daylight_saving_change() -> None:
    # Set at 01:59:50 CET on the night summer time starts; a reading at 03:00:10 CEST is 20 s
    # later, not an hour and 20 s.
    anchor = ClockAnchor(
        local(2026, 3, 29, 1, 59, 50), dt.datetime(2026, 3, 29, 0, 59, 50, tzinfo=dt.UTC)
    )
    placed = place(local(2026, 3, 29, 3, 0, 10), anchor, received=RECEIVED, tz=BERLIN)
    assert placed.effective == dt.datetime(2026, 3, 29, 1, 0, 10, tzinfo=dt.UTC)


def test_times_must_say_whose_clock_they_are() -> None:
    with pytest.raises(ValueError, match="without a zone"):
        ClockAnchor(GATEWAY_NOW, GATEWAY_NOW)
    with pytest.raises(ValueError, match="needs a time zone"):
        ClockAnchor(local(2026, 1, 1), local(2026, 1, 1))
    with pytest.raises(ValueError, match="without a zone"):
        place(GATEWAY_NOW, FAST_CLOCK, received=RECEIVED, tz=BERLIN)


def test_the_coincident_time_stamp_observation() -> None:
    """PhdCoincidentTimeStampObservation: subject the sensor (PhdDevice), device the gateway
    (PhgDevice), the gateway's time in effectiveDateTime, the sensor's in valueDateTime."""
    observation = coincident_time_stamp(
        FAST_CLOCK, tz=BERLIN, sensor_ref=SENSOR_REF, gateway_ref=GATEWAY_REF
    )
    assert observation["meta"]["profile"] == [COINCIDENT_TIME_STAMP_PROFILE]
    assert observation["code"]["coding"][0]["code"] == "67975"
    assert observation["subject"] == {"reference": SENSOR_REF}
    assert observation["device"] == {"reference": GATEWAY_REF}
    assert observation["effectiveDateTime"] == "2026-12-02T08:00:00Z"
    assert observation["valueDateTime"] == "2026-12-02T09:00:06+01:00"
    assert "identifier" not in observation  # never deduplicated by an identifier
    assert "id" not in observation
    assert r4b_model(observation).status == "final"
    assert fhir_datetime(GATEWAY_NOW) == observation["effectiveDateTime"]


def test_the_coincident_time_stamp_entry_has_a_stable_id_of_its_own() -> None:
    """The same anchor gives the same id (and full URL) in every Bundle, PUT to that id; another
    anchor or another sensor another one."""
    entry = coincident_time_stamp_entry(
        FAST_CLOCK, tz=BERLIN, sensor_id="AA", sensor_ref=SENSOR_REF, gateway_ref=GATEWAY_REF
    )
    again = coincident_time_stamp_entry(
        FAST_CLOCK, tz=BERLIN, sensor_id="AA", sensor_ref=SENSOR_REF, gateway_ref=GATEWAY_REF
    )
    assert entry == again
    resource_id = entry.resource["id"]
    assert entry.full_url == f"urn:uuid:{resource_id}"
    assert entry.update_url == f"Observation/{resource_id}"
    assert entry.if_none_exist is None
    assert is_coincident_time_stamp(entry.resource)
    other_sensor = coincident_time_stamp_entry(
        FAST_CLOCK, tz=BERLIN, sensor_id="BB", sensor_ref=SENSOR_REF, gateway_ref=GATEWAY_REF
    )
    other_anchor = coincident_time_stamp_entry(
        UNSET, tz=BERLIN, sensor_id="AA", sensor_ref=SENSOR_REF, gateway_ref=GATEWAY_REF
    )
    assert len({entry.full_url, other_sensor.full_url, other_anchor.full_url}) == 3
    assert not is_coincident_time_stamp({"resourceType": "Observation"})


def test_an_offset_under_the_clock_resolution_leaves_the_stamp_alone() -> None:
    """Date Time counts whole seconds: a clock 0.6 s slow is read as on time, not corrected."""
    anchor = ClockAnchor(local(2026, 12, 2, 8, 59, 59, 400_000), GATEWAY_NOW)
    stamp = local(2026, 12, 2, 8, 30)
    assert place(stamp, anchor, received=RECEIVED, tz=BERLIN) == Placement(
        stamp.replace(tzinfo=BERLIN)
    )
    a_second_slow = ClockAnchor(local(2026, 12, 2, 8, 59, 59), GATEWAY_NOW)
    placed = place(stamp, a_second_slow, received=RECEIVED, tz=BERLIN)
    assert placed.corrected
    assert placed.effective == dt.datetime(2026, 12, 2, 8, 30, 1, tzinfo=BERLIN)


def test_the_reference_extension() -> None:
    assert coincident_time_stamp_reference("urn:uuid:x") == {
        "url": COINCIDENT_TIME_STAMP_REFERENCE,
        "valueReference": {"reference": "urn:uuid:x"},
    }
