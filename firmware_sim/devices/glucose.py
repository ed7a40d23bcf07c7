"""``glucose``: the glucose meter.

Glucose service (GLS v1.0): a person takes a reading every ``glucose.interval_s``; the meter
stores it with a sequence number (every other one with a Glucose Measurement Context: meal,
tester and health, carbohydrate after a meal) and sends records only when the collector asks over
the Record Access Control Point (GLS §3.4; report, number, delete and abort as the
blood-pressure cuff's, :mod:`firmware_sim.racp`). Records are notified (GLS §3.1), each
measurement followed by its context. A reading taken while a collector is connected ends the link
(as meters that sync on connection do), so the collector reconnects and downloads it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from bumble import gatt
from bumble.transport.common import TransportSink, TransportSource

from firmware_sim import characteristics as ch
from firmware_sim import racp
from firmware_sim.bluetooth import (
    uuid16,
)
from firmware_sim.context import SensorContext
from firmware_sim.devices.common import Loop, Properties, model_rng
from firmware_sim.devices.records import RecordKeeper
from firmware_sim.encoding import sfloat

GLUCOSE_FEATURES: Final = (
    ch.GlucoseFeature.LOW_BATTERY_DETECTION
    | ch.GlucoseFeature.SAMPLE_SIZE
    | ch.GlucoseFeature.RESULT_HIGH_LOW_DETECTION
)
MAX_STORED_RECORDS: Final = 100
PAST_RECORD_SPACING: Final = dt.timedelta(hours=3)
READING_SD_MG_DL: Final = 8.0  # spread of readings around the scenario's level
READING_MIN_MG_DL, READING_MAX_MG_DL = 20, 600  # the meter's "result too low/high" limits
MG_DL_PER_MMOL_L: Final = 18.016  # glucose, 180.16 g/mol
KG_PER_L_EXPONENT: Final = -5  # mg/dL mantissa × 10^-5 = kg/L
MOL_PER_L_EXPONENT: Final = -4  # 0.1 mmol/L mantissa × 10^-4 = mol/L
# Notifications need no confirmation, so nothing else paces a report: the meter takes this long to
# read a record from its memory before sending it (a 100-record report lasts about a second).
RECORD_READ_S: Final = 0.01
CARBOHYDRATE_BREAKFAST: Final = 1  # GLS §3.2.1.4
CARBOHYDRATE_KG: Final = (45, -3)  # 45 g, as an SFLOAT mantissa/exponent in kg


@dataclass(frozen=True, slots=True)
class GlucoseRecord:
    sequence_number: int
    measurement: bytes  # the Glucose Measurement as the meter notifies it
    context: bytes | None  # its Glucose Measurement Context, when the reading has one
    time: dt.datetime  # the user-facing time (the device clock when it was taken)


class GlucoseSensor(RecordKeeper):
    KIND = "glucose"
    LABEL = "Glucose"
    MODEL = "BS-GL500"
    PRODUCT_ID = 0x0105
    APPEARANCE = 0x0400  # Glucose Meter (Assigned Numbers §2.6.3)
    ADVERTISED_SERVICES = (0x1808,)
    RECORDS_INDICATED = False  # GLS: Glucose Measurement is notified

    def __init__(
        self, context: SensorContext, source: TransportSource, sink: TransportSink
    ) -> None:
        self._settings = context.scenario.glucose
        self._rng = model_rng(context, "glucose")
        self.records: list[GlucoseRecord] = []
        self._next_sequence = 0
        super().__init__(context, source, sink)
        self._store_past_records()

    def services(self) -> Sequence[gatt.Service]:
        self.measurement = self.characteristic(ch.GLUCOSE_MEASUREMENT, Properties.NOTIFY)
        self.context = self.characteristic(ch.GLUCOSE_CONTEXT, Properties.NOTIFY)
        feature = self.characteristic(
            ch.GLUCOSE_FEATURE, Properties.READ, ch.glucose_feature(GLUCOSE_FEATURES)
        )
        self.racp = self.characteristic(
            racp.RACP, Properties.WRITE | Properties.INDICATE, write=self._on_racp_write
        )
        return [gatt.Service(uuid16(0x1808), [self.measurement, self.context, feature, self.racp])]

    def loops(self) -> Sequence[Loop]:
        return [self._reading_loop]

    # -- readings --------------------------------------------------------------------------------
    def _level(self) -> int:
        value = self._rng.gauss(self._settings.mg_dl, READING_SD_MG_DL)
        return max(READING_MIN_MG_DL, min(READING_MAX_MG_DL, round(value)))

    def _concentration(self, mg_dl: int) -> int:
        """The SFLOAT word the meter sends: kg/L, or mol/L to 0.1 mmol/L."""
        if self._settings.mmol_per_l:
            return sfloat(round(mg_dl * 10 / MG_DL_PER_MMOL_L), MOL_PER_L_EXPONENT)
        return sfloat(mg_dl, KG_PER_L_EXPONENT)

    def _take_reading(self, when: dt.datetime) -> GlucoseRecord:
        number = self._next_sequence
        with_context = number % 2 == 1
        measurement = ch.glucose_measurement(
            number,
            when,
            concentration=self._concentration(self._level()),
            mol_per_l=self._settings.mmol_per_l,
            sensor_status=0,
            context_follows=with_context,
        )
        context = None
        if with_context:
            after_meal = number % 4 == 3
            context = ch.glucose_context(
                number,
                carbohydrate=(CARBOHYDRATE_BREAKFAST, sfloat(*CARBOHYDRATE_KG))
                if after_meal
                else None,
                meal=ch.GLUCOSE_MEAL_POSTPRANDIAL if after_meal else ch.GLUCOSE_MEAL_PREPRANDIAL,
                tester_health=(ch.GLUCOSE_TESTER_SELF, ch.GLUCOSE_HEALTH_NO_ISSUES),
            )
        record = GlucoseRecord(number, measurement, context, when.replace(microsecond=0))
        self.records.append(record)
        del self.records[:-MAX_STORED_RECORDS]
        self._next_sequence = (number + 1) % (racp.SEQUENCE_NUMBER_MAX + 1)
        return record

    def _store_past_records(self) -> None:
        """Readings taken before the simulator started, on the clock the meter had then."""
        now = self.clock.now()
        for i in range(self._settings.stored_records, 0, -1):
            self._take_reading(now - i * PAST_RECORD_SPACING)

    async def _reading_loop(self) -> None:
        interval = self._settings.interval_s
        if interval is None:
            await asyncio.Event().wait()  # no readings during the run
            return
        await self.periodic(interval, self._new_reading)

    async def _new_reading(self) -> None:
        self._take_reading(self.clock.now())
        self.stats.measurements += 1
        if self.connected and not self._racp_busy:
            await self.disconnect()  # the collector reconnects and asks for the new record

    # -- Record Access Control Point ---------------------------------------------------------------
    async def send_record(self, record: GlucoseRecord) -> bool:
        await asyncio.sleep(RECORD_READ_S)  # reading the record from flash
        if self._racp_abort:
            return True  # not sent: the procedure ends with the abort
        if not await self.notify(self.measurement, record.measurement):
            return False  # link lost or notifications turned off: the procedure ends
        if record.context is not None:
            await self.notify(self.context, record.context)
        return True
