"""The simulated glucose meter: Glucose service and RACP over Bumble, and the gateway downloading
its records into glucose Observations (LOINC 2339-0) end to end.

The meter encodes with the simulator's own firmware-style encoders (firmware_sim/characteristics.py)
and the tests decode with the gateway's codec (gateway/ieee11073/gls.py): two implementations of
GLS v1.0 §3.1-3.4 checked against each other.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from decimal import Decimal
from pathlib import Path

import pytest
from bumble.att import ATT_Error

from firmware_sim import characteristics as ch
from firmware_sim import devices
from firmware_sim.devices.glucose import GlucoseSensor
from gateway.ble.session import SessionState
from gateway.ieee11073.gls import (
    ConcentrationUnit,
    GlucoseFeature,
    GlucoseFeatureValue,
    GlucoseMeasurement,
    GlucoseMeasurementContext,
    Meal,
    SampleLocation,
    SampleType,
)
from gateway.profiles import load_profiles
from tests.harness import running_gateway, wait_until
from tests.sim_central import FAST, check_racp_housekeeping, next_value, running

GLUCOSE_OFF = {**FAST, "glucose.interval_s": None}  # only the records stored before the run
STREAMING = str(SessionState.STREAMING)
UNSET_CLOCK_NOW = dt.datetime(2000, 1, 1, 4, 0, 0)  # noqa: DTZ001 - firmware_sim.sensor BOOT_OFFSET


def test_glucose_is_a_simulator_kind_matched_by_the_glucose_profile() -> None:
    assert devices.KINDS["glucose"] is GlucoseSensor
    profile = load_profiles()["glucose"]
    assert profile.match_services == ("00001808-0000-1000-8000-00805f9b34fb",)
    assert GlucoseSensor.ADVERTISED_SERVICES == (0x1808,)


async def test_glucose_records_through_racp() -> None:
    async with running(("glucose",), overrides=GLUCOSE_OFF) as (sim, central):
        sensor = sim.sensors["glucose"]
        link = await central.connect(sensor.address)
        with pytest.raises(ATT_Error) as info:  # RACP indications not enabled
            await link.write(0x2A52, b"\x04\x01")
        assert info.value.error_code == 0xFD
        racp = await link.subscribe(0x2A52, indicate=True)
        with pytest.raises(ATT_Error) as info:  # records need Glucose Measurement notifications
            await link.write(0x2A52, b"\x01\x01")
        assert info.value.error_code == 0xFD
        measurements = await link.subscribe(ch.GLUCOSE_MEASUREMENT)
        contexts = await link.subscribe(ch.GLUCOSE_CONTEXT)
        feature = GlucoseFeatureValue.from_bytes(await link.read(ch.GLUCOSE_FEATURE))
        assert feature.features == (
            GlucoseFeature.LOW_BATTERY_DETECTION
            | GlucoseFeature.SENSOR_SAMPLE_SIZE
            | GlucoseFeature.SENSOR_RESULT_HIGH_LOW_DETECTION
        )

        await link.write(0x2A52, b"\x04\x01")  # number of records: all
        assert await next_value(racp) == bytes.fromhex("05000400")
        await link.write(0x2A52, b"\x01\x01")  # report all
        records = [GlucoseMeasurement.from_bytes(await next_value(measurements)) for _ in range(4)]
        context = [GlucoseMeasurementContext.from_bytes(await next_value(contexts)) for _ in "ab"]
        assert await next_value(racp) == bytes.fromhex("06000101")

        assert [r.sequence_number for r in records] == [0, 1, 2, 3]
        assert [r.base_time.to_datetime() for r in records] == [
            UNSET_CLOCK_NOW - dt.timedelta(hours=h) for h in (12, 9, 6, 3)
        ]
        for record in records:
            assert record.unit is ConcentrationUnit.KG_PER_L
            assert record.sample_type == SampleType.CAPILLARY_WHOLE_BLOOD
            assert record.sample_location == SampleLocation.FINGER
            assert record.concentration is not None
            assert record.concentration.exponent == -5
            assert 50 < record.concentration.mantissa < 150  # mg/dL around the scenario's 98
        assert [r.context_follows for r in records] == [False, True, False, True]
        # Each context follows its measurement, with the same sequence number (GLS §3.2).
        assert [c.sequence_number for c in context] == [1, 3]
        assert [c.meal for c in context] == [Meal.PREPRANDIAL, Meal.POSTPRANDIAL]
        assert context[0].carbohydrate_id is None
        assert context[1].carbohydrate_id == 1  # breakfast, 45 g
        assert context[1].carbohydrate_kg is not None
        assert context[1].carbohydrate_kg.decimal == Decimal("0.045")

        await link.write(0x2A52, bytes.fromhex("0103010300"))  # report >= 3: the last one
        assert GlucoseMeasurement.from_bytes(await next_value(measurements)) == records[3]
        assert await next_value(contexts) == bytes(context[1])
        assert await next_value(racp) == bytes.fromhex("06000101")
        await link.write(0x2A52, b"\x01\x05")  # first record
        assert GlucoseMeasurement.from_bytes(await next_value(measurements)) == records[0]
        assert await next_value(racp) == bytes.fromhex("06000101")

        await check_racp_housekeeping(link, racp, stored=4)
        assert measurements.empty()
        assert contexts.empty()
        assert sensor.stats.racp_requests == 12


async def test_glucose_racp_abort_during_a_report() -> None:
    overrides = {**GLUCOSE_OFF, "glucose.stored_records": 100}
    async with running(("glucose",), overrides=overrides) as (sim, central):
        link = await central.connect(sim.sensors["glucose"].address)
        racp = await link.subscribe(0x2A52, indicate=True)
        measurements = await link.subscribe(ch.GLUCOSE_MEASUREMENT)
        await link.write(0x2A52, b"\x01\x01")
        await next_value(measurements)
        with pytest.raises(ATT_Error) as info:  # a second procedure while one runs
            await link.write(0x2A52, b"\x04\x01")
        assert info.value.error_code == 0xFE
        await link.write(0x2A52, b"\x03\x00")
        response = await next_value(racp)
        received = 1 + measurements.qsize()
    assert response == bytes.fromhex("06000301")  # abort: success; the report ends without its own
    assert received < 100


async def test_glucose_in_mmol_per_l() -> None:
    overrides = {**GLUCOSE_OFF, "glucose.stored_records": 1, "glucose.mmol_per_l": True}
    async with running(("glucose",), overrides=overrides) as (sim, central):
        link = await central.connect(sim.sensors["glucose"].address)
        racp = await link.subscribe(0x2A52, indicate=True)
        measurements = await link.subscribe(ch.GLUCOSE_MEASUREMENT)
        await link.write(0x2A52, b"\x01\x01")
        record = GlucoseMeasurement.from_bytes(await next_value(measurements))
        assert await next_value(racp) == bytes.fromhex("06000101")
    assert record.unit is ConcentrationUnit.MOL_PER_L
    (m,) = record.measurements()
    assert m.unit_code == 4722  # MDC_DIM_MILLI_MOLE_PER_L
    assert m.value is not None
    assert m.value.decimal is not None
    assert Decimal("3.0") < m.value.decimal < Decimal("8.0")  # 98 mg/dL ≈ 5.4 mmol/L
    assert m.value.decimal.as_tuple().exponent == -1  # to 0.1 mmol/L, as the meter sent it


# -- end to end: simulator → Bumble → gateway → store ---------------------------------------------


def _expected(record: bytes) -> tuple[Decimal, str]:
    """The mg/dL value and the device's user-facing time of a record, via the gateway codec."""
    value = GlucoseMeasurement.from_bytes(record)
    (m,) = value.measurements()
    assert m.value is not None
    assert m.value.decimal is not None
    return m.value.decimal, value.timestamp.compact()


async def test_gateway_downloads_the_stored_glucose_records(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, ["glucose"], overrides=GLUCOSE_OFF) as run:
        meter = run.sim.sensors["glucose"]
        assert isinstance(meter, GlucoseSensor)
        on_device = len(meter.records)
        assert on_device == 4
        await wait_until(
            lambda: run.status("glucose").stored_records >= on_device, 20, "stored glucose records"
        )
        await wait_until(lambda: run.states() == {"glucose": STREAMING}, 20, "glucose streaming")
        store = run.gateway.store
        assert store is not None
        assert (await store.observation_counts())["2339-0"] == on_device
        stored = [
            o.resource
            for o in await store.latest_observations(100)
            if o.device_address == meter.address
        ]
        observed = set()
        for resource in stored:
            codings = resource["code"]["coding"]
            assert [(c["system"], c["code"]) for c in codings] == [
                ("urn:iso:std:iso:11073:10101", "160184"),
                ("http://loinc.org", "2339-0"),
            ]
            quantity = resource["valueQuantity"]
            assert (quantity["unit"], quantity["code"]) == ("mg/dL", "mg/dL")
            assert resource["bodySite"]["coding"][0]["code"] == "7569003"  # finger
            # The PHD IG identifier carries the device's own timestamp (YYYYMMDDhhmmss).
            timestamp = resource["identifier"][0]["value"].split("-")[3][:14]
            observed.add((Decimal(str(quantity["value"])), timestamp))
        assert observed == {_expected(r.measurement) for r in meter.records}
        assert run.status("glucose").decode_errors == 0


async def test_a_new_reading_reaches_the_gateway(tmp_path: Path) -> None:
    # A reading every 3 s: the meter stores it and ends the link; the gateway reconnects and
    # downloads what is new (the RACP time filter from its newest stored record).
    overrides = {**FAST, "glucose.interval_s": 3.0, "glucose.stored_records": 2}
    async with running_gateway(tmp_path, ["glucose"], overrides=overrides) as run:
        meter = run.sim.sensors["glucose"]
        assert isinstance(meter, GlucoseSensor)
        store = run.gateway.store
        assert store is not None
        await wait_until(lambda: len(meter.records) >= 3, 20, "a new reading on the meter")
        first_new = meter.records[2]
        assert first_new.time.year > UNSET_CLOCK_NOW.year  # taken after the gateway set the clock
        want = _expected(first_new.measurement)

        async def stored() -> set[tuple[Decimal, str]]:
            found = set()
            for o in await store.latest_observations(100):
                timestamp = o.resource["identifier"][0]["value"].split("-")[3][:14]
                value = Decimal(str(o.resource["valueQuantity"]["value"]))
                found.add((value, timestamp))
            return found

        deadline = time.monotonic() + 30
        while want not in await stored():
            assert time.monotonic() < deadline, (want, await stored())
            await asyncio.sleep(0.1)
        assert run.status("glucose").reconnects >= 1
        assert meter.stats.disconnects >= 1
        # Every record is stored once, however often the gateway asked again.
        counts = await store.observation_counts()
        assert counts["2339-0"] == len(await stored())
