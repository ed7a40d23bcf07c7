"""``ecg``: the ECG patch.

Heart Rate (HR + RR intervals every ``ecg.interval_s``, body sensor location chest, control point)
and Generic Health Sensor live observations: after the GHS Control Point is written 0x01, one
lead II sample-array observation per interval (1 s of 250 Hz 16-bit samples by default),
segmented to the negotiated ATT MTU. HR and RR come from the waveform's beats.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from bumble import gatt
from bumble.att import ATT_Error
from bumble.device import Connection
from bumble.transport.common import TransportSink, TransportSource

from firmware_sim import characteristics as ch
from firmware_sim import ghs
from firmware_sim.bluetooth import uuid16
from firmware_sim.context import SensorContext
from firmware_sim.devices.common import (
    GhsLive,
    Loop,
    Properties,
    Waveform,
    clamp_u16,
    model_rng,
)
from firmware_sim.encoding import float32
from firmware_sim.faults import Corruption, corrupt
from firmware_sim.sensor import Sensor
from firmware_sim.signals import EcgModel, heart_rate_report

RR_UNITS_PER_SECOND: Final = 1024  # HRS §3.1.1.5
ECG_SCALE_FACTOR: Final = float32(5, -3)  # 0.005 mV per LSB
ECG_SCALE_MV: Final = 0.005
ECG_MID_SCALE: Final = 0x8000  # unsigned 16-bit samples: 32768 is 0 mV
ECG_OFFSET: Final = float32(-16384, -2)  # -163.84 mV = -32768 × 0.005 mV
HR_PACKET_OVERHEAD: Final = 3 + 3  # ATT header + flags + u16 heart rate (worst case)


class EcgSensor(Sensor):
    KIND = "ecg"
    LABEL = "ECG"
    MODEL = "BS-ECG100"
    PRODUCT_ID = 0x0101
    APPEARANCE = 0x0341  # Heart Rate Sensor: belt (Assigned Numbers §2.6.3)
    ADVERTISED_SERVICES = (0x180D, ghs.GHS_SERVICE)

    def __init__(
        self, context: SensorContext, source: TransportSource, sink: TransportSink
    ) -> None:
        settings = context.scenario.ecg
        self._settings = settings
        self._ecg = EcgModel(
            model_rng(context, "ecg"), context.timeline.at, settings.sample_rate_hz
        )
        self._samples_per_tick = round(settings.sample_rate_hz * settings.interval_s)
        self._last_rr: float | None = None
        self._last_packet: bytes | None = None
        super().__init__(context, source, sink)

    def services(self) -> Sequence[gatt.Service]:
        self.heart_rate = self.characteristic(ch.HR_MEASUREMENT, Properties.NOTIFY)
        location = self.characteristic(
            ch.BODY_SENSOR_LOCATION, Properties.READ, bytes([ch.BODY_SENSOR_LOCATION_CHEST])
        )
        control = self.characteristic(
            ch.HR_CONTROL_POINT, Properties.WRITE, write=self._on_hr_control_point
        )
        self.ghs = GhsLive(
            self,
            Waveform(
                ghs.MDC_ECG_ELEC_POTL_II,
                ghs.MDC_DIM_MILLI_VOLT,
                ECG_SCALE_FACTOR,
                ECG_OFFSET,
                self._settings.sample_rate_hz,
            ),
        )
        return [
            gatt.Service(uuid16(0x180D), [self.heart_rate, location, control]),
            self.ghs.service,
        ]

    def _on_hr_control_point(self, _connection: Connection, _value: bytes) -> None:
        # No energy expended to reset: "Control Point Not Supported" (HRS §3.3.2.1).
        raise ATT_Error(ch.HR_ERROR_CONTROL_POINT_NOT_SUPPORTED)

    def on_disconnected(self) -> None:
        self.ghs.reset()

    def loops(self) -> Sequence[Loop]:
        return [self._ecg_loop]

    def burst_packet(self) -> tuple[gatt.Characteristic[bytes], bytes] | None:
        if self._last_packet is None:
            return None
        return self.heart_rate, self._last_packet

    async def _ecg_loop(self) -> None:
        await self.periodic(self._settings.interval_s, self._tick)

    async def _tick(self) -> None:
        start = self._ecg.next_time
        samples = self._ecg.take(self._samples_per_tick)
        end = self._ecg.next_time
        heart_rate, rrs = heart_rate_report(self._ecg.beats.between(start, end), self._last_rr)
        if rrs:
            self._last_rr = rrs[-1]
        self.stats.measurements += 1
        max_rr = max(0, (self.att_mtu - HR_PACKET_OVERHEAD) // 2)
        rr_1024 = [round(rr * RR_UNITS_PER_SECOND) for rr in rrs][-max_rr:] if max_rr else []

        def build(corruption: Corruption) -> tuple[bytes, Corruption]:
            clean = ch.heart_rate_measurement(heart_rate, rr_1024)
            self._last_packet = clean
            # A uint heart rate has no NaN/NRes: those send the clean packet.
            return corrupt(
                corruption,
                clean,
                {
                    Corruption.WRONG_FLAGS: lambda: ch.heart_rate_measurement(
                        heart_rate, (), announce_missing=ch.HeartRateFlag.RR_INTERVALS
                    ),  # RR intervals announced, none sent
                },
            )

        if heart_rate:  # nothing to report before the first beat was detected
            await self.send_measurement(self.heart_rate, build, indicate=False)
        when = self.clock.at(self._start_time_of(start))
        await self.ghs.send(when, [clamp_u16(mv / ECG_SCALE_MV + ECG_MID_SCALE) for mv in samples])

    def _start_time_of(self, sim_time: float) -> float:
        return self._start_time + sim_time
