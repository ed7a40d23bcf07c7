"""The sensor's real-time clock, as a Zephyr sensor without a battery-backed RTC keeps it.

Until a client writes the Current Time, the clock runs from an unset epoch: 2000-01-01 00:00:00
plus the time since power-on (plus ``boot_offset``, so that records taken "before" the simulator
started have plausible timestamps on the same timeline). After a write, time follows the written
value. The clock keeps local time without a zone, as the Current Time Service does.

Like a real crystal it drifts: ``drift_ppm`` parts per million fast (positive) or slow (negative),
so a clock set once walks away from true time (±20 ppm is about ±1.7 s a day). A battery change
(:meth:`DeviceClock.power_cycle`) loses the time: the clock starts again from the unset epoch, and
what it stamps from then on is on a new timeline a gateway cannot map until it sets the clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Final

UNSET_EPOCH: Final = dt.datetime(2000, 1, 1)  # noqa: DTZ001 - device local time, no zone
ETS_EPOCH: Final = UNSET_EPOCH  # Elapsed Time counts from 2000-01-01 00:00:00 (GSS §3.82)
MAX_DRIFT_PPM: Final = 1000.0  # far beyond any crystal; catches a percentage given as ppm


class DeviceClock:
    """Local device time driven by a monotonic seconds source (the event loop's clock)."""

    def __init__(
        self,
        monotonic: Callable[[], float],
        boot_offset: dt.timedelta,
        power_on: float | None = None,
        *,
        drift_ppm: float = 0.0,
    ) -> None:
        """``power_on``: the monotonic instant the clock reads ``UNSET_EPOCH + boot_offset``."""
        if not -MAX_DRIFT_PPM <= drift_ppm <= MAX_DRIFT_PPM:
            raise ValueError(f"drift_ppm {drift_ppm} outside ±{MAX_DRIFT_PPM:g}")
        self._monotonic = monotonic
        self._rate = 1.0 + drift_ppm / 1e6
        self._anchor_device = UNSET_EPOCH + boot_offset
        self._anchor_monotonic = monotonic() if power_on is None else power_on
        self.is_set = False
        self.adjust_reason = 0
        self.power_cycles = 0

    def now(self) -> dt.datetime:
        return self.at(self._monotonic())

    def at(self, monotonic: float) -> dt.datetime:
        """Device time at a monotonic instant (e.g. the first sample of a waveform)."""
        elapsed = (monotonic - self._anchor_monotonic) * self._rate
        return self._anchor_device + dt.timedelta(seconds=elapsed)

    def set(self, when: dt.datetime, adjust_reason: int) -> None:
        self._anchor_device = when
        self._anchor_monotonic = self._monotonic()
        self.is_set = True
        self.adjust_reason = adjust_reason

    def power_cycle(self) -> None:
        """The battery was changed: the time is lost, the clock restarts at the unset epoch."""
        self._anchor_device = UNSET_EPOCH
        self._anchor_monotonic = self._monotonic()
        self.is_set = False
        self.adjust_reason = 0
        self.power_cycles += 1

    @staticmethod
    def milliseconds_since_epoch(when: dt.datetime) -> int:
        return (when - ETS_EPOCH) // dt.timedelta(milliseconds=1)
