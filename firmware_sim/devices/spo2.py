"""``spo2``: the pulse oximeter.

Pulse Oximeter service: continuous measurement every ``spo2.interval_s``, spot-check on demand
(and every ``spo2.spot_check_interval_s`` when set), features; optionally a GHS pleth waveform.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from bumble import gatt
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
from firmware_sim.encoding import SFLOAT_NAN, SFLOAT_NRES, float32, sfloat, sfloat_of
from firmware_sim.faults import Corruption, corrupt
from firmware_sim.sensor import Sensor
from firmware_sim.signals import PpgModel

PLETH_SCALE: Final = float32(1, 0)
PLETH_OFFSET: Final = float32(0, 0)
PAI_EXPONENT: Final = -1


class Spo2Sensor(Sensor):
    KIND = "spo2"
    LABEL = "SpO2"
    MODEL = "BS-OX200"
    PRODUCT_ID = 0x0102
    APPEARANCE = 0x0C41  # Pulse Oximeter: fingertip (Assigned Numbers §2.6.3)
    ADVERTISED_SERVICES = (0x1822,)

    def __init__(
        self, context: SensorContext, source: TransportSource, sink: TransportSink
    ) -> None:
        settings = context.scenario.spo2
        self._settings = settings
        self._ppg = PpgModel(model_rng(context, "ppg"), context.timeline.at, settings.pleth_rate_hz)
        self._pleth_per_tick = round(settings.pleth_rate_hz * settings.interval_s)
        self._last_packet: bytes | None = None
        super().__init__(context, source, sink)

    def services(self) -> Sequence[gatt.Service]:
        self.continuous = self.characteristic(ch.PLX_CONTINUOUS, Properties.NOTIFY)
        self.spot_check = self.characteristic(ch.PLX_SPOT_CHECK, Properties.INDICATE)
        features = self.characteristic(
            ch.PLX_FEATURES,
            Properties.READ,
            ch.plx_features(
                ch.PlxFeature.SPOT_CHECK_TIMESTAMP | ch.PlxFeature.PULSE_AMPLITUDE_INDEX
            ),
        )
        services = [
            gatt.Service(uuid16(0x1822), [self.spot_check, self.continuous, features]),
            self.vendor_service(),
        ]
        self.ghs = GhsLive(
            self,
            Waveform(
                ghs.MDC_PULS_OXIM_PLETH,
                ghs.MDC_DIM_DIMLESS,
                PLETH_SCALE,
                PLETH_OFFSET,
                self._settings.pleth_rate_hz,
            ),
        )
        if self._settings.pleth:
            services.append(self.ghs.service)
        return services

    def advertised_services(self) -> tuple[int, ...]:
        if self._settings.pleth:
            return (*self.ADVERTISED_SERVICES, ghs.GHS_SERVICE)
        return self.ADVERTISED_SERVICES

    def on_disconnected(self) -> None:
        self.ghs.reset()

    def loops(self) -> Sequence[Loop]:
        loops: list[Loop] = [self._continuous_loop]
        if self._settings.spot_check_interval_s is not None:
            loops.append(self._spot_check_loop)
        return loops

    def burst_packet(self) -> tuple[gatt.Characteristic[bytes], bytes] | None:
        if self._last_packet is None:
            return None
        return self.continuous, self._last_packet

    def start_on_demand(self) -> None:
        self.spawn(self._spot_check(), "spot-check on demand")

    async def _continuous_loop(self) -> None:
        await self.periodic(self._settings.interval_s, self._tick)

    async def _spot_check_loop(self) -> None:
        interval = self._settings.spot_check_interval_s
        if interval is not None:
            await self.periodic(interval, self._spot_check)

    async def _tick(self) -> None:
        start = self._ppg.next_time
        pleth = self._ppg.take(self._pleth_per_tick)
        spo2, pulse, pai = self._ppg.reading(self.sim_time())
        self.stats.measurements += 1
        pai_word = sfloat_of(pai, PAI_EXPONENT)

        def build(corruption: Corruption) -> tuple[bytes, Corruption]:
            clean = ch.plx_continuous(sfloat(spo2), sfloat(pulse), pulse_amplitude_index=pai_word)
            self._last_packet = clean
            return corrupt(
                corruption,
                clean,
                {
                    Corruption.WRONG_FLAGS: lambda: ch.plx_continuous(
                        sfloat(spo2),
                        sfloat(pulse),
                        pulse_amplitude_index=pai_word,
                        announce_missing=ch.ContinuousFlag.FAST,
                    ),  # fast SpO2/PR announced, not sent
                    Corruption.NAN: lambda: ch.plx_continuous(
                        SFLOAT_NAN, sfloat(pulse), pulse_amplitude_index=pai_word
                    ),
                    Corruption.NRES: lambda: ch.plx_continuous(
                        sfloat(spo2), SFLOAT_NRES, pulse_amplitude_index=pai_word
                    ),
                },
            )

        await self.send_measurement(self.continuous, build, indicate=False)
        if self._settings.pleth:
            when = self.clock.at(self._start_time + start)
            await self.ghs.send(when, [clamp_u16(v) for v in pleth])

    async def _spot_check(self) -> None:
        spo2, pulse, pai = self._ppg.reading(self.sim_time())
        self.stats.measurements += 1
        await self.indicate(
            self.spot_check,
            ch.plx_spot_check(
                sfloat(spo2),
                sfloat(pulse),
                timestamp=self.clock.now(),
                pulse_amplitude_index=sfloat_of(pai, PAI_EXPONENT),
                clock_not_set=not self.clock.is_set,
            ),
        )
