"""``thermo``: the thermometer.

Health Thermometer: measurement indications every ``thermo.interval_s``, intermediate temperature
notifications, temperature type, measurement interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from bumble import gatt
from bumble.transport.common import TransportSink, TransportSource

from firmware_sim import characteristics as ch
from firmware_sim.bluetooth import uuid16
from firmware_sim.context import SensorContext
from firmware_sim.devices.common import Loop, Properties, model_rng
from firmware_sim.encoding import FLOAT_NAN, FLOAT_NRES, float32_of
from firmware_sim.faults import Corruption, corrupt
from firmware_sim.sensor import Sensor
from firmware_sim.signals import TemperatureModel

TEMPERATURE_EXPONENT: Final = -2


class ThermoSensor(Sensor):
    KIND = "thermo"
    LABEL = "Thermo"
    MODEL = "BS-TH400"
    PRODUCT_ID = 0x0104
    APPEARANCE = 0x0301  # Thermometer: ear (Assigned Numbers §2.6.3)
    ADVERTISED_SERVICES = (0x1809,)

    def __init__(
        self, context: SensorContext, source: TransportSource, sink: TransportSink
    ) -> None:
        self._settings = context.scenario.thermo
        self._temperature = TemperatureModel(model_rng(context, "temp"), context.timeline.at)
        self._last_packet: bytes | None = None
        super().__init__(context, source, sink)

    def services(self) -> Sequence[gatt.Service]:
        self.measurement = self.characteristic(ch.TEMPERATURE_MEASUREMENT, Properties.INDICATE)
        self.intermediate = self.characteristic(ch.INTERMEDIATE_TEMPERATURE, Properties.NOTIFY)
        kind = self.characteristic(
            ch.TEMPERATURE_TYPE, Properties.READ, bytes([ch.TEMPERATURE_TYPE_ARMPIT])
        )
        interval = self.characteristic(
            ch.MEASUREMENT_INTERVAL,
            Properties.READ,
            ch.measurement_interval(max(1, round(self._settings.interval_s))),
        )
        return [
            gatt.Service(uuid16(0x1809), [self.measurement, kind, self.intermediate, interval]),
            self.vendor_service(),
        ]

    def loops(self) -> Sequence[Loop]:
        return [self._final_loop, self._intermediate_loop]

    def burst_packet(self) -> tuple[gatt.Characteristic[bytes], bytes] | None:
        if self._last_packet is None:
            return None
        return self.intermediate, self._last_packet

    def start_on_demand(self) -> None:
        self.spawn(self._final(), "temperature on demand")

    async def _final_loop(self) -> None:
        await self.periodic(self._settings.interval_s, self._final)

    async def _intermediate_loop(self) -> None:
        await self.periodic(self._settings.intermediate_s, self._intermediate)

    async def _intermediate(self) -> None:
        value = ch.temperature_measurement(
            float32_of(self._temperature.reading(self.sim_time()), TEMPERATURE_EXPONENT)
        )
        self._last_packet = value
        await self.notify(self.intermediate, value)

    async def _final(self) -> None:
        celsius = self._temperature.reading(self.sim_time())
        when = self.clock.now()
        self.stats.measurements += 1
        word = float32_of(celsius, TEMPERATURE_EXPONENT)

        def build(corruption: Corruption) -> tuple[bytes, Corruption]:
            return corrupt(
                corruption,
                ch.temperature_measurement(word, timestamp=when),
                {
                    Corruption.WRONG_FLAGS: lambda: ch.temperature_measurement(
                        word, timestamp=when, announce_missing=ch.TemperatureFlag.TEMPERATURE_TYPE
                    ),  # temperature type announced, not sent
                    Corruption.NAN: lambda: ch.temperature_measurement(FLOAT_NAN, timestamp=when),
                    Corruption.NRES: lambda: ch.temperature_measurement(FLOAT_NRES, timestamp=when),
                },
            )

        await self.send_measurement(self.measurement, build, indicate=True)
