"""What the sensor kinds share: GHS live observations of a waveform, GHS time stamps, and the
helpers their loops use."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final

from bumble import gatt
from bumble.att import ATT_Error
from bumble.device import Connection

from firmware_sim import ghs
from firmware_sim.bluetooth import (
    ATT_CCCD_IMPROPERLY_CONFIGURED,
    ATT_INVALID_ATTRIBUTE_LENGTH,
    uuid16,
)
from firmware_sim.clock import DeviceClock
from firmware_sim.context import SensorContext
from firmware_sim.sensor import Sensor

Properties = gatt.Characteristic.Properties
Loop = Callable[[], Coroutine[Any, Any, None]]

U16_MAX: Final = 0xFFFF


def clamp_u16(value: float) -> int:
    """``value`` rounded into an unsigned 16-bit sample."""
    return max(0, min(U16_MAX, round(value)))


def model_rng(context: SensorContext, model: str) -> random.Random:
    """Each signal model gets its own stream, so adding a draw in one model changes no other."""
    return random.Random(f"{context.seed}:{model}:{context.index}")  # noqa: S311


@dataclass(frozen=True, slots=True)
class Waveform:
    """What every live observation of a waveform says besides its samples (FLOATs as words)."""

    observation_type: int  # MDC code
    unit: int  # MDC dimension
    scale_factor: int
    offset: int
    sample_rate_hz: int


class GhsLive:
    """A GHS service with live observations of one sample-array type (ECG lead II, pleth)."""

    def __init__(self, sensor: Sensor, waveform: Waveform) -> None:
        self._sensor = sensor
        self.waveform = waveform
        self.live = False
        self._counter = 0
        self.features = sensor.characteristic(
            ghs.HEALTH_SENSOR_FEATURES,
            Properties.READ | Properties.INDICATE,
            ghs.health_sensor_features([waveform.observation_type]),
        )
        self.observations = sensor.characteristic(
            ghs.LIVE_HEALTH_OBSERVATIONS, Properties.NOTIFY | Properties.INDICATE
        )
        self.control_point = sensor.characteristic(
            ghs.GHS_CONTROL_POINT, Properties.WRITE | Properties.INDICATE, write=self._on_write
        )
        self.service = gatt.Service(
            uuid16(ghs.GHS_SERVICE), [self.features, self.observations, self.control_point]
        )

    def _on_write(self, _connection: Connection, value: bytes) -> None:
        if len(value) != 1:
            raise ATT_Error(ATT_INVALID_ATTRIBUTE_LENGTH)
        if not self._sensor.subscribed(self.control_point, indicate=True):
            raise ATT_Error(ATT_CCCD_IMPROPERLY_CONFIGURED)
        if value[0] not in (ghs.GHSCP_START_LIVE, ghs.GHSCP_STOP_LIVE):
            raise ATT_Error(ghs.ATT_ERROR_OPCODE_NOT_SUPPORTED)
        self.live = value[0] == ghs.GHSCP_START_LIVE
        self._sensor.spawn(
            self._sensor.indicate(self.control_point, bytes([ghs.GHSCP_SUCCESS])),
            "GHS control point response",
        )

    def reset(self) -> None:
        self.live = False

    async def send(self, when: dt.datetime, samples: Sequence[int]) -> None:
        """One observation of ``samples`` (raw sample values), the first taken at ``when`` (device
        clock), when the central started live observations."""
        sensor = self._sensor
        if not self.live or not sensor.subscribed_any(self.observations):
            return
        if sensor.management.crashing:  # a firmware that "crashes" streams no waveform at all
            return
        waveform = self.waveform
        value = ghs.SampleArray(
            unit=waveform.unit,
            scale_factor=waveform.scale_factor,
            offset=waveform.offset,
            scale_period=ghs.period_word(waveform.sample_rate_hz),
            samples=samples,
        )
        timestamp = ghs_timestamp(sensor.clock, when)
        observation = ghs.sample_array_observation(waveform.observation_type, timestamp, value)
        segments, self._counter = ghs.segment(observation, sensor.att_mtu, self._counter)
        for payload in segments:
            if not await sensor.send_or_notify(self.observations, payload):
                return
            sensor.stats.ghs_segments += 1
        sensor.stats.ghs_observations += 1


def ghs_timestamp(clock: DeviceClock, when: dt.datetime) -> bytes:
    """A GHS timestamp: 1 ms resolution, local time, current timeline, sync source by clock."""
    return ghs.elapsed_time(
        DeviceClock.milliseconds_since_epoch(when),
        sync_source=ghs.TimeSyncSource.MANUAL
        if clock.is_set
        else ghs.TimeSyncSource.NOT_SYNCHRONIZED,
    )
