"""The four sensor kinds: ECG patch, pulse oximeter, blood-pressure cuff, thermometer.

Each adds its services to the shared ``Sensor`` and runs its measurement loops:

* ``ecg`` — Heart Rate (HR + RR intervals every ``ecg.interval_s``, body sensor location chest,
  control point) and Generic Health Sensor live observations: after the GHS Control Point is
  written 0x01, one lead II sample-array observation per interval (1 s of 250 Hz 16-bit samples
  by default), segmented to the negotiated ATT MTU. HR and RR come from the waveform's beats.
* ``spo2`` — Pulse Oximeter: continuous measurement every ``spo2.interval_s``, spot-check on demand
  (and every ``spo2.spot_check_interval_s`` when set), features; optionally a GHS pleth waveform.
* ``bp`` — Blood Pressure: measurement indications after a cuff cycle (every ``bp.interval_s`` and
  on demand) with intermediate cuff pressure notifications during the cycle, feature, stored
  records with sequence numbers and the Record Access Control Point.
* ``thermo`` — Health Thermometer: measurement indications every ``thermo.interval_s``,
  intermediate temperature notifications, temperature type, measurement interval.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final

from bumble import gatt
from bumble.att import ATT_Error
from bumble.device import Connection
from bumble.transport.common import TransportSink, TransportSource

from firmware_sim import characteristics as ch
from firmware_sim import ghs, racp
from firmware_sim.clock import DeviceClock
from firmware_sim.encoding import (
    FLOAT_NAN,
    FLOAT_NRES,
    SFLOAT_NAN,
    SFLOAT_NRES,
    float32,
    float32_of,
    sfloat,
    sfloat_of,
)
from firmware_sim.sensor import (
    ATT_CCCD_IMPROPERLY_CONFIGURED,
    ATT_INVALID_ATTRIBUTE_LENGTH,
    ATT_PROCEDURE_ALREADY_IN_PROGRESS,
    Corruption,
    Sensor,
    SensorContext,
    uuid16,
)
from firmware_sim.signals import (
    BloodPressure,
    BloodPressureModel,
    EcgModel,
    PpgModel,
    TemperatureModel,
    heart_rate_report,
)

Properties = gatt.Characteristic.Properties
Loop = Callable[[], Coroutine[Any, Any, None]]

RR_UNITS_PER_SECOND: Final = 1024  # HRS §3.1.1.5
ECG_SCALE_FACTOR: Final = float32(5, -3)  # 0.005 mV per LSB
ECG_SCALE_MV: Final = 0.005
ECG_MID_SCALE: Final = 0x8000  # unsigned 16-bit samples: 32768 is 0 mV
ECG_OFFSET: Final = float32(-16384, -2)  # -163.84 mV = -32768 × 0.005 mV
U16_MAX: Final = 0xFFFF
PLETH_SCALE: Final = float32(1, 0)
PLETH_OFFSET: Final = float32(0, 0)
PAI_EXPONENT: Final = -1
TEMPERATURE_EXPONENT: Final = -2
HR_PACKET_OVERHEAD: Final = 3 + 3  # ATT header + flags + u16 heart rate (worst case)


def _u16(value: float) -> int:
    return max(0, min(U16_MAX, round(value)))


class GhsLive:
    """A GHS service with live observations of one sample-array type (ECG lead II, pleth)."""

    def __init__(self, sensor: Sensor, observation_types: Sequence[int]) -> None:
        self._sensor = sensor
        self.live = False
        self._counter = 0
        self.features = sensor.characteristic(
            ghs.HEALTH_SENSOR_FEATURES,
            Properties.READ | Properties.INDICATE,
            ghs.health_sensor_features(observation_types),
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

    async def send(self, observation_type: int, timestamp: bytes, value: ghs.SampleArray) -> None:
        sensor = self._sensor
        if not self.live or not sensor.subscribed_any(self.observations):
            return
        observation = ghs.sample_array_observation(observation_type, timestamp, value)
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


# -- ECG -------------------------------------------------------------------------------------------
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
        self._ecg = EcgModel(_rng(context, "ecg"), context.timeline.at, settings.sample_rate_hz)
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
        self.ghs = GhsLive(self, [ghs.MDC_ECG_ELEC_POTL_II])
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
            match corruption:
                case Corruption.TRUNCATED:
                    return clean[:-1], corruption
                case Corruption.WRONG_FLAGS:  # RR intervals announced, none sent
                    return ch.heart_rate_measurement(
                        heart_rate, (), announce_missing=ch.HeartRateFlag.RR_INTERVALS
                    ), corruption
                case _:  # a uint heart rate has no NaN/NRes
                    return clean, Corruption.NONE

        if heart_rate:  # nothing to report before the first beat was detected
            await self.send_measurement(self.heart_rate, build, indicate=False)
        when = self.clock.at(self._start_time_of(start))
        await self.ghs.send(
            ghs.MDC_ECG_ELEC_POTL_II,
            ghs_timestamp(self.clock, when),
            ghs.SampleArray(
                unit=ghs.MDC_DIM_MILLI_VOLT,
                scale_factor=ECG_SCALE_FACTOR,
                offset=ECG_OFFSET,
                scale_period=ghs.period_word(self._settings.sample_rate_hz),
                samples=[_u16(mv / ECG_SCALE_MV + ECG_MID_SCALE) for mv in samples],
            ),
        )

    def _start_time_of(self, sim_time: float) -> float:
        return self._start_time + sim_time


# -- Pulse oximeter --------------------------------------------------------------------------------
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
        self._ppg = PpgModel(_rng(context, "ppg"), context.timeline.at, settings.pleth_rate_hz)
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
        self.ghs = GhsLive(self, [ghs.MDC_PULS_OXIM_PLETH])
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
            match corruption:
                case Corruption.TRUNCATED:
                    return clean[:-1], corruption
                case Corruption.WRONG_FLAGS:  # fast SpO2/PR announced, not sent
                    return ch.plx_continuous(
                        sfloat(spo2),
                        sfloat(pulse),
                        pulse_amplitude_index=pai_word,
                        announce_missing=ch.ContinuousFlag.FAST,
                    ), corruption
                case Corruption.NAN:
                    return ch.plx_continuous(
                        SFLOAT_NAN, sfloat(pulse), pulse_amplitude_index=pai_word
                    ), corruption
                case Corruption.NRES:
                    return ch.plx_continuous(
                        sfloat(spo2), SFLOAT_NRES, pulse_amplitude_index=pai_word
                    ), corruption
                case _:
                    return clean, corruption

        await self.send_measurement(self.continuous, build, indicate=False)
        if self._settings.pleth:
            when = self.clock.at(self._start_time + start)
            await self.ghs.send(
                ghs.MDC_PULS_OXIM_PLETH,
                ghs_timestamp(self.clock, when),
                ghs.SampleArray(
                    unit=ghs.MDC_DIM_DIMLESS,
                    scale_factor=PLETH_SCALE,
                    offset=PLETH_OFFSET,
                    scale_period=ghs.period_word(self._settings.pleth_rate_hz),
                    samples=[_u16(v) for v in pleth],
                ),
            )

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


# -- Blood pressure --------------------------------------------------------------------------------
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


class BpSensor(Sensor):
    KIND = "bp"
    LABEL = "BP"
    MODEL = "BS-BP300"
    PRODUCT_ID = 0x0103
    APPEARANCE = 0x0381  # Blood Pressure: arm (Assigned Numbers §2.6.3)
    ADVERTISED_SERVICES = (0x1810,)

    def __init__(
        self, context: SensorContext, source: TransportSource, sink: TransportSink
    ) -> None:
        self._settings = context.scenario.bp
        self._bp = BloodPressureModel(_rng(context, "bp"), context.timeline.at)
        self.records: list[StoredRecord] = []
        self._next_sequence = 0  # BLS v1.1 Blood Pressure Record: starts at 0, wraps at 65536
        self._demand = asyncio.Event()
        self._cycle_running = False
        self._racp_busy = False  # from the request until its response is sent
        self._racp_abort = False
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
        match corruption:
            case Corruption.TRUNCATED:
                return ch.blood_pressure_measurement(*values, **common)[:-1], corruption
            case Corruption.NAN:
                return ch.blood_pressure_measurement(
                    SFLOAT_NAN, SFLOAT_NAN, SFLOAT_NAN, **common
                ), corruption
            case Corruption.NRES:
                return ch.blood_pressure_measurement(SFLOAT_NRES, *values[1:], **common), corruption
            case Corruption.WRONG_FLAGS:  # pulse rate announced, not sent
                return ch.blood_pressure_measurement(
                    *values, **common, announce_missing=ch.BloodPressureFlag.PULSE_RATE
                ), corruption
            case _:
                return ch.blood_pressure_measurement(*values, **common), corruption

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
    def _on_racp_write(self, _connection: Connection, value: bytes) -> None:
        self.stats.racp_requests += 1
        if not self.subscribed(self.racp, indicate=True):
            raise ATT_Error(ATT_CCCD_IMPROPERLY_CONFIGURED)
        running = self._racp_busy
        try:
            request = racp.parse_request(value)
        except racp.RequestError as exc:
            if running:
                raise ATT_Error(ATT_PROCEDURE_ALREADY_IN_PROGRESS) from exc
            self._respond(racp.response_code(exc.op_code, exc.code))
            return
        if request.op_code is racp.OpCode.ABORT_OPERATION:
            if running:
                self._racp_abort = True
            else:
                self._respond(
                    racp.response_code(racp.OpCode.ABORT_OPERATION, racp.ResponseCode.SUCCESS)
                )
            return
        if running:
            raise ATT_Error(ATT_PROCEDURE_ALREADY_IN_PROGRESS)
        if request.op_code is racp.OpCode.REPORT_STORED_RECORDS and not self.subscribed(
            self.measurement, indicate=True
        ):
            raise ATT_Error(ATT_CCCD_IMPROPERLY_CONFIGURED)
        self._racp_abort = False
        self._racp_busy = True
        self.spawn(self._racp_procedure(request), "RACP procedure")

    def _respond(self, value: bytes) -> None:
        self.spawn(self.indicate(self.racp, value), "RACP response")

    async def _racp_procedure(self, request: racp.Request) -> None:
        try:
            response = await self._racp_run(request)
        finally:
            self._racp_busy = False  # a client may write its next request once it has this
        if response is not None:
            await self.indicate(self.racp, response)

    async def _racp_run(self, request: racp.Request) -> bytes | None:
        """Carry out a request; returns the response to indicate (None: the link was lost)."""
        selected = racp.select(
            [r.sequence_number for r in self.records], request, [r.time for r in self.records]
        )
        op = request.op_code
        if op is racp.OpCode.REPORT_NUMBER_OF_RECORDS:
            return racp.number_of_records_response(len(selected))
        if not selected:
            return racp.response_code(op, racp.ResponseCode.NO_RECORDS_FOUND)
        if op is racp.OpCode.DELETE_STORED_RECORDS:
            chosen = set(selected)
            self.records = [r for r in self.records if r.sequence_number not in chosen]
            return racp.response_code(op, racp.ResponseCode.SUCCESS)
        by_number = {r.sequence_number: r for r in self.records}
        for number in selected:
            if self._racp_abort:
                break
            record = by_number.get(number)
            if record is not None and not await self.indicate(self.measurement, record.value):
                return None  # link lost: the procedure ends with it
        if self._racp_abort:
            return racp.response_code(racp.OpCode.ABORT_OPERATION, racp.ResponseCode.SUCCESS)
        return racp.response_code(op, racp.ResponseCode.SUCCESS)


# -- Thermometer -----------------------------------------------------------------------------------
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
        self._temperature = TemperatureModel(_rng(context, "temp"), context.timeline.at)
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
            match corruption:
                case Corruption.TRUNCATED:
                    return ch.temperature_measurement(word, timestamp=when)[:-1], corruption
                case Corruption.WRONG_FLAGS:  # temperature type announced, not sent
                    return ch.temperature_measurement(
                        word, timestamp=when, announce_missing=ch.TemperatureFlag.TEMPERATURE_TYPE
                    ), corruption
                case Corruption.NAN:
                    return ch.temperature_measurement(FLOAT_NAN, timestamp=when), corruption
                case Corruption.NRES:
                    return ch.temperature_measurement(FLOAT_NRES, timestamp=when), corruption
                case _:
                    return ch.temperature_measurement(word, timestamp=when), corruption

        await self.send_measurement(self.measurement, build, indicate=True)


KINDS: Final[dict[str, type[Sensor]]] = {
    cls.KIND: cls for cls in (EcgSensor, Spo2Sensor, BpSensor, ThermoSensor)
}


def _rng(context: SensorContext, model: str) -> random.Random:
    """Each signal model gets its own stream, so adding a draw in one model changes no other."""
    return random.Random(f"{context.seed}:{model}:{context.index}")  # noqa: S311
