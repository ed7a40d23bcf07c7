"""What the simulator hands every sensor (:class:`SensorContext`) and the counters a sensor keeps
(:class:`SensorStats`), so tests can compare what the gateway saw with what was sent."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from firmware_sim.scenarios import Scenario, Timeline


@dataclass(slots=True)
class SensorStats:
    """Counters kept by the sensor itself, so tests can compare what the gateway saw."""

    connections: int = 0
    disconnects: int = 0  # links the sensor dropped (API or fault)
    remote_disconnects: int = 0  # links the central dropped
    advertising_pauses: int = 0
    measurements: int = 0  # measurements taken (sent or not)
    notifications: int = 0
    indications: int = 0
    truncated: int = 0
    wrong_flags: int = 0
    nan_values: int = 0
    nres_values: int = 0
    bursts: int = 0
    burst_notifications: int = 0
    low_battery: int = 0  # times the level fell below the threshold
    on_demand: int = 0
    racp_requests: int = 0
    ghs_observations: int = 0
    ghs_segments: int = 0
    pairings: int = 0  # pairings completed (a bonded central encrypts without one)
    encrypted_links: int = 0  # links that became encrypted
    clock_writes: int = 0
    battery_changes: int = 0  # the clock lost its time each time

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SensorContext:
    """What the simulator gives every sensor."""

    index: int
    seed: int
    scenario: Scenario
    timeline: Timeline
    address: str
    start_time: float  # loop time at which simulated time 0 began
    bonds_file: Path | None = None  # where the sensor keeps its bonds (None: in memory)
