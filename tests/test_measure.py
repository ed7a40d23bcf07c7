"""Measure on demand from the right sensor (gateway.ble.manager.SensorManager.measure), over the
real Bumble stack with the firmware simulator: one source per request, streaming sensors before
any trigger, the least burdensome trigger, a busy sensor's running measurement joined, concurrent
requests sharing one measurement; and the profile keys that say so (``[measure] streams`` and
``burden``, docs/architecture.md "Measure on demand")."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.ble.errors import (
    MeasureFailure,
    MeasurementNotAllowedError,
    MeasurementTimeoutError,
    SensorBusyError,
    SensorError,
    SensorNotConnectedError,
    SensorUnavailableError,
)
from gateway.ble.measure import ObservationEvent
from gateway.ble.session import DeviceSession, SessionState
from gateway.errors import ProfileError
from gateway.fhir.read import observation_codes
from gateway.profiles import DEFAULT_DIRECTORY, Burden, load_profile, load_profiles
from tests.harness import Running, running_gateway, wait_until

HR, BP_PANEL, PULSE_BP = "8867-4", "85354-9", "8867-4"
STREAMING = str(SessionState.STREAMING)
# No periodic cuff cycle during a test (only the ones a test starts), and short cycles.
NO_PERIODIC_BP = {"bp.interval_s": 3600, "bp.cycle_s": 0.5}


class TriggerSpy:
    """Counts the measurement triggers the gateway writes to one session (and their answers)."""

    def __init__(self, session: DeviceSession) -> None:
        self.answers: list[bool] = []  # True: started; False: already in progress (ATT 0xFE)
        self.writing = asyncio.Event()
        inner: Callable[[str, bytes], Awaitable[bool]] = session.start_measurement

        async def start_measurement(uuid: str, value: bytes) -> bool:
            self.writing.set()
            answer = await inner(uuid, value)
            self.answers.append(answer)
            return answer

        session.start_measurement = start_measurement  # type: ignore[method-assign]


def session_of(run: Running, kind: str) -> DeviceSession:
    session = run.manager.session(run.status(kind).address)
    assert session is not None
    return session


async def all_streaming(run: Running, kinds: list[str]) -> None:
    await wait_until(
        lambda: run.states() == dict.fromkeys(kinds, STREAMING), 30, f"{kinds} streaming"
    )


# -- the profile keys ------------------------------------------------------------------------------


def test_streams_and_burden_of_the_shipped_profiles() -> None:
    profiles = load_profiles()
    assert profiles["ecg"].streamed() == {HR}  # a wait profile: every code it lists
    assert profiles["spo2"].streamed() == {"59408-5", "2708-6", HR}
    assert profiles["bp"].streamed() == frozenset()  # nothing without a cuff cycle
    assert profiles["thermo"].streamed() == frozenset()
    assert profiles["bp"].measure.burden is Burden.CUFF_INFLATION
    assert profiles["thermo"].measure.burden is Burden.SPOT_CHECK
    assert profiles["ecg"].measure.burden is Burden.NONE
    assert [b.rank for b in Burden] == [0, 1, 2]  # none < spot-check < cuff-inflation


def test_a_profile_without_the_new_keys_still_loads(tmp_path: Path) -> None:
    text = (DEFAULT_DIRECTORY / "bp.toml").read_text(encoding="utf-8")
    path = tmp_path / "bp.toml"
    path.write_text(re.sub(r"(?m)^burden = .*\n", "", text), encoding="utf-8")
    profile = load_profile(path)
    assert profile.measure.burden is Burden.NONE
    assert profile.measure.streams is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('burden = "tourniquet"', "measure.burden: Input should be 'none', 'spot-check' or"),
        ('streams = ["8310-5"]', "measure.streams: 8310-5 not in loinc"),
        ('streams = ["pulse"]', "measure.streams.0: String should match pattern"),
    ],
)
def test_bad_measure_keys_are_named(tmp_path: Path, line: str, message: str) -> None:
    text = (DEFAULT_DIRECTORY / "bp.toml").read_text(encoding="utf-8")
    path = tmp_path / "bp.toml"
    path.write_text(re.sub(r"(?m)^burden = .*$", line, text), encoding="utf-8")
    with pytest.raises(ProfileError, match=re.escape(message)) as info:
        load_profile(path)
    assert str(info.value).startswith(f"{tmp_path.name}/bp.toml: ")


def test_failures_carry_their_machine_code() -> None:
    assert [str(f) for f in MeasureFailure] == [
        "not_connected",
        "busy",
        "timeout",
        "no_sensor",
        "not_allowed",
    ]
    assert SensorNotConnectedError("AA", SessionState.LOST).failure is MeasureFailure.NOT_CONNECTED
    assert SensorUnavailableError("x").failure is MeasureFailure.NO_SENSOR
    assert MeasurementTimeoutError("x").failure is MeasureFailure.TIMEOUT
    assert SensorBusyError("x").failure is MeasureFailure.BUSY
    assert isinstance(SensorBusyError("x"), MeasurementTimeoutError)
    assert MeasurementNotAllowedError("x").failure is MeasureFailure.NOT_ALLOWED
    assert SensorError("x", MeasureFailure.BUSY).failure is MeasureFailure.BUSY


# -- choosing the source ---------------------------------------------------------------------------


async def test_heart_rate_comes_from_a_streaming_sensor_never_the_cuff(tmp_path: Path) -> None:
    kinds = ["ecg", "spo2", "bp"]
    async with running_gateway(tmp_path, kinds, overrides=NO_PERIODIC_BP) as run:
        await all_streaming(run, kinds)
        bp_spy = TriggerSpy(session_of(run, "bp"))
        for _ in range(3):
            observation = await run.manager.measure(HR, timeout=20)
            assert HR in observation_codes(observation)
        bp = run.sim.sensors["bp"]
        assert bp_spy.answers == []  # no trigger written to the cuff
        assert (bp.stats.on_demand, bp.stats.measurements) == (0, 0)  # no cuff cycle


async def test_the_least_burdensome_trigger_is_the_one_started(tmp_path: Path) -> None:
    """With the oximeter's continuous readings not counted as streamed (its spot-check trigger
    instead), heart rate needs a started measurement: the spot-check, never the cuff."""
    profiles = tmp_path / "profiles"
    shutil.copytree(DEFAULT_DIRECTORY, profiles, ignore=shutil.ignore_patterns("__*"))
    spo2 = (profiles / "spo2.toml").read_text(encoding="utf-8")
    spot_check = (
        'method = "write"\n'
        'service = "9a1c0001-5b3e-4f6a-8d2c-7e4b1f0a9c01"\n'
        'uuid = "9a1c0002-5b3e-4f6a-8d2c-7e4b1f0a9c01"\n'
        'value = "01"\n'
        "streams = []\n"
        'burden = "spot-check"\n'
    )
    (profiles / "spo2.toml").write_text(spo2.replace('method = "wait"\n', spot_check, 1))
    kinds = ["spo2", "bp"]
    async with running_gateway(
        tmp_path / "data", kinds, overrides=NO_PERIODIC_BP, ble={"profiles_dir": str(profiles)}
    ) as run:
        await all_streaming(run, kinds)
        assert run.manager.profiles["spo2"].measure.burden is Burden.SPOT_CHECK
        bp_spy = TriggerSpy(session_of(run, "bp"))
        spo2_spy = TriggerSpy(session_of(run, "spo2"))
        observation = await run.manager.measure(HR, timeout=20)
        assert HR in observation_codes(observation)
        assert spo2_spy.answers == [True]
        assert run.sim.sensors["spo2"].stats.on_demand == 1
        assert bp_spy.answers == []
        assert run.sim.sensors["bp"].stats.on_demand == 0
        # Not allowed to start a spot-check either: nothing is started, the request says why.
        with pytest.raises(MeasurementNotAllowedError) as info:
            await run.manager.measure(HR, timeout=20, max_burden=Burden.NONE)
        assert info.value.failure is MeasureFailure.NOT_ALLOWED
        assert spo2_spy.answers == [True]


async def test_a_busy_cuff_gives_the_running_cycle_s_result(tmp_path: Path) -> None:
    # A cycle long enough that the request surely arrives while it runs.
    overrides = NO_PERIODIC_BP | {"bp.cycle_s": 4}
    async with running_gateway(tmp_path, ["bp"], overrides=overrides) as run:
        await all_streaming(run, ["bp"])
        bp = run.sim.sensors["bp"]
        spy = TriggerSpy(session_of(run, "bp"))
        bp.start_on_demand()  # someone pressed the cuff's button: a cycle is running
        observation = await run.manager.measure(BP_PANEL, timeout=30)
        assert BP_PANEL in observation_codes(observation)
        assert spy.answers == [False]  # ATT 0xFE: procedure already in progress
        assert bp.stats.measurements == 1  # the running cycle's result, no second cycle
        assert bp.stats.on_demand == 0  # the gateway's trigger was refused, not obeyed


async def test_concurrent_requests_share_one_cuff_cycle(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, ["bp"], overrides=NO_PERIODIC_BP) as run:
        await all_streaming(run, ["bp"])
        bp = run.sim.sensors["bp"]
        spy = TriggerSpy(session_of(run, "bp"))
        results = await asyncio.gather(
            run.manager.measure(BP_PANEL, timeout=30),
            run.manager.measure(BP_PANEL, timeout=30),
            run.manager.measure(PULSE_BP, timeout=30),  # the cuff's pulse rate, same cycle
        )
        assert spy.answers == [True]  # one trigger write
        assert (bp.stats.on_demand, bp.stats.measurements) == (1, 1)  # one cycle
        assert results[0] == results[1]
        assert PULSE_BP in observation_codes(results[2])


async def test_a_cuff_inflation_not_allowed_is_not_started(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, ["bp"], overrides=NO_PERIODIC_BP) as run:
        await all_streaming(run, ["bp"])
        spy = TriggerSpy(session_of(run, "bp"))
        with pytest.raises(MeasurementNotAllowedError) as info:
            await run.manager.measure(BP_PANEL, timeout=30, max_burden=Burden.SPOT_CHECK)
        assert info.value.failure is MeasureFailure.NOT_ALLOWED
        assert "cuff-inflation" in str(info.value)
        assert spy.answers == []
        assert run.sim.sensors["bp"].stats.on_demand == 0
        # A cycle already running (started at the cuff) may be joined: it burdens no further.
        started = asyncio.create_task(run.manager.measure(BP_PANEL, timeout=30))
        await spy.writing.wait()
        joined = await run.manager.measure(BP_PANEL, timeout=30, max_burden=Burden.NONE)
        assert joined == await started
        assert spy.answers == [True]


async def test_unknown_codes_and_silent_sensors_fail_with_their_code(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, ["ecg"]) as run:
        await all_streaming(run, ["ecg"])
        with pytest.raises(SensorUnavailableError) as unknown:
            await run.manager.measure("8310-5", timeout=1)
        assert unknown.value.failure is MeasureFailure.NO_SENSOR
        await run.sim.sensors["ecg"].stop()
        with pytest.raises(SensorError) as gone:
            await run.manager.measure(HR, timeout=2)
        assert gone.value.failure in {MeasureFailure.TIMEOUT, MeasureFailure.NOT_CONNECTED}
        await wait_until(lambda: run.states() != {"ecg": STREAMING}, 20, "the loss noticed")
        with pytest.raises(SensorNotConnectedError) as lost:
            await run.manager.measure(HR, timeout=2)
        assert lost.value.failure is MeasureFailure.NOT_CONNECTED


async def test_a_stored_record_never_answers_a_request(tmp_path: Path) -> None:
    """Records the cuff had stored (downloaded on a reconnect) are old readings: a request
    waits for the cycle it started."""
    async with running_gateway(tmp_path, ["bp"], overrides=NO_PERIODIC_BP) as run:
        await all_streaming(run, ["bp"])
        session = session_of(run, "bp")
        asked, release = asyncio.Event(), asyncio.Event()
        inner: Callable[[str, bytes], Awaitable[bool]] = session.start_measurement

        async def held(uuid: str, value: bytes) -> bool:
            asked.set()
            await release.wait()
            return await inner(uuid, value)

        session.start_measurement = held  # type: ignore[method-assign]
        request = asyncio.create_task(run.manager.measure(BP_PANEL, timeout=30))
        await asked.wait()  # the request waits: now an old record arrives
        old = {"resourceType": "Observation", "id": "stored-yesterday"}
        address = run.status("bp").address
        run.manager.observation_ingested(
            ObservationEvent(address, frozenset({BP_PANEL}), old, stored=True)
        )
        release.set()
        result = await request
        assert result is not old
        assert BP_PANEL in observation_codes(result)


async def test_a_reading_a_person_takes_is_not_offered_nor_awaited(tmp_path: Path) -> None:
    """A glucose meter measures when someone takes a sample: the assistant is not offered its
    code, and a request fails at once instead of waiting minutes for a reading."""
    async with running_gateway(tmp_path, ["glucose"]) as run:
        await all_streaming(run, ["glucose"])
        assert "2339-0" not in run.manager.can_measure()
        with pytest.raises(MeasurementNotAllowedError, match="only when a person takes it") as info:
            await run.manager.measure("2339-0", timeout=300)
        assert info.value.failure is MeasureFailure.NOT_ALLOWED
