"""The simulated sensor clock: unset until written, drifting like a crystal, lost on a battery
change."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from firmware_sim import characteristics as ch
from firmware_sim.clock import UNSET_EPOCH, DeviceClock
from tests.sim_central import FAST, TIMEOUT_S, running

DAY_S = 86_400.0


class Monotonic:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_unset_until_written_then_follows_the_written_time() -> None:
    tick = Monotonic()
    clock = DeviceClock(tick, dt.timedelta(hours=3))
    assert (clock.now(), clock.is_set) == (UNSET_EPOCH + dt.timedelta(hours=3), False)
    written = dt.datetime(2026, 12, 2, 9, 0)  # noqa: DTZ001 - device local time
    clock.set(written, adjust_reason=1)
    tick.now += 60
    assert (clock.now(), clock.is_set, clock.adjust_reason) == (
        written + dt.timedelta(seconds=60),
        True,
        1,
    )


@pytest.mark.parametrize(("ppm", "gained_s"), [(20.0, 1.728), (-50.0, -4.32), (0.0, 0.0)])
def test_a_set_clock_drifts_by_its_ppm(ppm: float, gained_s: float) -> None:
    tick = Monotonic()
    clock = DeviceClock(tick, dt.timedelta(0), drift_ppm=ppm)
    written = dt.datetime(2026, 12, 2, 9, 0)  # noqa: DTZ001 - device local time
    clock.set(written, adjust_reason=1)
    tick.now += DAY_S
    drift = clock.now() - (written + dt.timedelta(seconds=DAY_S))
    assert drift.total_seconds() == pytest.approx(gained_s, abs=1e-6)


def test_a_battery_change_loses_the_time() -> None:
    tick = Monotonic()
    clock = DeviceClock(tick, dt.timedelta(hours=3))
    clock.set(dt.datetime(2026, 12, 2, 9, 0), adjust_reason=1)  # noqa: DTZ001
    tick.now += 10
    clock.power_cycle()
    assert (clock.now(), clock.is_set, clock.power_cycles) == (UNSET_EPOCH, False, 1)
    tick.now += 5
    assert clock.now() == UNSET_EPOCH + dt.timedelta(seconds=5)


def test_absurd_drift_is_refused() -> None:
    with pytest.raises(ValueError, match="drift_ppm 20000 outside"):
        DeviceClock(Monotonic(), dt.timedelta(0), drift_ppm=20_000)


async def test_a_battery_change_over_the_air_drops_the_link_and_the_time() -> None:
    """Over the real Bumble stack: the thermometer's clock, set by a central, reads the unset
    epoch again after a battery change, which also ended the link."""
    overrides = dict(FAST) | {"faults.battery_change_every_s": 1.0, "clock_drift_ppm": 20.0}
    async with running(("thermo",), overrides=overrides) as (sim, central):
        sensor = sim.sensors["thermo"]
        await central.scan({sensor.address})
        link = await central.connect(sensor.address)
        written = dt.datetime(2026, 12, 2, 9, 0)  # noqa: DTZ001 - device local time
        await link.write(ch.CURRENT_TIME, ch.current_time(written, ch.ADJUST_REASON_MANUAL))
        set_time, _ = ch.parse_current_time(await link.read(ch.CURRENT_TIME))
        assert set_time >= written
        async with asyncio.timeout(TIMEOUT_S):
            await link.disconnected.wait()  # the battery came out
        assert sensor.stats.battery_changes >= 1
        await central.scan({sensor.address})
        link = await central.connect(sensor.address)
        lost_time, _ = ch.parse_current_time(await link.read(ch.CURRENT_TIME))
        assert UNSET_EPOCH <= lost_time < UNSET_EPOCH + dt.timedelta(seconds=TIMEOUT_S)
        assert not sensor.clock.is_set
