"""``bp``: the blood-pressure cuff.

Blood Pressure: measurement indications after a cuff cycle (every ``bp.interval_s`` and on demand)
with intermediate cuff pressure notifications during the cycle, feature, stored records with
sequence numbers and the Record Access Control Point.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from bumble import gatt
from bumble.att import ATT_Error
from bumble.transport.common import TransportSink, TransportSource

from firmware_sim import characteristics as ch
from firmware_sim import racp
from firmware_sim.bluetooth import (
    ATT_PROCEDURE_ALREADY_IN_PROGRESS,
    uuid16,
)
from firmware_sim.context import SensorContext
from firmware_sim.devices.common import Loop, Properties, model_rng
from firmware_sim.devices.records import RecordKeeper
from firmware_sim.encoding import SFLOAT_NAN, SFLOAT_NRES, sfloat
from firmware_sim.faults import Corruption, corrupt
from firmware_sim.signals import BloodPressure, BloodPressureModel


@dataclass(frozen=True, slots=True)
class StoredRecord:
    sequence_number: int
    value: bytes  # the Blood Pressure Measurement as it was indicated
    time: dt.datetime  # its user-facing time (the device clock when it was taken)


BP_FEATURES: Final = (
    ch.BloodPressureFeature.IRREGULAR_PULSE_DETECTION
    | ch.BloodPressureFeature.PULSE_RATE_RANGE_DETECTION
)
PULSE_RANGE_HIGH: Final = 100  # /min, the cuff's "pulse rate exceeds upper limit"
PULSE_RANGE_LOW: Final = 50
IRREGULAR_HRV: Final = 0.12
MAX_STORED_RECORDS: Final = 100


class BpSensor(RecordKeeper):
    KIND = "bp"
    LABEL = "BP"
    MODEL = "BS-BP300"
    PRODUCT_ID = 0x0103
    APPEARANCE = 0x0381  # Blood Pressure: arm (Assigned Numbers §2.6.3)
    ADVERTISED_SERVICES = (0x1810,)
    RECORDS_INDICATED = True  # BLS: Blood Pressure Measurement is indicated

    def __init__(
        self, context: SensorContext, source: TransportSource, sink: TransportSink
    ) -> None:
        self._settings = context.scenario.bp
        self._bp = BloodPressureModel(model_rng(context, "bp"), context.timeline.at)
        self.records: list[StoredRecord] = []
        self._next_sequence = 0  # BLS v1.1 Blood Pressure Record: starts at 0, wraps at 65536
        self._demand = asyncio.Event()
        self._cycle_running = False
        super().__init__(context, source, sink)
        self._store_past_records()

    def services(self) -> Sequence[gatt.Service]:
        self.measurement = self.characteristic(ch.BP_MEASUREMENT, Properties.INDICATE)
        self.cuff_pressure = self.characteristic(ch.INTERMEDIATE_CUFF_PRESSURE, Properties.NOTIFY)
        feature = self.characteristic(
            ch.BP_FEATURE, Properties.READ, ch.blood_pressure_feature(BP_FEATURES)
        )
        self.racp = self.characteristic(
            racp.RACP, Properties.WRITE | Properties.INDICATE, write=self._on_racp_write
        )
        return [
            gatt.Service(
                uuid16(0x1810), [self.measurement, self.cuff_pressure, feature, self.racp]
            ),
            self.vendor_service(),
        ]

    def loops(self) -> Sequence[Loop]:
        return [self._measurement_loop]

    def start_on_demand(self) -> None:
        if self._cycle_running or self._demand.is_set():
            raise ATT_Error(ATT_PROCEDURE_ALREADY_IN_PROGRESS)
        self._demand.set()

    # -- measurements ----------------------------------------------------------------------------
    def _status(self, pulse: int) -> int:
        status = 0
        if pulse > PULSE_RANGE_HIGH:
            status |= ch.BloodPressureStatus.PULSE_ABOVE_RANGE
        elif pulse < PULSE_RANGE_LOW:
            status |= ch.BloodPressureStatus.PULSE_BELOW_RANGE
        if self.timeline.at(self.sim_time()).hrv > IRREGULAR_HRV:
            status |= ch.BloodPressureStatus.IRREGULAR_PULSE
        return status

    def _encode(
        self, reading: BloodPressure, when: dt.datetime, corruption: Corruption
    ) -> tuple[bytes, Corruption]:
        values = (
            sfloat(reading.systolic),
            sfloat(reading.diastolic),
            sfloat(reading.mean_arterial),
        )
        common: dict[str, Any] = {
            "timestamp": when,
            "pulse_rate": sfloat(reading.pulse),
            "user_id": self._settings.user_id,
            "status": self._status(reading.pulse),
        }
        return corrupt(
            corruption,
            ch.blood_pressure_measurement(*values, **common),
            {
                Corruption.NAN: lambda: ch.blood_pressure_measurement(
                    SFLOAT_NAN, SFLOAT_NAN, SFLOAT_NAN, **common
                ),
                Corruption.NRES: lambda: ch.blood_pressure_measurement(
                    SFLOAT_NRES, *values[1:], **common
                ),
                Corruption.WRONG_FLAGS: lambda: ch.blood_pressure_measurement(
                    *values, **common, announce_missing=ch.BloodPressureFlag.PULSE_RATE
                ),  # pulse rate announced, not sent
            },
        )

    def _store(self, value: bytes, when: dt.datetime) -> None:
        self.records.append(StoredRecord(self._next_sequence, value, when.replace(microsecond=0)))
        self._next_sequence = (self._next_sequence + 1) % (racp.SEQUENCE_NUMBER_MAX + 1)
        del self.records[:-MAX_STORED_RECORDS]

    def _store_past_records(self) -> None:
        """Measurements taken before the simulator started, one hour apart, on the unset clock."""
        count = self._settings.stored_records
        now = self.clock.now()
        for i in range(count, 0, -1):
            when = now - dt.timedelta(hours=i)
            value, _ = self._encode(self._bp.reading(0.0), when, Corruption.NONE)
            self._store(value, when)

    async def _measurement_loop(self) -> None:
        interval = self._settings.interval_s
        next_periodic = None if interval is None else self._loop.time() + interval
        while True:
            timeout = None if next_periodic is None else max(0.0, next_periodic - self._loop.time())
            try:
                async with asyncio.timeout(timeout):
                    await self._demand.wait()
            except TimeoutError:
                if next_periodic is not None and interval is not None:
                    next_periodic = max(next_periodic + interval, self._loop.time())
            await self._cuff_cycle()
            self._demand.clear()

    async def _cuff_cycle(self) -> None:
        self._cycle_running = True
        try:
            settings = self._settings
            start = self._loop.time()
            target = self._bp.reading(self.sim_time())
            updates = max(1, round(settings.cycle_s / settings.cuff_update_s))
            for i in range(updates):
                await asyncio.sleep(
                    max(0.0, start + i * settings.cuff_update_s - self._loop.time())
                )
                pressure = self._bp.cuff_pressure(i / updates, target.systolic)
                await self.notify(
                    self.cuff_pressure,
                    ch.blood_pressure_measurement(sfloat(pressure), SFLOAT_NAN, SFLOAT_NAN),
                )
            await asyncio.sleep(max(0.0, start + settings.cycle_s - self._loop.time()))
            when = self.clock.now()
            clean, _ = self._encode(target, when, Corruption.NONE)
            self._store(clean, when)  # the record keeps the clean value; faults happen on air
            self.stats.measurements += 1
            await self.send_measurement(
                self.measurement,
                lambda corruption: self._encode(target, when, corruption),
                indicate=True,
            )
        finally:
            self._cycle_running = False

    # -- Record Access Control Point ---------------------------------------------------------------
    async def send_record(self, record: StoredRecord) -> bool:
        return await self.indicate(self.measurement, record.value)
