"""End to end over a real BLE stack: firmware simulator → Bumble → bleak → gateway → store.

The simulator encodes with its own firmware-style encoders; the gateway decodes with its codecs, so
these tests cross-check two implementations of the same specifications.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path

import pytest
from fhir.resources.R4B.observation import Observation

from gateway.ble.errors import (
    MeasureFailure,
    MeasurementTimeoutError,
    SensorError,
    SensorUnavailableError,
)
from gateway.ble.session import SessionState
from gateway.fhir.read import observation_codes
from tests.harness import Running, running_gateway, wait_until
from tests.processes import bedside_sim, free_port

KINDS_AND_CODES = {
    "ecg": {"8867-4", "147240", "131330"},  # heart rate, RR interval, ECG lead II waveform
    "spo2": {"59408-5", "8867-4"},
    "bp": {"85354-9", "8867-4"},
    "thermo": {"8310-5"},
}
STREAMING = str(SessionState.STREAMING)


async def _stored_codes(run: Running) -> dict[str, set[str]]:
    """Codes of the stored Observations, per sensor kind."""
    assert run.gateway.store is not None
    kinds = {s.address: s.kind for s in run.manager.statuses()}
    out: dict[str, set[str]] = {}
    for obs in await run.gateway.store.latest_observations(10_000):
        out.setdefault(kinds[obs.device_address], set()).update(observation_codes(obs.resource))
    return out


async def test_all_four_sensors_stream_time_synced_with_the_right_codes(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as run:
        await wait_until(
            lambda: run.states() == dict.fromkeys(KINDS_AND_CODES, STREAMING),
            20,
            "all four sensors streaming",
        )

        async def every_code_seen() -> bool:
            codes = await _stored_codes(run)
            return all(want <= codes.get(kind, set()) for kind, want in KINDS_AND_CODES.items())

        deadline = time.monotonic() + 30
        while not await every_code_seen():
            assert time.monotonic() < deadline, await _stored_codes(run)
            await asyncio.sleep(0.1)

        for kind, sensor in run.sim.sensors.items():
            assert sensor.stats.clock_writes >= 1, f"{kind} clock was not set"
        assert run.gateway.store is not None
        for obs in await run.gateway.store.latest_observations(200):
            Observation.model_validate(obs.resource)  # every stored Observation is valid R4
        summary = await run.gateway.summary()
        assert summary["decode_errors"] == 0
        assert {d["kind"] for d in summary["devices"]} == set(KINDS_AND_CODES)


async def test_stored_bp_records_are_downloaded_once_across_reconnects(tmp_path: Path) -> None:
    # No live cuff cycle during the test: every BP Observation comes from the stored records.
    async with running_gateway(tmp_path, ["bp"], overrides={"bp.interval_s": 3600}) as run:
        bp = run.sim.sensors["bp"]
        stored_on_device = len(bp.records)
        assert stored_on_device > 0
        await wait_until(
            lambda: run.status("bp").stored_records >= stored_on_device, 20, "stored BP records"
        )
        await wait_until(lambda: run.states() == {"bp": STREAMING}, 20, "bp streaming")
        store = run.gateway.store
        assert store is not None
        assert (await store.observation_counts())["85354-9"] == stored_on_device
        requests_before = bp.stats.racp_requests

        assert await bp.disconnect()
        await wait_until(lambda: run.status("bp").reconnects >= 1, 10, "reconnect attempt")
        await wait_until(lambda: run.states() == {"bp": STREAMING}, 10, "bp streaming again")
        assert bp.stats.racp_requests > requests_before  # it asked again ...
        # ... for the records at or after the newest one it has (the bound is inclusive) ...
        await wait_until(
            lambda: run.status("bp").stored_records == stored_on_device + 1,
            10,
            "only the newest stored record sent again",
        )
        assert (await store.observation_counts())["85354-9"] == stored_on_device  # ... once stored


async def test_reconnects_within_ten_seconds_after_a_disconnect(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, ["ecg"]) as run:
        await wait_until(lambda: run.states() == {"ecg": STREAMING}, 20, "ecg streaming")
        before = run.status("ecg").observations
        assert await run.sim.sensors["ecg"].disconnect()
        await wait_until(lambda: run.status("ecg").reconnects >= 1, 10, "the loss noticed")
        await wait_until(lambda: run.states() == {"ecg": STREAMING}, 10, "ecg streaming again")
        await wait_until(
            lambda: run.status("ecg").observations > before + 2, 10, "data flowing again"
        )


async def test_faults_scenario_is_survived_with_counters_rising(tmp_path: Path) -> None:
    overrides = {
        "faults.disconnect_every_s": 3,
        "faults.advertising_pause_s": 0.5,
        "faults.burst_every_s": 2,
    }
    async with running_gateway(
        tmp_path, ["ecg", "spo2", "thermo"], scenario="faults", overrides=overrides
    ) as run:
        await wait_until(
            lambda: sum(s.decode_errors for s in run.manager.statuses()) >= 3,
            30,
            "malformed packets counted",
        )
        await wait_until(
            lambda: sum(s.reconnects for s in run.manager.statuses()) >= 2,
            30,
            "reconnects after fault disconnects",
        )
        flowing = {s.kind: s.observations for s in run.manager.statuses()}
        await wait_until(
            lambda: all(s.observations > flowing[s.kind] for s in run.manager.statuses()),
            30,
            "data still flowing from every sensor",
        )
        stats = {kind: s.stats for kind, s in run.sim.sensors.items()}
        assert sum(s.truncated + s.wrong_flags for s in stats.values()) >= 1
        assert sum(s.nan_values + s.nres_values for s in stats.values()) >= 1


@pytest.mark.parametrize(
    ("kind", "code"),
    [("ecg", "8867-4"), ("spo2", "59408-5"), ("bp", "85354-9"), ("thermo", "8310-5")],
)
async def test_measure_on_demand(tmp_path: Path, kind: str, code: str) -> None:
    overrides = {"bp.cycle_s": 0.5, "thermo.interval_s": 30, "bp.interval_s": 600}
    async with running_gateway(tmp_path, [kind], overrides=overrides) as run:
        await wait_until(lambda: run.states() == {kind: STREAMING}, 20, f"{kind} streaming")
        observation = await run.manager.measure(code, timeout=20)
        assert code in observation_codes(observation)
        Observation.model_validate(dict(observation))
        if kind in {"bp", "thermo"}:  # their profiles trigger a measurement; the others stream
            assert run.sim.sensors[kind].stats.on_demand >= 1


async def test_measure_errors(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, ["thermo"], overrides={"thermo.interval_s": 600}) as run:
        await wait_until(lambda: run.states() == {"thermo": STREAMING}, 20, "thermo streaming")
        with pytest.raises(SensorUnavailableError, match="2339-0") as unknown:
            await run.manager.measure("2339-0", timeout=1)  # glucose: no such sensor
        assert unknown.value.failure is MeasureFailure.NO_SENSOR
        # The sensor goes silent and away: a clear error, not a hang.
        await run.sim.sensors["thermo"].stop()
        with pytest.raises(SensorError) as info:
            await run.manager.measure("8310-5", timeout=2)
        if isinstance(info.value, MeasurementTimeoutError):
            assert info.value.failure is MeasureFailure.TIMEOUT
        else:  # noticed gone, or the trigger write failed on the dead link
            assert info.value.failure is MeasureFailure.NOT_CONNECTED
        assert "Error" not in str(info.value)  # a sentence, no exception repr


async def test_gateway_over_hci_tcp_against_bedside_sim(tmp_path: Path) -> None:
    """The CLI path: `bedside-sim --hci tcp-server:…` and a gateway on `hci:tcp-client:…`."""
    from gateway.app import Gateway
    from gateway.config import load_settings

    port = free_port()
    with bedside_sim(port, "spo2,thermo"):
        settings = load_settings(
            data_dir=tmp_path,
            ble={"transport": f"hci:tcp-client:127.0.0.1:{port}", "auto_accept": True},
            http={"enabled": False},
        )
        gateway = Gateway(settings)
        task = asyncio.create_task(gateway.run())
        try:
            await wait_until(
                lambda: (
                    gateway.manager is not None
                    and sorted(str(s.state) for s in gateway.manager.statuses())
                    == [STREAMING, STREAMING]
                ),
                30,
                "both sensors streaming over HCI/TCP",
            )
            await wait_until(
                lambda: (
                    gateway.manager is not None
                    and all(s.observations > 0 for s in gateway.manager.statuses())
                ),
                20,
                "observations over HCI/TCP",
            )
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_records_of_a_clock_never_set_are_kept_here_not_sent(tmp_path: Path) -> None:
    """The cuff's stored records from before the gateway first set its clock carry the factory
    epoch (2000-01-01): stored and counted, but no Bundle carries them (PHD IG, "Time-stamps and
    time synchronization"); what it measures after the clock was set is sent."""
    dead_port = free_port()  # an uplink that never connects: the outbox keeps what it would send
    async with running_gateway(
        tmp_path,
        ["bp"],
        overrides={"bp.interval_s": 3600, "bp.cycle_s": 0.5},
        mqtt={"url": f"mqtt://127.0.0.1:{dead_port}"},
        patient={"reference": "Patient/7"},
    ) as run:
        bp = run.sim.sensors["bp"]
        on_device = len(bp.records)
        await wait_until(
            lambda: run.status("bp").stored_records >= on_device, 20, "stored BP records"
        )
        await wait_until(lambda: run.states() == {"bp": STREAMING}, 20, "bp streaming")
        store = run.gateway.store
        assert store is not None
        counts = await store.observation_counts()
        assert counts["85354-9"] == on_device  # kept here, with the pulse rate of each
        assert run.status("bp").undated == counts["85354-9"] + counts["8867-4"]
        await run.manager.measure("85354-9", timeout=30)  # a cycle on the set clock
        items = await store.outbox_items()
        sent = [
            entry["resource"]
            for item in items
            for entry in json.loads(item.payload)["entry"]
            if entry["resource"]["resourceType"] == "Observation"
        ]
        assert sent, "the new reading is sent"
        assert all(not o["effectiveDateTime"].startswith("2000-") for o in sent)
        summary = await run.gateway.summary()
        assert summary["devices"][0]["undated"] == 2 * on_device
        assert summary["devices"][0]["clock_offset_s"] is None  # it read a clock never set


async def test_records_of_a_clock_that_drifted_are_moved_and_refer_to_the_coincident_time_stamp(
    tmp_path: Path,
) -> None:
    """A cuff whose clock a gateway set long ago runs 90 s slow: the gateway reads its clock on
    connecting, moves the stored records by the offset onto its own timeline, and every Bundle
    that carries a moved record carries the Coincident Time Stamp it refers to (PHD IG,
    "Time-stamps and time synchronization"); the identifier keeps the cuff's own time stamp."""
    dead_port = free_port()  # the outbox keeps what it would send
    async with running_gateway(
        tmp_path,
        ["bp"],
        overrides={"bp.interval_s": 3600, "clock_set_error_s": -90},
        mqtt={"url": f"mqtt://127.0.0.1:{dead_port}"},
        patient={"reference": "Patient/7"},
    ) as run:
        on_device = len(run.sim.sensors["bp"].records)
        await wait_until(
            lambda: run.status("bp").stored_records >= on_device, 20, "stored BP records"
        )
        await wait_until(lambda: run.states() == {"bp": STREAMING}, 20, "bp streaming")
        status = run.status("bp")
        assert status.undated == 0
        assert status.clock_offset_s is not None
        assert 89 <= status.clock_offset_s <= 92  # 90 s slow, read within a round trip
        store = run.gateway.store
        assert store is not None
        bundles = [json.loads(item.payload) for item in await store.outbox_items()]
    moved = 0
    for bundle in bundles:
        entries = {e["fullUrl"]: e for e in bundle.get("entry", ())}
        for entry in entries.values():
            resource = entry["resource"]
            if "85354-9" not in observation_codes(resource):
                continue
            refs = [
                e["valueReference"]["reference"]
                for e in resource["extension"]
                if e["url"].endswith("/CoincidentTimeStampReference")
            ]
            assert len(refs) == 1, "a moved record refers to its coincident time stamp"
            cts = entries[refs[0]]
            assert cts["request"]["method"] == "PUT"
            assert cts["request"]["url"] == f"Observation/{cts['resource']['id']}"
            assert cts["resource"]["subject"]["reference"].startswith("urn:uuid:")  # the cuff
            device = dt.datetime.fromisoformat(cts["resource"]["valueDateTime"])
            gateway = dt.datetime.fromisoformat(cts["resource"]["effectiveDateTime"])
            assert 89 <= (gateway - device).total_seconds() <= 92
            effective = dt.datetime.fromisoformat(resource["effectiveDateTime"])
            stamp = resource["identifier"][0]["value"].split("-")[-1]  # YYYYMMDDhhmmss.00
            own = dt.datetime.strptime(stamp, "%Y%m%d%H%M%S.00").replace(tzinfo=dt.UTC)
            assert effective - own == gateway - device  # moved by the anchor's offset
            moved += 1
    assert moved == on_device
