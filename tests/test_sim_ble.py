"""The simulator over a real BLE stack: a plain Bumble central on ``sim.attach_host()``.

This is exactly what the gateway's BLE layer does: scan, connect, exchange the MTU, discover,
read, write, subscribe and receive notifications and indications. Characteristic layouts are
checked against the SIG specs' fields (docs/standards.md) and, where the gateway already has a
codec, decoded with it (a second, independent implementation).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import struct
from decimal import Decimal
from typing import Any

import pytest
from bumble.att import ATT_Error

from firmware_sim import Simulator, sensor_address
from firmware_sim import characteristics as ch
from firmware_sim.devices import BpSensor
from gateway.ieee11073.hrs import HeartRateMeasurement
from gateway.ieee11073.numbers import Float, SFloat, Special
from tests.sim_central import (
    FAST,
    TIMEOUT_S,
    VENDOR_START,
    Central,
    check_racp_housekeeping,
    date_time,
    next_value,
    running,
    tasks_left,
    uuid,
)


# -- discovery -----------------------------------------------------------------------------------
async def test_scan_finds_every_sensor_advertising_its_services_and_name() -> None:
    async with running() as (sim, central):
        addresses = {sensor.address for sensor in sim.sensors.values()}
        seen = await central.scan(addresses)
    expected_services = {
        "ecg": [0x180D, 0x1840],
        "spo2": [0x1822],
        "bp": [0x1810],
        "thermo": [0x1809],
    }
    for kind, sensor in sim.sensors.items():
        advertisement = seen[sensor.address]
        assert advertisement.is_connectable
        data = advertisement.data
        assert data.get(data.COMPLETE_LOCAL_NAME) == sensor.name
        assert data.get(data.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS) == [
            uuid(u) for u in expected_services[kind]
        ]
        assert sensor.name.startswith(f"Bedside {sensor.LABEL} ")
        assert sensor.name.endswith(sensor.address.replace(":", "")[-4:])
        assert sensor.address == sensor_address(1, kind)
        assert int(sensor.address[:2], 16) >> 6 == 0b11  # random static address


async def test_device_information_battery_and_gap() -> None:
    async with running() as (sim, central):
        for kind, sensor in sim.sensors.items():
            link = await central.connect(sensor.address)
            assert link.connection.att_mtu == 247
            assert (await link.read(0x2A00)).decode() == sensor.name  # GAP device name
            assert await link.read(ch.MANUFACTURER_NAME) == b"Bedside Devices (simulated)"
            assert await link.read(ch.MODEL_NUMBER) == sensor.MODEL.encode()
            serial = await link.read(ch.SERIAL_NUMBER)
            assert serial.decode().startswith(f"{sensor.MODEL}-")
            assert await link.read(ch.FIRMWARE_REVISION) == b"1.4.2 (Zephyr 3.7.0, bedside-sim)"
            assert await link.read(ch.HARDWARE_REVISION) == b"rev C"
            assert await link.read(ch.SOFTWARE_REVISION) == b"bedside-sim 0.1.0"
            octets = bytes.fromhex(sensor.address.replace(":", ""))
            assert await link.read(ch.SYSTEM_ID) == bytes(
                reversed(octets[:3] + b"\xff\xfe" + octets[3:])
            )
            assert (await link.read(ch.PNP_ID))[:3] == b"\x01\xff\xff"
            assert await link.read(ch.BATTERY_LEVEL) == bytes([sensor.battery])
            assert sensor.battery == 95, kind
            await link.connection.disconnect()
            await link.disconnected.wait()


# -- ECG: Heart Rate and GHS live observations ---------------------------------------------------
def parse_sample_array(observation: bytes) -> dict[str, Any]:
    """A reader for the simulator's own layout (see firmware_sim/ghs.py)."""
    class_type, length, flags, mdc = struct.unpack_from("<BHHI", observation, 0)
    stamp = observation[9:18]
    unit, scale, offset, period, per_period, width, count = struct.unpack_from(
        "<HIIIBBI", observation, 18
    )
    samples = struct.unpack_from(f"<{count}H", observation, 38)  # unsigned (firmware_sim/ghs.py)
    assert 38 + 2 * count == len(observation) == length + 3
    return {
        "class": class_type,
        "flags": flags,
        "type": mdc,
        "stamp_flags": stamp[0],
        "time_ms": int.from_bytes(stamp[1:7], "little"),
        "sync": stamp[7],
        "unit": unit,
        "scale": Float.from_raw(scale),
        "offset": Float.from_raw(offset),
        "period": Float.from_raw(period),
        "per_period": per_period,
        "width": width,
        "samples": samples,
        "values": [
            float(Float.from_raw(offset)) + float(Float.from_raw(scale)) * s for s in samples
        ],
    }


async def reassemble(queue: asyncio.Queue[bytes], mtu: int) -> tuple[bytes, int]:
    """One observation from live segments; returns it and the number of segments."""
    first = await next_value(queue)
    assert first[0] & 1, "first segment flag"
    parts = [first]
    while not parts[-1][0] & 2:
        parts.append(await next_value(queue))
    counters = [p[0] >> 2 for p in parts]
    assert counters == [(counters[0] + i) % 64 for i in range(len(parts))]
    assert all(len(p) <= mtu - 3 for p in parts)
    assert all(p[0] & 3 == 0 for p in parts[1:-1])
    return b"".join(p[1:] for p in parts), len(parts)


async def test_ecg_heart_rate_and_one_second_waveforms() -> None:
    overrides = {**FAST, "ecg.interval_s": 1.0}  # the default: 1 s of 250 Hz per observation
    async with running(("ecg",), overrides=overrides) as (sim, central):
        sensor = sim.sensors["ecg"]
        link = await central.connect(sensor.address)
        assert await link.read(ch.BODY_SENSOR_LOCATION) == b"\x01"
        assert await link.read(0x2BF3) == bytes.fromhex("000102010200")  # features: lead II
        heart_rates = await link.subscribe(ch.HR_MEASUREMENT)
        responses = await link.subscribe(0x2BF4, indicate=True)
        segments = await link.subscribe(0x2B8B)
        await link.write(0x2BF4, b"\x01")
        assert await next_value(responses) == b"\x80"
        observations = [await reassemble(segments, 247) for _ in range(2)]
        hr_packets = [await next_value(heart_rates) for _ in range(2)]
        await link.write(0x2BF4, b"\x02")
        assert await next_value(responses) == b"\x80"
    for raw, count in observations:
        assert count == 3  # 538 bytes at MTU 247
        parsed = parse_sample_array(raw)
        assert parsed["class"] == 4
        assert parsed["flags"] == 0x0003
        assert parsed["type"] == 131330  # MDC_ECG_ELEC_POTL_II
        assert parsed["unit"] == 4274  # MDC_DIM_MILLI_VOLT
        assert parsed["scale"] == Float(5, -3)
        assert parsed["offset"] == Float(-16384, -2)  # -163.84 mV: 32768 is 0 mV
        assert parsed["period"] == Float(4, -3)
        assert (parsed["per_period"], parsed["width"], len(parsed["samples"])) == (1, 2, 250)
        assert parsed["stamp_flags"] == 0x28
        assert parsed["sync"] == 7  # the clock was never set
        assert 1.0 < max(parsed["values"]) < 1.5  # an R wave around 1.2 mV
        assert -0.5 < min(parsed["values"]) < 0.0
    first, second = (parse_sample_array(raw) for raw, _ in observations)
    assert second["time_ms"] - first["time_ms"] == 1000
    assert first["time_ms"] >= 4 * 3600 * 1000  # unset clock: 2000-01-01 04:00 + uptime
    for raw in hr_packets:
        decoded = HeartRateMeasurement.from_bytes(raw)
        assert 55 <= decoded.heart_rate <= 95
        assert decoded.rr_intervals


async def test_ecg_rr_intervals_match_the_waveform() -> None:
    async with running(("ecg",)) as (sim, central):
        link = await central.connect(sim.sensors["ecg"].address)
        heart_rates = await link.subscribe(ch.HR_MEASUREMENT)
        responses = await link.subscribe(0x2BF4, indicate=True)
        segments = await link.subscribe(0x2B8B)
        await link.write(0x2BF4, b"\x01")
        await next_value(responses)
        samples: list[float] = []
        rr: list[int] = []
        for _ in range(40):  # 8 s in 0.2 s observations
            samples.extend(parse_sample_array((await reassemble(segments, 247))[0])["values"])
        while not heart_rates.empty():  # each tick's HR packet precedes its waveform
            packet = HeartRateMeasurement.from_bytes(heart_rates.get_nowait())
            rr.extend(packet.rr_intervals or ())
    peaks = [
        i
        for i in range(1, len(samples) - 1)
        if samples[i] > 0.6 and samples[i] >= samples[i - 1] and samples[i] > samples[i + 1]
    ]
    intervals_1024 = [(b - a) * 1024 / 250 for a, b in itertools.pairwise(peaks)]
    assert len(intervals_1024) >= 6

    def matches(shift: int) -> bool:
        sent = rr[shift : shift + len(intervals_1024)]
        return len(sent) == len(intervals_1024) and all(
            abs(measured - value) <= 2 * 1024 / 250
            for measured, value in zip(intervals_1024, sent, strict=True)
        )

    # The HR subscription may start a packet or two before the waveform: find the alignment.
    assert any(matches(shift) for shift in range(4))


async def test_ecg_segments_fit_the_default_mtu() -> None:
    async with running(("ecg",)) as (sim, central):
        link = await central.connect(sim.sensors["ecg"].address, mtu=None)
        assert link.connection.att_mtu == 23
        responses = await link.subscribe(0x2BF4, indicate=True)
        segments = await link.subscribe(0x2B8B)
        await link.write(0x2BF4, b"\x01")
        await next_value(responses)
        raw, count = await reassemble(segments, 23)
    assert count == 8  # 38 + 50 × 2 = 138 bytes in 19-byte pieces
    assert len(parse_sample_array(raw)["samples"]) == 50
    stats = sim.sensors["ecg"].stats
    assert stats.ghs_segments >= count


async def test_ghs_control_point_needs_its_indications() -> None:
    async with running(("ecg",)) as (sim, central):
        link = await central.connect(sim.sensors["ecg"].address)
        with pytest.raises(ATT_Error) as info:
            await link.write(0x2BF4, b"\x01")
        assert info.value.error_code == 0xFD
        await link.subscribe(0x2BF4, indicate=True)
        with pytest.raises(ATT_Error) as info:
            await link.write(0x2BF4, b"\x07")
        assert info.value.error_code == 0x80
        with pytest.raises(ATT_Error) as info:
            await link.write(ch.HR_CONTROL_POINT, b"\x01")
        assert info.value.error_code == 0x80  # no energy expended to reset


# -- Blood pressure: RACP, on-demand cycle -------------------------------------------------------
def parse_bp(raw: bytes) -> dict[str, Any]:
    flags = raw[0]
    out: dict[str, Any] = {"flags": flags}
    out["values"] = [SFloat.from_bytes(raw[i : i + 2]) for i in (1, 3, 5)]
    offset = 7
    if flags & 0x02:
        out["time"] = date_time(raw[offset : offset + 7])
        offset += 7
    if flags & 0x04:
        out["pulse"] = SFloat.from_bytes(raw[offset : offset + 2])
        offset += 2
    if flags & 0x08:
        out["user"] = raw[offset]
        offset += 1
    if flags & 0x10:
        out["status"] = int.from_bytes(raw[offset : offset + 2], "little")
        offset += 2
    assert offset == len(raw)
    return out


async def test_bp_stored_records_through_racp() -> None:
    async with running(("bp",)) as (sim, central):
        link = await central.connect(sim.sensors["bp"].address)
        with pytest.raises(ATT_Error) as info:  # RACP indications not enabled
            await link.write(0x2A52, b"\x04\x01")
        assert info.value.error_code == 0xFD
        racp = await link.subscribe(0x2A52, indicate=True)
        with pytest.raises(ATT_Error) as info:  # records need 2A35 indications
            await link.write(0x2A52, b"\x01\x01")
        assert info.value.error_code == 0xFD
        measurements = await link.subscribe(ch.BP_MEASUREMENT, indicate=True)
        assert await link.read(ch.BP_FEATURE) == b"\x0c\x00"

        await link.write(0x2A52, b"\x04\x01")  # number of records: all
        assert await next_value(racp) == bytes.fromhex("05000300")
        await link.write(0x2A52, bytes.fromhex("0403010100"))  # number with sequence >= 1
        assert await next_value(racp) == bytes.fromhex("05000200")  # records 0, 1, 2

        await link.write(0x2A52, b"\x01\x01")  # report all
        records = [parse_bp(await next_value(measurements)) for _ in range(3)]
        assert await next_value(racp) == bytes.fromhex("06000101")
        assert [r["time"] for r in records] == [
            dt.datetime(2000, 1, 1, h, 0, 0)  # noqa: DTZ001 - unset clock, 1 h apart
            for h in (1, 2, 3)
        ]
        for record in records:
            assert record["flags"] == 0x1E
            sys_, dia, mean = (v.decimal for v in record["values"])
            assert dia is not None
            assert sys_ is not None
            assert 60 < dia < sys_ < 160
            assert mean == round(dia + (sys_ - dia) / 3)
            assert record["user"] == 1

        await link.write(0x2A52, bytes.fromhex("0103010200"))  # report >= 2: the last one
        assert parse_bp(await next_value(measurements)) == records[2]
        assert await next_value(racp) == bytes.fromhex("06000101")

        await link.write(0x2A52, bytes.fromhex("0103010a00"))  # report >= 10: none
        assert await next_value(racp) == bytes.fromhex("06000106")
        await check_racp_housekeeping(link, racp, stored=3)
        assert measurements.empty()
        assert sim.sensors["bp"].stats.racp_requests == 13


async def test_bp_racp_abort_during_a_report() -> None:
    overrides = {**FAST, "bp.stored_records": 60}
    async with running(("bp",), overrides=overrides) as (sim, central):
        link = await central.connect(sim.sensors["bp"].address)
        racp = await link.subscribe(0x2A52, indicate=True)
        measurements = await link.subscribe(ch.BP_MEASUREMENT, indicate=True)
        await link.write(0x2A52, b"\x01\x01")
        await next_value(measurements)
        with pytest.raises(ATT_Error) as info:  # a second procedure while one runs
            await link.write(0x2A52, b"\x04\x01")
        assert info.value.error_code == 0xFE
        await link.write(0x2A52, b"\x03\x00")
        response = await next_value(racp)
        received = 1 + measurements.qsize()
    assert response == bytes.fromhex("06000301")  # abort: success, the report ends without its own
    assert received < 60


async def test_bp_on_demand_cuff_cycle() -> None:
    async with running(("bp",)) as (sim, central):
        sensor = sim.sensors["bp"]
        link = await central.connect(sensor.address)
        cuff = await link.subscribe(ch.INTERMEDIATE_CUFF_PRESSURE)
        measurements = await link.subscribe(ch.BP_MEASUREMENT, indicate=True)
        await link.write(VENDOR_START, b"\x01")
        with pytest.raises(ATT_Error) as info:
            await link.write(VENDOR_START, b"\x01")
        assert info.value.error_code == 0xFE  # a cycle is already running
        measurement = parse_bp(await next_value(measurements))
        pressures: list[Decimal] = []
        while not cuff.empty():
            packet = cuff.get_nowait()
            assert packet[0] == 0x00
            assert packet[3:] == bytes.fromhex("ff07ff07")  # diastolic, MAP: NaN
            pressure = SFloat.from_bytes(packet[1:3]).decimal
            assert pressure is not None
            pressures.append(pressure)
        for value, code in ((b"\x02", 0x80), (b"\x01\x01", 0x0D)):
            with pytest.raises(ATT_Error) as info:
                await link.write(VENDOR_START, value)
            assert info.value.error_code == code
        racp = await link.subscribe(0x2A52, indicate=True)
        await link.write(0x2A52, b"\x04\x01")
        count = await next_value(racp)
    assert len(pressures) == 5  # 0.5 s cycle, 0.1 s updates
    assert pressures[0] == 0
    systolic = measurement["values"][0].decimal
    assert max(pressures) > systolic
    assert measurement["time"] >= dt.datetime(2000, 1, 1, 4)  # noqa: DTZ001 - after boot
    assert count == bytes.fromhex("05000400")  # the new measurement was stored
    assert sensor.stats.on_demand == 1
    assert sensor.stats.measurements == 1


async def test_bp_periodic_measurements() -> None:
    overrides = {**FAST, "bp.interval_s": 0.3, "bp.cycle_s": 0.1, "bp.cuff_update_s": 0.05}
    async with running(("bp",), overrides=overrides) as (sim, central):
        link = await central.connect(sim.sensors["bp"].address)
        measurements = await link.subscribe(ch.BP_MEASUREMENT, indicate=True)
        first = parse_bp(await next_value(measurements))
        second = parse_bp(await next_value(measurements))
        sensor = sim.sensors["bp"]
    assert isinstance(sensor, BpSensor)
    assert first["time"] <= second["time"]  # Date Time resolves seconds only
    assert first != second
    assert sensor.stats.measurements >= 2
    assert len(sensor.records) == 3 + sensor.stats.measurements


# -- Thermometer ---------------------------------------------------------------------------------
async def test_thermometer() -> None:
    async with running(("thermo",), scenario="fever") as (sim, central):
        link = await central.connect(sim.sensors["thermo"].address)
        assert await link.read(ch.TEMPERATURE_TYPE) == b"\x01"
        assert await link.read(ch.MEASUREMENT_INTERVAL) == b"\x01\x00"  # 0.3 s rounds to 1 s
        intermediate = await link.subscribe(ch.INTERMEDIATE_TEMPERATURE)
        finals = await link.subscribe(ch.TEMPERATURE_MEASUREMENT, indicate=True)
        periodic = await next_value(finals)
        await link.write(VENDOR_START, b"\x01")
        on_demand = await next_value(finals)
        middle = await next_value(intermediate)
    for raw in (periodic, on_demand):
        assert (raw[0], len(raw)) == (0x02, 12)  # Celsius, timestamp, no type field
        value = Float.from_bytes(raw[1:5])
        assert value.exponent == -2
        assert value.decimal is not None
        assert 37.0 < value.decimal < 39.0
        assert date_time(raw[5:12]) >= dt.datetime(2000, 1, 1, 4)  # noqa: DTZ001
    assert (middle[0], len(middle)) == (0x00, 5)
    assert sim.sensors["thermo"].stats.on_demand == 1


# -- Pulse oximeter and the device clock ---------------------------------------------------------
async def test_spo2_continuous_spot_check_and_current_time() -> None:
    async with running(("spo2",), scenario="hypoxia") as (sim, central):
        sensor = sim.sensors["spo2"]
        link = await central.connect(sensor.address)
        assert await link.read(ch.PLX_FEATURES) == b"\x48\x00"
        continuous = await link.subscribe(ch.PLX_CONTINUOUS)
        spot = await link.subscribe(ch.PLX_SPOT_CHECK, indicate=True)
        packet = await next_value(continuous)
        before = await link.read(ch.CURRENT_TIME)
        await link.write(VENDOR_START, b"\x01")
        unset = await next_value(spot)
        written = dt.datetime(2025, 6, 1, 8, 30, 0)  # noqa: DTZ001 - CTS is local time
        await link.write(ch.CURRENT_TIME, ch.current_time(written, ch.ADJUST_REASON_MANUAL))
        after = await link.read(ch.CURRENT_TIME)
        await link.write(VENDOR_START, b"\x01")
        set_ = await next_value(spot)
        for bad, code in ((b"\x00" * 9, 0x0D), (bytes.fromhex("e807000a0c1e2d078001"), 0xFF)):
            with pytest.raises(ATT_Error) as info:
                await link.write(ch.CURRENT_TIME, bad)
            assert info.value.error_code == code
    assert (packet[0], len(packet)) == (0x10, 7)  # SpO2, PR, PAI
    spo2, pulse = SFloat.from_bytes(packet[1:3]).decimal, SFloat.from_bytes(packet[3:5]).decimal
    assert spo2 is not None
    assert 90 <= spo2 <= 100
    assert pulse is not None
    assert 70 <= pulse <= 100
    before_time, _ = ch.parse_current_time(before)
    assert before_time.date() == dt.date(2000, 1, 1)
    after_time, reason = ch.parse_current_time(after)
    assert reason == ch.ADJUST_REASON_MANUAL
    assert dt.timedelta(0) <= after_time - written < dt.timedelta(seconds=TIMEOUT_S)
    assert unset[0] == 0x19  # timestamp, PAI, device clock not set
    assert date_time(unset[5:12]).date() == dt.date(2000, 1, 1)
    assert set_[0] == 0x09  # the flag is gone once the clock is set
    stamp = date_time(set_[5:12])
    assert dt.timedelta(0) <= stamp - written < dt.timedelta(seconds=TIMEOUT_S)
    assert sensor.stats.clock_writes == 1


async def test_spo2_pleth_waveform() -> None:
    overrides = {**FAST, "spo2.pleth": True}
    async with running(("spo2",), overrides=overrides) as (sim, central):
        sensor = sim.sensors["spo2"]
        seen = await central.scan({sensor.address})
        data = seen[sensor.address].data
        assert data.get(data.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS) == [
            uuid(0x1822),
            uuid(0x1840),
        ]
        link = await central.connect(sensor.address)
        responses = await link.subscribe(0x2BF4, indicate=True)
        segments = await link.subscribe(0x2B8B)
        await link.write(0x2BF4, b"\x01")
        await next_value(responses)
        parsed = parse_sample_array((await reassemble(segments, 247))[0])
    assert parsed["type"] == 150452  # MDC_PULS_OXIM_PLETH
    assert parsed["unit"] == 512
    assert parsed["period"] == Float(2, -2)  # 50 Hz
    assert len(parsed["samples"]) == 10  # 0.2 s


# -- links: sensor-side and central-side disconnects, host reset ---------------------------------
async def test_sensor_disconnect_and_reconnect() -> None:
    async with running(("thermo",)) as (sim, central):
        sensor = sim.sensors["thermo"]
        link = await central.connect(sensor.address)
        assert sensor.connected
        assert await sensor.disconnect()
        async with asyncio.timeout(TIMEOUT_S):
            await link.disconnected.wait()
        assert not await sensor.disconnect()  # nothing left to drop
        await central.scan({sensor.address})  # advertising again
        link = await central.connect(sensor.address)
        await link.connection.disconnect()
        async with asyncio.timeout(TIMEOUT_S):
            await link.disconnected.wait()
    stats = sensor.stats
    assert (stats.connections, stats.disconnects, stats.remote_disconnects) == (2, 1, 1)


async def test_host_reset_drops_links_like_a_real_controller() -> None:
    async with running(("ecg",)) as (sim, central):
        sensor = sim.sensors["ecg"]
        link = await central.connect(sensor.address)
        hci = await sim.attach_host()
        # A restarting gateway resets its controller first: the reset drops the old links, and
        # the sensor advertises again for whoever comes next.
        old = central.device
        restarted = Central(hci, "F0:00:00:00:00:02")
        await restarted.device.power_on()
        await old.host.reset()
        async with asyncio.timeout(TIMEOUT_S):
            await link.disconnected.wait()
        await restarted.scan({sensor.address})
        await (await restarted.connect(sensor.address)).connection.disconnect()
        await restarted.device.power_off()
    assert sensor.stats.remote_disconnects == 2


# -- faults ----------------------------------------------------------------------------------------
async def test_faults_scenario_counts_what_it_injects() -> None:
    overrides = {
        **FAST,
        "spo2.interval_s": 0.05,
        "faults.disconnect_every_s": 3.0,
        "faults.advertising_pause_s": 0.3,
        "faults.burst_every_s": 0.5,
        "faults.burst_size": 4,
        "faults.battery_start": 16,
        "faults.battery_drain_per_min": 120,  # 2 % per second: 14 % after 1 s
    }
    async with running(("spo2",), scenario="faults", overrides=overrides) as (sim, central):
        sensor = sim.sensors["spo2"]
        link = await central.connect(sensor.address)
        battery = await link.subscribe(ch.BATTERY_LEVEL)
        packets: list[bytes] = []
        continuous = await link.subscribe(ch.PLX_CONTINUOUS)
        async with asyncio.timeout(TIMEOUT_S):
            await link.disconnected.wait()  # the sensor drops the link after 3 s
        while not continuous.empty():
            packets.append(continuous.get_nowait())
        levels = [b[0] for b in [battery.get_nowait() for _ in range(battery.qsize())]]
        stats = sensor.stats.snapshot()
        await central.scan({sensor.address})  # it comes back after its advertising pause

    def kind(packet: bytes) -> str:
        if len(packet) == 6:
            return "truncated"
        if packet[0] & 0x01:
            return "wrong_flags"
        if packet[1:3] == b"\xff\x07":
            return "nan_values"
        if packet[3:5] == b"\x00\x08":
            return "nres_values"
        assert (packet[0], len(packet)) == (0x10, 7)
        return "clean"

    kinds = [kind(p) for p in packets]
    for fault in ("truncated", "wrong_flags", "nan_values", "nres_values"):
        assert kinds.count(fault) == stats[fault] > 0, fault
    assert len(packets) + len(levels) == stats["notifications"]
    assert stats["bursts"] >= 1
    assert stats["burst_notifications"] == 4 * stats["bursts"]
    assert (stats["disconnects"], stats["advertising_pauses"]) == (1, 1)
    assert levels
    assert min(levels) < 15
    assert stats["low_battery"] == 1
    assert sensor.battery < 15
    # The wrong-flag and NaN packets are what a gateway must reject or flag.
    assert SFloat.from_bytes(b"\xff\x07") == SFloat.of(Special.NAN)


# -- API edges -----------------------------------------------------------------------------------
def test_unknown_kinds_are_rejected_and_repeated_kinds_become_instances() -> None:
    with pytest.raises(ValueError, match="unknown sensor kind"):
        Simulator(["ecg", "scale"])
    assert Simulator(["ecg", "ecg"]).keys == ("ecg", "ecg-2")  # tests/test_sim_many.py


async def test_overrides_on_a_scenario_object_and_clean_exit_without_hosts() -> None:
    async with Simulator(["thermo"], scenario="normal") as first:
        scenario = first.scenario
    async with Simulator(["thermo"], scenario, overrides={"thermo.interval_s": 9}) as sim:
        assert sim.scenario.thermo.interval_s == 9
        assert sim.sensors["thermo"].stats.snapshot()["connections"] == 0
    assert tasks_left() == []


def test_addresses_are_deterministic_random_static() -> None:
    assert sensor_address(7, "bp") == sensor_address(7, "bp")
    assert sensor_address(7, "bp") != sensor_address(8, "bp")
    assert all(int(sensor_address(s, "ecg")[:2], 16) >= 0xC0 for s in range(50))
